"""Who is calling: ``Authorization: Bearer <api key>`` → the key's `Principal`, through the gate.

The key's owner is looked up in the key store, then the system's own gate authenticates the key as
that principal, exactly as it does for a run: revoked and expired keys are refused with the
gate's message, and every decision, refusal included, goes into the audit log (each HTTP request
is audited under a request id ``http_…``, in the run-id field). A key whose owner is unknown is
refused by the gate too, so that the refusal is audited like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.gate.interface import PermissionsGate
from bastion.gate.keys import KeyStore
from bastion.messages import AgentRequest, Principal, new_id

#: The role that may see every run, the usage of everyone and the audit log.
ADMIN_ROLE = "admin"


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    """An authenticated caller: its principal and the key it used (runs act with it)."""

    principal: Principal
    api_key: str

    @property
    def is_admin(self) -> bool:
        """Whether the caller has the admin role."""
        return ADMIN_ROLE in self.principal.roles


class Authenticator:
    """Turns an API key into the caller it belongs to.

    Args:
        gate: the system's Permissions Gate (authenticates and audits).
        keys: the key store, to find the key's owner.
    """

    def __init__(self, *, gate: PermissionsGate, keys: KeyStore) -> None:
        self._gate = gate
        self._keys = keys

    async def authenticate(self, key: str) -> Caller:
        """The caller holding `key`.

        Raises:
            NotAuthenticated: a malformed, unknown, revoked or expired key, or a key whose
                principal is gone (answered as a 401).
        """
        owner = await self._keys.owner(key)
        request = AgentRequest(
            user_id=owner or "unknown",
            session_id="http",
            message="authenticate an HTTP request",
            run_id=new_id("http"),
            api_key=key,
        )
        # NotAuthenticated propagates: the error handlers answer it as a 401.
        principal = await self._gate.authenticate(request)
        return Caller(principal=principal, api_key=key)
