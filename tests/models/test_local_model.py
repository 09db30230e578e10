"""`LocalChatModel` over a fake engine: the body it sends, the answers and failures it maps,
the bounded queue, cancellation, and engines shared per process."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bastion.errors import (
    ConfigError,
    ModelBadRequest,
    ModelRateLimited,
    ModelRefused,
    ModelUnavailable,
)
from bastion.models import local
from bastion.models.interface import ChatRequest, as_messages
from bastion.models.local import (
    ENGINE_ERROR_HANDLERS,
    EngineKey,
    InferenceWorker,
    LocalChatModel,
    ModelContextOverflow,
    SharedEngines,
    map_engine_error,
    open_local_model,
)
from bastion.testing.clock import FakeClock

SCHEMA = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 5}}}

#: Every ``error.type`` llama.cpp's server answers with (tools/server/server-common.h,
#: ``error_type``). A type added upstream must be decided on here and in ENGINE_ERROR_HANDLERS.
LLAMA_CPP_ERROR_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "server_error",
    "not_found_error",
    "permission_error",
    "unavailable_error",
    "not_supported_error",
    "exceed_context_size_error",
}


def completion(text: str = '{"a": "x"}', *, finish: str = "stop") -> dict[str, Any]:
    return {
        "choices": [
            {"finish_reason": finish, "index": 0, "message": {"role": "assistant", "content": text}}
        ],
        "usage": {"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38},
    }


class FakeInference:
    """Answers from a list (an exception is raised); records the bodies; can be held busy."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.bodies: list[Mapping[str, Any]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def hold(self) -> None:
        self.release.clear()

    def chat(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        self.bodies.append(body)
        self.niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        self.started.set()
        self.release.wait(timeout=10)
        answer = self.answers.pop(0) if self.answers else completion()
        if isinstance(answer, BaseException):
            raise answer
        return answer


class TickingClock(FakeClock):
    def monotonic(self) -> float:
        self.advance(0.5)
        return super().monotonic()


@pytest.fixture
def engines() -> Iterator[SharedEngines]:
    shared = SharedEngines()
    yield shared
    shared.close_all()


def make_model(
    engines: SharedEngines, fake: FakeInference, *, queue_bound: int = 4, name: str = "local:t"
) -> LocalChatModel:
    return open_local_model(
        name,
        path=Path("/models/t.gguf"),
        threads=1,
        context_size=2048,
        queue_bound=queue_bound,
        clock=TickingClock(),
        engines=engines,
        load=lambda key: fake,
    )


def request(**fields: Any) -> ChatRequest:
    return ChatRequest(messages=as_messages([("system", "plan"), ("user", "hi")]), **fields)


async def test_the_request_is_an_openai_body_with_the_schema_as_response_format(
    engines: SharedEngines,
) -> None:
    fake = FakeInference(completion(), completion())
    model = make_model(engines, fake)

    response = await model.complete(request(json_schema=SCHEMA, max_tokens=300))

    body = fake.bodies[-1]
    assert body == {
        "messages": [{"role": "system", "content": "plan"}, {"role": "user", "content": "hi"}],
        "max_tokens": 300,
        "temperature": 0.0,
        "cache_prompt": True,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "plan", "schema": SCHEMA},
        },
    }
    assert response.text == '{"a": "x"}'
    assert response.model == "local:t"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (31, 7)
    assert response.finish_reason == "stop"
    assert response.latency_s == 0.5


async def test_a_request_without_schema_sends_no_response_format(engines: SharedEngines) -> None:
    fake = FakeInference(completion(), completion("hello"))
    model = make_model(engines, fake)

    response = await model.complete(request())

    assert "response_format" not in fake.bodies[-1]
    assert response.text == "hello"


async def test_the_engine_is_warmed_up_once_when_loaded(engines: SharedEngines) -> None:
    fake = FakeInference(completion(), completion())
    model = make_model(engines, fake)
    make_model(engines, fake)
    await model.complete(request())

    assert len(fake.bodies) == 2
    warm = fake.bodies[0]
    assert warm["max_tokens"] == 1
    assert warm["response_format"]["type"] == "json_schema"


async def test_a_cut_answer_comes_back_with_finish_reason_length(engines: SharedEngines) -> None:
    model = make_model(
        engines, FakeInference(completion(), completion('{"a": "x', finish="length"))
    )

    response = await model.complete(request(json_schema=SCHEMA))

    assert response.finish_reason == "length"


async def test_missing_usage_counts_as_zero(engines: SharedEngines) -> None:
    answer = completion()
    answer["usage"] = {"prompt_tokens": "many"}
    model = make_model(engines, FakeInference(completion(), answer))

    response = await model.complete(request())

    assert (response.usage.input_tokens, response.usage.output_tokens) == (0, 0)


def test_every_llama_cpp_error_type_is_mapped_on_purpose() -> None:
    assert set(ENGINE_ERROR_HANDLERS) == LLAMA_CPP_ERROR_TYPES


@pytest.mark.parametrize(
    ("kind", "code", "expected"),
    [
        ("exceed_context_size_error", 400, ModelContextOverflow),
        ("invalid_request_error", 400, ModelBadRequest),
        ("not_supported_error", 501, ModelBadRequest),
        ("not_found_error", 404, ModelBadRequest),
        ("server_error", 500, ModelUnavailable),
        ("unavailable_error", 503, ModelUnavailable),
        ("authentication_error", 401, ModelRefused),
        ("permission_error", 403, ModelRefused),
        ("some_new_error", 422, ModelBadRequest),
        ("some_new_error", 500, ModelUnavailable),
        (None, None, ModelUnavailable),
    ],
)
async def test_engine_errors_become_model_errors(
    engines: SharedEngines, kind: str | None, code: int | None, expected: type[Exception]
) -> None:
    error = {"code": code, "message": "it went wrong", "type": kind}
    model = make_model(engines, FakeInference(completion(), {"error": error}))

    with pytest.raises(expected) as caught:
        await model.complete(request())

    assert type(caught.value) is expected
    assert "it went wrong" in str(caught.value)
    assert caught.value.model == "local:t"  # type: ignore[attr-defined]


async def test_a_context_overflow_is_clear_to_operator_and_user(engines: SharedEngines) -> None:
    error = {
        "code": 400,
        "message": "request (5030 tokens) exceeds the available context size (4096 tokens)",
        "type": "exceed_context_size_error",
    }
    model = make_model(engines, FakeInference(completion(), {"error": error}))

    with pytest.raises(ModelContextOverflow) as caught:
        await model.complete(request())

    assert "local.context_size" in str(caught.value)
    assert "5030 tokens" in str(caught.value)
    assert "too long" in caught.value.user_message
    assert not caught.value.transient


def test_an_error_that_is_not_an_object_is_still_mapped() -> None:
    mapped = map_engine_error("local:t", "boom")
    assert isinstance(mapped, ModelUnavailable)
    assert "boom" in str(mapped)


@pytest.mark.parametrize(
    ("raised", "expected", "fragment"),
    [
        (ValueError("JSON schema error at #: unrecognized type bogus"), ModelBadRequest, "schema"),
        (RuntimeError("ggml crashed"), ModelUnavailable, "RuntimeError: ggml crashed"),
    ],
)
async def test_engine_exceptions_become_model_errors(
    engines: SharedEngines, raised: Exception, expected: type[Exception], fragment: str
) -> None:
    model = make_model(engines, FakeInference(completion(), raised))

    with pytest.raises(expected, match=fragment) as caught:
        await model.complete(request())

    assert caught.value.__cause__ is raised


@pytest.mark.parametrize(
    "answer",
    [{}, {"choices": []}, {"choices": [{"message": {}}]}, {"choices": ["x"]}],
)
async def test_a_malformed_answer_is_unavailable(
    engines: SharedEngines, answer: dict[str, Any]
) -> None:
    model = make_model(engines, FakeInference(completion(), answer))

    with pytest.raises(ModelUnavailable, match="malformed answer"):
        await model.complete(request())


async def test_a_full_queue_is_refused_at_once_as_rate_limited(engines: SharedEngines) -> None:
    fake = FakeInference()
    model = make_model(engines, fake, queue_bound=1)
    fake.started.clear()
    fake.hold()
    async with asyncio.TaskGroup() as tasks:
        running = tasks.create_task(model.complete(request()))
        await asyncio.to_thread(fake.started.wait, 5)
        waiting = tasks.create_task(model.complete(request()))
        await asyncio.wait([waiting], timeout=0.01)  # it queues, and waits for the engine
        with pytest.raises(ModelRateLimited, match=r"local.queue_bound") as caught:
            await model.complete(request())
        fake.release.set()
    assert running.result().text
    assert waiting.result().text
    assert caught.value.transient


async def test_a_caller_cancelled_while_queued_is_never_run(engines: SharedEngines) -> None:
    fake = FakeInference()
    model = make_model(engines, fake)
    fake.started.clear()
    fake.hold()
    running = asyncio.create_task(model.complete(request(max_tokens=11)))
    await asyncio.to_thread(fake.started.wait, 5)
    queued = asyncio.create_task(model.complete(request(max_tokens=22)))
    await asyncio.wait([queued], timeout=0.01)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    fake.release.set()
    await running
    after = await model.complete(request(max_tokens=33))

    assert after.text
    assert [b["max_tokens"] for b in fake.bodies[1:]] == [11, 33]


async def test_a_closed_worker_refuses_new_calls(engines: SharedEngines) -> None:
    model = make_model(engines, FakeInference())
    engines.close_all()

    with pytest.raises(ModelUnavailable, match="shut down"):
        await model.complete(request())


async def test_closing_fails_the_queued_calls(engines: SharedEngines) -> None:
    fake = FakeInference()
    model = make_model(engines, fake)
    fake.started.clear()
    fake.hold()
    running = asyncio.create_task(model.complete(request()))
    await asyncio.to_thread(fake.started.wait, 5)
    queued = asyncio.create_task(model.complete(request()))
    await asyncio.wait([queued], timeout=0.01)
    closing = asyncio.create_task(asyncio.to_thread(engines.close_all))
    await asyncio.wait([queued], timeout=5)
    fake.release.set()
    await closing

    with pytest.raises(ModelUnavailable, match="was closed"):
        await queued
    assert (await running).text


def test_one_engine_per_file_and_settings_is_loaded_and_shared() -> None:
    shared = SharedEngines()
    loads: list[EngineKey] = []

    def load(key: EngineKey) -> FakeInference:
        loads.append(key)
        return FakeInference()

    def open_(path: str, context_size: int = 2048) -> LocalChatModel:
        return open_local_model(
            "local:x",
            path=Path(path),
            threads=1,
            context_size=context_size,
            queue_bound=2,
            clock=FakeClock(),
            engines=shared,
            load=load,
        )

    try:
        open_("/m/a.gguf")
        open_("/m/a.gguf")
        open_("/m/../m/a.gguf")
        open_("/m/a.gguf", context_size=4096)
        open_("/m/b.gguf")
        assert loads == [
            EngineKey(path=Path("/m/a.gguf"), threads=1, context_size=2048),
            EngineKey(path=Path("/m/a.gguf"), threads=1, context_size=4096),
            EngineKey(path=Path("/m/b.gguf"), threads=1, context_size=2048),
        ]
        assert shared.holds(Path("/m/b.gguf"))
        assert not shared.holds(Path("/m/c.gguf"))
        assert len(shared.loaded()) == 3
    finally:
        shared.close_all()
    assert shared.loaded() == []


@pytest.mark.parametrize(
    "warm_up", [RuntimeError("no memory"), {"error": {"type": "server_error", "message": "x"}}]
)
def test_a_failed_warm_up_is_a_config_error_and_nothing_is_kept(warm_up: Any) -> None:
    shared = SharedEngines()
    with pytest.raises(ConfigError, match="failed its warm-up"):
        open_local_model(
            "local:x",
            path=Path("/m/a.gguf"),
            threads=1,
            context_size=2048,
            queue_bound=2,
            clock=FakeClock(),
            engines=shared,
            load=lambda key: FakeInference(warm_up),
        )
    assert shared.loaded() == []


async def test_the_engine_runs_below_the_event_loops_priority(engines: SharedEngines) -> None:
    fake = FakeInference()
    model = make_model(engines, fake)
    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    await model.complete(request())

    assert fake.niceness == min(19, ours + local.WORKER_NICENESS)


def test_a_failed_load_is_raised_and_nothing_is_kept() -> None:
    shared = SharedEngines()

    def load(key: EngineKey) -> FakeInference:
        raise ConfigError("llama.cpp could not load /m/a.gguf")

    with pytest.raises(ConfigError, match="could not load"):
        open_local_model(
            "local:x",
            path=Path("/m/a.gguf"),
            threads=1,
            context_size=2048,
            queue_bound=2,
            clock=FakeClock(),
            engines=shared,
            load=load,
        )
    assert shared.loaded() == []


def test_threads_below_one_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"local\.threads must be at least 1"):
        open_local_model(
            "local:x",
            path=Path("/m/a.gguf"),
            threads=0,
            context_size=2048,
            queue_bound=2,
            clock=FakeClock(),
            engines=SharedEngines(),
            load=lambda key: FakeInference(),
        )


def test_a_queue_bound_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"local\.queue_bound"):
        InferenceWorker(FakeInference, queue_bound=0, name="x")


def test_two_threads_need_a_passive_openmp_once_the_engine_is_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "xllamacpp", object())
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")

    with pytest.raises(ConfigError, match="OMP_WAIT_POLICY=PASSIVE"):
        local._import_engine(2)

    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert local._import_engine(2) is sys.modules["xllamacpp"]


class NoEngine:
    """An import finder for which xllamacpp is not installed."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "xllamacpp":
            raise ModuleNotFoundError("No module named 'xllamacpp'")


def test_openmp_is_made_passive_before_the_engine_first_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "xllamacpp", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoEngine(), *sys.meta_path])

    with pytest.raises(ConfigError, match=r"pip install 'bastion-agents\[local\]'"):
        local._import_engine(1)

    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_an_environment_choice_of_openmp_policy_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "xllamacpp", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setattr(sys, "meta_path", [NoEngine(), *sys.meta_path])

    with pytest.raises(ConfigError):
        local._import_engine(1)

    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


class CountingFake(FakeInference):
    """A fake engine that also counts prompt tokens (or raises `count_error`)."""

    def __init__(self, *answers: Any, count: int = 57, count_error: Exception | None = None):
        super().__init__(*answers)
        self.count = count
        self.count_error = count_error
        self.counted: list[tuple[Mapping[str, Any], int]] = []

    def count_prompt_tokens(self, body: Mapping[str, Any]) -> int:
        self.counted.append((body, threading.get_native_id()))
        if self.count_error is not None:
            raise self.count_error
        return self.count


async def test_the_model_counts_a_request_with_the_body_it_would_send(
    engines: SharedEngines,
) -> None:
    fake = CountingFake(completion())
    model = make_model(engines, fake)

    counted = await model.count_input_tokens(request(json_schema=SCHEMA, max_tokens=300))

    assert counted == 57
    body, _ = fake.counted[-1]
    assert body["messages"] == [
        {"role": "system", "content": "plan"},
        {"role": "user", "content": "hi"},
    ]
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert len(fake.bodies) == 1  # the warm-up only: counting generates nothing


async def test_a_count_is_not_queued_behind_a_generation(engines: SharedEngines) -> None:
    fake = CountingFake(completion())
    model = make_model(engines, fake, queue_bound=1)
    fake.hold()
    fake.started.clear()
    busy = asyncio.create_task(model.complete(request()))
    assert await asyncio.to_thread(fake.started.wait, 5)

    counted = await asyncio.wait_for(model.count_input_tokens(request()), 5)

    assert counted == 57
    assert not busy.done()
    fake.release.set()
    await busy


async def test_an_engine_that_cannot_count_says_none(engines: SharedEngines) -> None:
    model = make_model(engines, FakeInference(completion()))

    assert await model.count_input_tokens(request()) is None


async def test_a_failed_count_is_raised_for_the_caller_to_estimate(
    engines: SharedEngines,
) -> None:
    model = make_model(engines, CountingFake(completion(), count_error=OSError("refused")))

    with pytest.raises(OSError, match="refused"):
        await model.count_input_tokens(request())


async def test_a_closed_worker_does_not_count(engines: SharedEngines) -> None:
    model = make_model(engines, CountingFake(completion()))
    engines.close_all()

    with pytest.raises(local.WorkerClosed):
        await model.count_input_tokens(request())
