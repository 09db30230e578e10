"""`Inbox`: messages to a run from outside it (an operator's decision, an approval's).

A run that must wait for a person asks its inbox; with durable execution the wait is a DBOS
``recv`` that survives restarts and costs no thread. Without it, `LocalInbox` holds messages in
process: an approval decided through the same `AgentSystem` wakes its run.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from bastion.messages import JsonObject


class Inbox(Protocol):
    """Receives messages sent to the current run."""

    async def receive(self, topic: str, *, timeout_s: float) -> JsonObject | None:
        """The next message on `topic`, or None once `timeout_s` passed without one."""
        ...


class LocalInbox(Inbox):
    """An in-process inbox (runs without durable execution): messages by topic, held until taken.

    Topics must be unique to a run (e.g. ``approval:<id>``): this inbox does not know which run
    is asking. A message delivered before anyone waits is kept for the first receiver.
    """

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[JsonObject]] = {}

    def _queue(self, topic: str) -> asyncio.Queue[JsonObject]:
        return self._queues.setdefault(topic, asyncio.Queue())

    def deliver(self, topic: str, message: JsonObject) -> None:
        """Hand `message` to whoever waits (or will wait) on `topic`."""
        self._queue(topic).put_nowait(message)

    async def receive(self, topic: str, *, timeout_s: float) -> JsonObject | None:
        queue = self._queue(topic)
        try:
            if not queue.empty():
                return queue.get_nowait()
            # A real timeout: the wait is for a person, not for the run's (injected) clock.
            return await asyncio.wait_for(queue.get(), timeout=max(0.0, timeout_s))
        except TimeoutError:
            return None
        finally:
            if queue.empty():
                self._queues.pop(topic, None)
