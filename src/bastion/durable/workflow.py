"""The one DBOS workflow: a Bastion run. Registered once per process, at import.

DBOS finds workflows by name, in a process-wide registry, and may start one at any time (a
recovered run at launch, a queued run on a worker), so the workflow body must find the run's
`AgentSystem` without being handed it: the system *attaches* its runner here when it starts, and
detaches it when it closes. One durable system per process, as DBOS allows one instance per
process (`DurableEngine` refuses a second).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
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


@DBOS.workflow(name=WORKFLOW_NAME)
async def run_workflow(payload: dict[str, Any]) -> dict[str, Any]:
    """The durable run: decode the request, run it on the attached system, encode the answer."""
    runner, journal = _runner, _journal
    if runner is None or journal is None:
        # Only a process that started DBOS without a system can get here: a bug, said plainly.
        raise ConfigError("a Bastion run was started in a process with no AgentSystem attached")
    request, deadline_at, principal = codec.decode_run_input(payload)
    execution = Execution(
        run_id=request.run_id,
        token=new_execution_token(),
        journal=journal,
        recorded=await journal.load(request.run_id),
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
    return _redact(codec.dump(codec.RESPONSE, response))  # type: ignore[no-any-return]
