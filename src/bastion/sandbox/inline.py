"""The inline tier: run a tool in this process, bounded by an asyncio timeout.

Async tools are awaited on the event loop; sync tools run in a worker thread (`asyncio.to_thread`)
so that a blocking tool never stalls other runs. Both are bounded by ``asyncio.timeout``.

The limit of this tier, stated plainly: a *sync* tool that overruns cannot be stopped. Python has
no way to kill a thread, so the call is abandoned (the run gets a TIMEOUT outcome at once) while
its thread keeps running until the tool returns by itself, holding a worker of the default thread
pool; each such leak is logged as a warning. An async tool that ignores cancellation can likewise
run late. The ``process`` tier (a later issue) runs tools in a child process that is killed at
the deadline; until then, give blocking tools their own timeouts (socket, database) as well.

Also here, because every tier will share them: how a tool's value or exception becomes a
`ToolOutcome`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from pydantic_core import PydanticSerializationError, to_jsonable_python

from bastion.clock import Clock
from bastion.errors import TransientToolError
from bastion.messages import ToolCall, ToolErrorKind, ToolOutcome
from bastion.router.interface import ToolSpec

logger = logging.getLogger(__name__)

#: Longest error text an outcome carries: it is shown to the planner, so it must stay short.
MAX_ERROR_CHARS = 500


class _TimedOut(Exception):
    """Our own timeout fired (as opposed to a `TimeoutError` the tool raised itself)."""


async def run_inline(
    call: ToolCall, spec: ToolSpec, kwargs: dict[str, Any], *, limit_s: float, clock: Clock
) -> ToolOutcome:
    """Call ``spec.fn(**kwargs)`` for at most `limit_s` seconds; never raises but cancellation.

    Args:
        call: The call being run (for logs).
        spec: The tool.
        kwargs: Validated keyword arguments, the `ToolContext` included if the tool takes one.
        limit_s: Seconds the call may take (positive).
        clock: Measures the outcome's ``duration_s``.

    Returns:
        Success with the value made JSON-safe; or TIMEOUT, TRANSIENT (a `TransientToolError`)
        or TOOL_ERROR (any other exception, or a value that cannot be made JSON-safe).
    """
    started = clock.monotonic()
    try:
        if spec.is_async:
            raw = await _await_tool(spec, kwargs, limit_s)
        else:
            raw = await _thread_tool(call, spec, kwargs, limit_s)
    except _TimedOut:
        return ToolOutcome.failure(
            ToolErrorKind.TIMEOUT,
            f"tool {spec.name!r} timed out after {round(limit_s, 3)}s",
            duration_s=clock.monotonic() - started,
            transient=True,
        )
    except TransientToolError as exc:
        logger.info("tool %r failed transiently (run %s): %s", spec.name, call.run_id, exc)
        return ToolOutcome.failure(
            ToolErrorKind.TRANSIENT,
            describe_exception(exc),
            duration_s=clock.monotonic() - started,
            transient=True,
        )
    except Exception as exc:
        logger.warning(
            "tool %r raised (run %s, step %d)", spec.name, call.run_id, call.step_id, exc_info=exc
        )
        return ToolOutcome.failure(
            ToolErrorKind.TOOL_ERROR,
            describe_exception(exc),
            duration_s=clock.monotonic() - started,
        )
    return outcome_from_value(spec, raw, duration_s=clock.monotonic() - started)


def outcome_from_value(spec: ToolSpec, raw: Any, *, duration_s: float) -> ToolOutcome:
    """A success carrying `raw` as JSON-safe data, or TOOL_ERROR if it cannot be made so.

    pydantic models and dataclasses become dicts, `Decimal` a string, datetimes ISO strings.
    """
    try:
        value = to_jsonable_python(raw)
    except (PydanticSerializationError, ValueError, TypeError) as exc:
        return ToolOutcome.failure(
            ToolErrorKind.TOOL_ERROR,
            _truncate(
                f"tool {spec.name!r} returned a {type(raw).__name__} that cannot be turned into "
                f"JSON ({exc}); return JSON data, a dataclass or a pydantic model"
            ),
            duration_s=duration_s,
        )
    return ToolOutcome.success(value, duration_s=duration_s)


def describe_exception(exc: BaseException) -> str:
    """``"ValueError: message"``, cut to `MAX_ERROR_CHARS`."""
    return _truncate(f"{type(exc).__name__}: {exc}")


def _truncate(text: str) -> str:
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return text[: MAX_ERROR_CHARS - 1] + "…"


async def _await_tool(spec: ToolSpec, kwargs: dict[str, Any], limit_s: float) -> Any:
    timeout = asyncio.timeout(limit_s)
    try:
        async with timeout:
            return await spec.fn(**kwargs)
    except TimeoutError:
        if timeout.expired():
            raise _TimedOut from None
        raise


async def _thread_tool(
    call: ToolCall, spec: ToolSpec, kwargs: dict[str, Any], limit_s: float
) -> Any:
    threads: list[str] = []

    def target() -> Any:
        threads.append(threading.current_thread().name)
        return spec.fn(**kwargs)

    timeout = asyncio.timeout(limit_s)
    try:
        async with timeout:
            return await asyncio.to_thread(target)
    except TimeoutError:
        if not timeout.expired():
            raise
        if threads:
            logger.warning(
                "tool %r timed out after %ss (run %s, step %d); its thread %r cannot be stopped "
                "and keeps running until the tool returns (a leaked thread of the default pool)",
                spec.name,
                round(limit_s, 3),
                call.run_id,
                call.step_id,
                threads[0],
            )
        else:
            logger.warning(
                "tool %r timed out after %ss (run %s, step %d) before a worker thread was free "
                "to run it; the default thread pool is busy, possibly with leaked tool threads",
                spec.name,
                round(limit_s, 3),
                call.run_id,
                call.step_id,
            )
        raise _TimedOut from None
