"""`Inbox`: messages to a run from outside it (an operator's decision, later approvals).

A run that must wait for a person asks its inbox; with durable execution the wait is a DBOS
``recv`` that survives restarts and costs no thread. Without it there is no inbox, and the flow
ends the run instead of waiting (nothing would deliver the answer).
"""

from __future__ import annotations

from typing import Protocol

from bastion.messages import JsonObject


class Inbox(Protocol):
    """Receives messages sent to the current run."""

    async def receive(self, topic: str, *, timeout_s: float) -> JsonObject | None:
        """The next message on `topic`, or None once `timeout_s` passed without one."""
        ...
