"""The Execution Sandbox's contract: run one tool call in isolation, and never raise."""

from __future__ import annotations

from typing import Protocol

from bastion.messages import Principal, ToolCall, ToolOutcome
from bastion.router.interface import ToolSpec


class ExecutionSandbox(Protocol):
    """Runs one tool call. Never raises: every failure comes back as a failed `ToolOutcome`.

    The call's args are already validated (`ToolSpec.validate_args`). The call must not outlive
    ``deadline`` (a value of the injected clock's `monotonic`), nor the tool's own ``timeout_s``.
    `asyncio.CancelledError` is the one exception that passes through.
    """

    async def run(
        self, call: ToolCall, spec: ToolSpec, *, deadline: float, principal: Principal
    ) -> ToolOutcome: ...
