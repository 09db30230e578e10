"""`CachingSandbox`: a read-only tool that is down answers with its last good result, marked cached.

Graceful degradation for tools: for a tool without side effects (reading it twice changes
nothing), the last successful result of each call (same tool, same caller, same args) is kept for
``ttl_s``. When the tool is down (its breaker is open, the call timed out, crashed or failed
transiently) and such a result exists, it is returned as a success whose `ToolOutcome.cached_age_s`
says how old it is; the step and the answer then say so (`bastion.flow.respond`). A tool with side
effects is never served from the cache: its result stands for an action, not a fact.

The cache key holds the caller's id: one user's "my orders" must never be shown to another. It is
bounded (least recently used out) and in process: a cached result is a per-worker convenience, not
state to share.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import OrderedDict

from bastion.clock import Clock
from bastion.messages import Json, Principal, ToolCall, ToolErrorKind, ToolOutcome
from bastion.router.interface import ToolSpec
from bastion.sandbox.interface import ExecutionSandbox

logger = logging.getLogger(__name__)

#: Failures that mean the tool is down, not that the call was wrong.
DOWN = frozenset(
    {
        ToolErrorKind.CIRCUIT_OPEN,
        ToolErrorKind.TIMEOUT,
        ToolErrorKind.TRANSIENT,
        ToolErrorKind.CRASHED,
    }
)


def cacheable(spec: ToolSpec) -> bool:
    """Whether `spec`'s results may be served from the cache: it only reads."""
    return not spec.side_effects


class CachingSandbox(ExecutionSandbox):
    """Remembers read-only tools' results; serves them, marked, while the tool is down.

    Args:
        wrapped: The sandbox that runs the calls (usually the `BreakerSandbox`).
        clock: Ages the entries.
        ttl_s: The oldest result served.
        max_entries: Results kept at most (least recently used dropped first).
    """

    def __init__(
        self, wrapped: ExecutionSandbox, *, clock: Clock, ttl_s: float, max_entries: int = 1024
    ) -> None:
        self._wrapped = wrapped
        self._clock = clock
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, Json]] = OrderedDict()

    async def run(
        self, call: ToolCall, spec: ToolSpec, *, deadline: float, principal: Principal
    ) -> ToolOutcome:
        outcome = await self._wrapped.run(call, spec, deadline=deadline, principal=principal)
        if not cacheable(spec) or self._max == 0:
            return outcome
        key = _key(spec.name, principal.id, call)
        if key is None:
            return outcome
        now = self._clock.monotonic()
        if outcome.ok:
            self._entries[key] = (now, outcome.value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
            return outcome
        if outcome.error_kind not in DOWN:
            return outcome
        entry = self._entries.get(key)
        if entry is None or now - entry[0] > self._ttl_s:
            return outcome
        age = now - entry[0]
        logger.warning(
            "tool %s is down (%s); serving its cached result from %.0fs ago",
            spec.name,
            outcome.error_kind,
            age,
        )
        return dataclasses.replace(
            ToolOutcome.success(entry[1], duration_s=outcome.duration_s), cached_age_s=age
        )

    async def aclose(self) -> None:
        """Close the wrapped sandbox, if it holds anything."""
        aclose = getattr(self._wrapped, "aclose", None)
        if aclose is not None:
            await aclose()


def _key(tool: str, user: str, call: ToolCall) -> str | None:
    try:
        args = json.dumps(call.args, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None  # args that are not plain JSON: not worth a guess at equality
    return f"{tool}\x00{user}\x00{args}"
