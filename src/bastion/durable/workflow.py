"""The one DBOS workflow: a Bastion run. Registered once per process, at import.

DBOS finds workflows by name, in a process-wide registry, and may start one at any time (a
recovered run at launch, a queued run on a worker), so the workflow body must find the run's
`AgentSystem` without being handed it: the system *attaches* its runner here when it starts, and
detaches it when it closes. One durable system per process, as DBOS allows one instance per
process (`DurableEngine` refuses a second).

Two things spare a run started here (`DurableEngine.run`) fixed costs a recovered one pays:

* **A fresh run reads no journal.** `starting` marks the run the caller is about to start; DBOS
  runs the body from that call only when the call inserted the workflow's record (DBOS 3:
  ``should_execute`` holds only for the caller that created the row; a run id DBOS already
  knows is attached to instead), so no execution of it ran before and its journal is empty.
  Should one exist anyway (a run id reused after DBOS's system database was reset), the run's
  first checkpoint meets the old one and stops it with `RunTakenOver` before it acts on
  anything. A body DBOS runs any other way (recovery, the queue, `resume`) reads its journal.
* **The caller has its answer once the run's records are committed** (`answer`), not after
  DBOS has also recorded the workflow's end in its own transaction: by then every checkpoint
  and the run's own record of its end are committed, so a crash before DBOS's record only
  means the run is recovered and replays to the same end, running no step again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

from dbos import DBOS

from bastion.durable import codec
from bastion.durable.journal import Journal
from bastion.durable.steps import AUTHENTICATED, Execution, new_execution_token
from bastion.errors import ConfigError
from bastion.flow.state import EventSink
from bastion.messages import AgentRequest, AgentResponse

#: The workflow's registered name: part of every checkpoint, so never renamed.
WORKFLOW_NAME = "bastion.run"

#: Runs a request to its end, inside the workflow.
Runner = Callable[[AgentRequest, datetime, EventSink | None], Awaitable[AgentResponse]]

_runner: Runner | None = None
#: The journal of the attached system's database, where the runs' steps are checkpointed.
_journal: Journal | None = None


def _unchanged(value: Any) -> Any:
    return value


#: Applied to a run's response before DBOS stores it (the redactor: no secret in its plan's args).
_redact: Callable[[Any], Any] = _unchanged
#: Live progress sinks of runs started by this process, taken by the run when it begins.
_sinks: dict[str, EventSink] = {}
#: The task running each workflow body in this process, so that a cancelled run stops now.
_tasks: dict[str, asyncio.Task[Any]] = {}
#: The run the caller is starting (`starting`): a body that sees its own id here is fresh.
_STARTING = contextvars.ContextVar[str | None]("bastion_starting_run", default=None)
#: Callers waiting for a run's answer (`answer`), by run id.
_answers: dict[str, asyncio.Future[Any]] = {}


def attach(runner: Runner, journal: Journal, *, redact: Callable[[Any], Any] | None = None) -> None:
    """Make `runner` the one that runs every workflow of this process, journaling in `journal`.

    Args:
        runner: runs a request to its end.
        journal: where the runs' steps are checkpointed.
        redact: applied to each run's response (JSON data) before DBOS stores it as the
            workflow's output; whoever waits for the run gets it so.

    Raises:
        ConfigError: another system is attached (one durable system per process).
    """
    global _runner, _journal, _redact
    if _runner is not None and _runner != runner:
        raise ConfigError(
            "another durable AgentSystem is running in this process: close it first "
            "(DBOS allows one per process)"
        )
    _runner, _journal = runner, journal
    _redact = redact or _unchanged


def detach(runner: Runner) -> None:
    """Undo `attach` (a no-op if another runner is attached)."""
    global _runner, _journal, _redact
    if _runner == runner:
        _runner, _journal, _redact = None, None, _unchanged
        _sinks.clear()


def running_task(run_id: str) -> asyncio.Task[Any] | None:
    """The task running the run's workflow body in this process, if it runs here."""
    return _tasks.get(run_id)


def add_sink(run_id: str, sink: EventSink) -> None:
    """Hand live progress of a run this process is about to start to that run."""
    _sinks[run_id] = sink


def drop_sink(run_id: str) -> None:
    """Forget a sink the run never took (the run was already finished, or failed to start)."""
    _sinks.pop(run_id, None)


@contextlib.contextmanager
def starting(run_id: str) -> Iterator[None]:
    """Mark `run_id` as the run the caller starts: a body DBOS runs from here is fresh."""
    token = _STARTING.set(run_id)
    try:
        yield
    finally:
        _STARTING.reset(token)


def answer(run_id: str) -> asyncio.Future[Any]:
    """A future that gets the run's (redacted) answer when a body running here has one.

    It gets it once the run's checkpoints and records are committed, before DBOS records the
    workflow's end. Call `forget_answer` when done with it.
    """
    future = _answers[run_id] = asyncio.get_running_loop().create_future()
    return future


def forget_answer(run_id: str, future: asyncio.Future[Any]) -> None:
    """Stop waiting for the run's answer through `future`."""
    if _answers.get(run_id) is future:
        del _answers[run_id]


@DBOS.workflow(name=WORKFLOW_NAME)
async def run_workflow(payload: dict[str, Any]) -> dict[str, Any]:
    """The durable run: decode the request, run it on the attached system, encode the answer."""
    runner, journal = _runner, _journal
    if runner is None or journal is None:
        # Only a process that started DBOS without a system can get here: a bug, said plainly.
        raise ConfigError("a Bastion run was started in a process with no AgentSystem attached")
    request, deadline_at, principal = codec.decode_run_input(payload)
    fresh = _STARTING.get() == request.run_id  # see the module docs
    execution = Execution(
        run_id=request.run_id,
        token=new_execution_token(),
        journal=journal,
        recorded={} if fresh else await journal.load(request.run_id),
    )
    deactivate = execution.activate()
    known = AUTHENTICATED.set(principal)
    task = asyncio.current_task()
    if task is not None:
        _tasks[request.run_id] = task
    try:
        response = await runner(request, deadline_at, _sinks.pop(request.run_id, None))
        # The run's last write carried its checkpoints; any left (a step after it) commit now,
        # before DBOS records the run as finished.
        await execution.flush()
    finally:
        deactivate()
        AUTHENTICATED.reset(known)
        _tasks.pop(request.run_id, None)
    data = _redact(codec.dump(codec.RESPONSE, response))
    waiting = _answers.pop(request.run_id, None)
    if waiting is not None and not waiting.done():
        waiting.set_result(data)
    return data  # type: ignore[no-any-return]
