"""Runs started by this server, and their events as they happen.

`RunHub` owns the runs: each is a task in the hub's `asyncio.TaskGroup` (entered in the app's
lifespan), so no run outlives the server unowned, and cancelling a run is cancelling its task
(`AgentSystem.run` then checkpoints it ``cancelled``, once). Live events fan out to subscribers
(the SSE streams, a create waiting for its run to be recorded) through unbounded queues: the run's
event sink must never block, and a slow reader only grows its own queue.

`stream_events` gives every event of a run in ``seq`` order, once, from a given point: first the
stored ones, then live ones, filling any gap from the store (an event is handed to the sink a
moment before it is stored). Runs started by another process show up by polling the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType

from bastion.memory.interface import RunRecord
from bastion.messages import AgentRequest, AgentResponse, EventKind, RunEvent, RunStatus
from bastion.server.telemetry import current_run_id
from bastion.system import AgentSystem

logger = logging.getLogger("bastion.server")

#: A message on a subscriber's queue: an event, or None once the run's task has ended here.
_Item = RunEvent | None


class RunHub:
    """Starts, tracks and cancels this server's runs; publishes their events."""

    def __init__(self, system: AgentSystem) -> None:
        self._system = system
        self._tasks: dict[str, asyncio.Task[AgentResponse]] = {}
        self._subscribers: dict[str, set[asyncio.Queue[_Item]]] = {}
        self._everything: set[asyncio.Queue[RunEvent]] = set()
        #: The events so far of each run under way here: a run flushes its events to the store
        #: at checkpoints, so a step under way has events only this process knows yet.
        self._recent: dict[str, list[RunEvent]] = {}
        #: Who each run under way here acts for (the dashboard's live feed filters by it).
        self.owners: dict[str, str] = {}
        self._group: asyncio.TaskGroup | None = None
        #: Also called with every event of this server's runs (metrics, traces); must not block.
        self.observers: list[Callable[[RunEvent], None]] = []

    async def __aenter__(self) -> RunHub:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        if self._system.durable is not None:
            # Shutting down is not cancelling: durable runs are left to be recovered (by the
            # next start, or another worker); only this process's waits on them end.
            self._system.durable.stopping = True
        for task in list(self._tasks.values()):
            task.cancel()
        await self._group.__aexit__(exc_type, exc, tb)
        self._group = None

    def running(self, run_id: str) -> asyncio.Task[AgentResponse] | None:
        """The task of a run under way in this process, if any."""
        return self._tasks.get(run_id)

    @property
    def active(self) -> int:
        """How many runs are under way here."""
        return len(self._tasks)

    async def start(self, request: AgentRequest) -> asyncio.Task[AgentResponse]:
        """Start `request` (or find it already under way) and return once it is recorded.

        Returns when the run's first event is out (its row then exists, so that a client may
        read it at once) or when its task ended without one (it could not be recorded).
        """
        if self._group is None:
            raise RuntimeError("the run hub is not started (use it in 'async with')")
        existing = self._tasks.get(request.run_id)
        if existing is not None:
            return existing
        with self.subscribe(request.run_id) as queue:
            task = self._group.create_task(self._run(request), name=f"run:{request.run_id}")
            self._tasks[request.run_id] = task
            self.owners[request.run_id] = request.user_id
            await queue.get()
        return task

    async def _run(self, request: AgentRequest) -> AgentResponse:
        current_run_id.set(request.run_id)  # this task's log lines name the run
        try:
            response = await self._system.run(request, on_event=self.publish)
        finally:
            self._tasks.pop(request.run_id, None)
            self.owners.pop(request.run_id, None)
            self._recent.pop(request.run_id, None)
            for queue in self._subscribers.get(request.run_id, ()):
                queue.put_nowait(None)
        return response

    async def cancel(self, run_id: str) -> bool:
        """Cancel a run under way here and wait until it is checkpointed; False if none is."""
        task = self._tasks.get(run_id)
        if task is None:
            return False
        task.cancel()
        await asyncio.wait([task])
        return True

    def publish(self, event: RunEvent) -> None:
        """The runs' event sink: hand `event` to every subscriber of its run (never blocks)."""
        if event.run_id in self._tasks:
            self._recent.setdefault(event.run_id, []).append(event)
        for queue in self._subscribers.get(event.run_id, ()):
            queue.put_nowait(event)
        for everything in self._everything:
            everything.put_nowait(event)
        for observe in self.observers:
            try:
                observe(event)
            except Exception:
                # Metrics and traces must never break the run they watch.
                logger.exception("observer failed on %s event of run %s", event.kind, event.run_id)

    @contextlib.contextmanager
    def subscribe(self, run_id: str) -> Iterator[asyncio.Queue[_Item]]:
        """A queue receiving the run's events (those so far too, if it runs here), then None.

        None comes when the run's task ends in this process.
        """
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        for event in self._recent.get(run_id, ()):
            queue.put_nowait(event)
        self._subscribers.setdefault(run_id, set()).add(queue)
        try:
            yield queue
        finally:
            queues = self._subscribers.get(run_id)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._subscribers[run_id]

    @contextlib.contextmanager
    def subscribe_all(self) -> Iterator[asyncio.Queue[RunEvent]]:
        """A queue receiving every event of this server's runs from now on."""
        queue: asyncio.Queue[RunEvent] = asyncio.Queue()
        self._everything.add(queue)
        try:
            yield queue
        finally:
            self._everything.discard(queue)


def _is_end(event: RunEvent) -> bool:
    if event.kind is not EventKind.STATUS:
        return False
    try:
        return RunStatus(str(event.data.get("status"))).is_terminal
    except ValueError:
        return False


class _InOrder:
    """Puts events back in ``seq`` order, once each, from ``after + 1``."""

    def __init__(self, after: int) -> None:
        self.last = after
        self.ended = False
        self._ahead: dict[int, RunEvent] = {}

    def add(self, event: RunEvent) -> bool:
        """Keep `event`; whether it comes right after the last one handed out (no gap)."""
        if event.seq > self.last:
            self._ahead.setdefault(event.seq, event)
        return event.seq <= self.last + 1

    def ready(self) -> list[RunEvent]:
        """The events now in order, up to the run's terminal status event."""
        out = []
        while not self.ended and self.last + 1 in self._ahead:
            event = self._ahead.pop(self.last + 1)
            self.last = event.seq
            self.ended = _is_end(event)
            out.append(event)
        return out


async def stream_events(
    run_id: str,
    *,
    after: int,
    hub: RunHub,
    load: Callable[[str], Awaitable[RunRecord | None]],
    poll_s: float,
) -> AsyncIterator[RunEvent]:
    """Every event of the run with ``seq > after``, in order, until its terminal status event.

    Args:
        run_id: the run (the caller has checked it may see it).
        after: the last ``seq`` the client has (``Last-Event-ID``), 0 for all.
        hub: where live events come from.
        load: reads the run from the store (with its events).
        poll_s: how often to look at the store when no live event comes (runs of other
            processes, or a gap to fill).
    """
    order = _InOrder(after)
    with hub.subscribe(run_id) as queue:
        while not order.ended:
            record = await load(run_id)
            if record is None:
                return
            for event in record.events:
                order.add(event)
            for event in order.ready():
                yield event
            # Live events until a gap shows, the run's task ends, or nothing comes for a while:
            # then the store again.
            while not order.ended:
                try:
                    item = await asyncio.wait_for(queue.get(), poll_s)
                except TimeoutError:
                    break
                if item is None or not order.add(item):
                    break
                for event in order.ready():
                    yield event
