"""An app whose tools carry a canary secret in their args, their result and their error.

The canaries come from the environment (the test makes fresh ones): ``CANARY_TOKEN`` looks like
a provider key (``sk-...``), ``CANARY_IBAN`` has no secret shape at all and is only ever passed in
the field ``iban``, which the test declares secret (``BASTION_GATE__SECRET_FIELDS``).
"""

from __future__ import annotations

import os

from bastion.messages import Principal
from bastion.router.registry import tool
from bastion.settings import Settings
from bastion.system import AgentSystem


@tool(permissions=("notes",))
def remember(note: str, iban: str) -> dict[str, str]:
    """Keep a note and a bank account.

    Args:
        note: What to remember.
        iban: The account.
    """
    return {"saved": f"kept: {note}", "iban": iban, "summary": f"account iban={iban}"}


@tool(permissions=("notes",))
def transfer(note: str, iban: str) -> str:
    """Send money to an account.

    Args:
        note: The transfer's reference.
        iban: The account.
    """
    raise ValueError(f"the bank refused reference {note!r} for iban={iban}")


def build(settings: Settings) -> AgentSystem:
    if not (os.environ.get("CANARY_TOKEN") and os.environ.get("CANARY_IBAN")):
        raise RuntimeError("set CANARY_TOKEN and CANARY_IBAN: the test makes fresh canaries")
    return AgentSystem.from_settings(
        settings,
        tools=[remember, transfer],
        principals=[Principal(id="alice", scopes=frozenset({"notes"}))],
    )
