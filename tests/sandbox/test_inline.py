from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal

import pytest

from bastion.messages import ToolCall, ToolErrorKind, ToolOutcome
from bastion.router.registry import make_tool
from bastion.sandbox.inline import (
    MAX_ERROR_CHARS,
    describe_exception,
    outcome_from_value,
    run_inline,
)
from bastion.testing.clock import FakeClock

CALL = ToolCall(run_id="run_9", step_id=1, tool_name="t", args={})


@dataclass
class Point:
    x: int
    price: Decimal


def noop() -> None:
    pass


SPEC = make_tool(noop, name="t")


def test_describe_exception_names_the_type() -> None:
    assert describe_exception(KeyError("order")) == "KeyError: 'order'"


def test_describe_exception_truncates_long_messages() -> None:
    text = describe_exception(RuntimeError("x" * 2000))

    assert len(text) == MAX_ERROR_CHARS == 500
    assert text.startswith("RuntimeError: xxx")
    assert text.endswith("…")


def test_outcome_from_value_converts_dataclasses_sets_and_decimals() -> None:
    outcome = outcome_from_value(SPEC, [Point(x=1, price=Decimal("0.10"))], duration_s=1.5)

    assert outcome == ToolOutcome.success([{"x": 1, "price": "0.10"}], duration_s=1.5)
    assert outcome_from_value(SPEC, frozenset({3}), duration_s=0).value == [3]


def test_outcome_from_value_refuses_unknown_objects() -> None:
    outcome = outcome_from_value(SPEC, object(), duration_s=0.25)

    assert outcome.ok is False
    assert outcome.error_kind is ToolErrorKind.TOOL_ERROR
    assert outcome.duration_s == 0.25
    assert outcome.error is not None
    assert outcome.error.startswith("tool 't' returned a object that cannot be turned into JSON")
    assert outcome.error.endswith("return JSON data, a dataclass or a pydantic model")


async def test_leaked_thread_is_named_in_the_warning(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()

    def block() -> None:
        release.wait(timeout=10)

    try:
        with caplog.at_level(logging.WARNING, logger="bastion.sandbox.inline"):
            outcome = await run_inline(CALL, make_tool(block), {}, limit_s=0.05, clock=FakeClock())
    finally:
        release.set()

    assert outcome.error_kind is ToolErrorKind.TIMEOUT
    [record] = [r for r in caplog.records if r.name == "bastion.sandbox.inline"]
    assert record.levelno == logging.WARNING
    assert "its thread 'asyncio_" in record.getMessage()
    assert "(run run_9, step 1)" in record.getMessage()


async def test_timeout_while_waiting_for_a_worker_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One worker, taken by a leaked tool: the next sync tool cannot even start.
    executor = ThreadPoolExecutor(max_workers=1)
    asyncio.get_running_loop().set_default_executor(executor)
    release = threading.Event()
    second_ran = threading.Event()

    def block() -> None:
        release.wait(timeout=10)

    def second() -> None:
        second_ran.set()

    try:
        await run_inline(CALL, make_tool(block), {}, limit_s=0.05, clock=FakeClock())
        with caplog.at_level(logging.WARNING, logger="bastion.sandbox.inline"):
            outcome = await run_inline(CALL, make_tool(second), {}, limit_s=0.05, clock=FakeClock())
    finally:
        release.set()
        executor.shutdown(wait=True)

    assert outcome.error_kind is ToolErrorKind.TIMEOUT
    assert "before a worker thread was free to run it" in caplog.text
    assert not second_ran.is_set()


async def test_async_spec_whose_function_is_not_async_is_a_tool_error() -> None:
    spec = dataclasses.replace(make_tool(noop), is_async=True)

    outcome = await run_inline(CALL, spec, {}, limit_s=1.0, clock=FakeClock())

    assert outcome.error_kind is ToolErrorKind.TOOL_ERROR
    assert outcome.error is not None
    assert outcome.error.startswith("TypeError:")
