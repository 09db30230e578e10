"""`LocalChatModel`: the embedded llama.cpp model (`xllamacpp`), in process, off the event loop.

The support demo must plan with a real model on a machine with no API key and no network, and
small models write broken JSON; llama.cpp constrains decoding to the plan's JSON schema
(LLGuidance), so every plan is valid by construction and the planner's repair loop becomes a
safety net. The request is the same OpenAI chat-completions body the hosted models get, with the
schema as ``response_format``.

Three decisions live here:

* **Off the loop, one at a time.** Generation is blocking C++ (it releases the GIL), so each
  loaded model has one worker thread fed by a bounded queue (`InferenceWorker`): the event loop
  keeps serving other runs while the model thinks, the model's single slot keeps the system
  prompt's KV prefix warm between plans, and when the queue is full a call fails at once with
  `ModelRateLimited` (the Recovery Handler backs off) instead of piling up without bound. A
  caller cancelled while queued is skipped; one cancelled mid-generation is left to finish and
  its answer dropped (llama.cpp cannot be interrupted from here). The engine loads on that
  thread after it lowers its priority, so llama.cpp's own threads give way to the loop too.
* **Loaded once per process, warmed once.** Weights take 0.1 to 1.1 GB and seconds to load, so
  `SharedEngines` keeps one engine per (file, threads, context size) for the whole process and
  every system that names the model shares it. This is the one piece of process-wide state in
  the package (STYLE.md §8 says no globals): a model in memory *is* process-wide, and two copies
  would double the RSS and halve the speed on a 2-core machine. A one-token generation under a
  schema at load readies the engine and its grammar machinery before the first plan.
* **One thread unless told otherwise.** llama.cpp's OpenMP threads spin, and on a 2-core machine
  with anything else running two spinning threads collapse (1 to 12 tokens/s instead of 40 to
  150). ``local.threads`` is 1 by default; above 1 needs ``OMP_WAIT_POLICY=PASSIVE``, which is set
  here before the library first loads unless the environment already says otherwise.

The server object xllamacpp builds opens an HTTP listener on 127.0.0.1 even in process: it gets
a random API key that never leaves this module, and no web UI.

**The model counts its own input tokens** (`LocalChatModel.count_input_tokens`), so that a budget
reservation is sized by the real prompt, not by a guess from its bytes
(`bastion.cost.tokens`). xllamacpp's Python API has no tokenizer call, so the count asks that
same loopback listener, with that key: ``/apply-template`` turns the request's body into the
prompt the engine would build (the chat template, and whatever ``response_format`` adds to it),
``/tokenize`` counts it with the GGUF file's tokenizer. It runs on the listener's threads, beside
a generation (5 to 35 ms measured here), so a count never waits for another run's plan.

Every engine failure becomes a `ModelError` here (`ENGINE_ERROR_HANDLERS` for the errors the
server answers with, `map_engine_exception` for what it raises); a request that does not fit the
context is `ModelContextOverflow`, and a plan cut at ``max_tokens`` comes back with
``finish_reason="length"``, which the planner treats as a failed answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import queue
import secrets
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol, runtime_checkable

from bastion.clock import Clock
from bastion.errors import (
    ConfigError,
    ModelBadRequest,
    ModelError,
    ModelRateLimited,
    ModelRefused,
    ModelUnavailable,
)
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse, Usage

logger = logging.getLogger(__name__)

#: How much lower than the process the engine's threads run (nice values: +5 of 19).
WORKER_NICENESS: Final = 5

#: How long a token count may take on the engine's loopback listener (it takes milliseconds).
COUNT_TIMEOUT_S: Final = 10.0

#: A request to warm the engine with: one token, under a schema, so LLGuidance is ready too.
_WARM_UP_BODY: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "messages": [{"role": "user", "content": "Say ok."}],
        "max_tokens": 1,
        "temperature": 0.0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "warm_up", "schema": {"type": "object"}},
        },
    }
)


class ModelContextOverflow(ModelBadRequest):
    """The request does not fit the local model's context window: shorten it or raise the size."""

    user_message = (
        "Sorry, this conversation has grown too long for the language model. Please start a new"
        " conversation or ask a shorter question."
    )


class Inference(Protocol):
    """A loaded model that answers one OpenAI chat-completions body at a time. Blocking.

    `chat` returns the engine's answer: a chat completion, or ``{"error": {...}}``; it may raise
    for a request the engine cannot even start (a schema it cannot compile).
    """

    def chat(self, body: Mapping[str, Any]) -> Mapping[str, Any]: ...


@runtime_checkable
class CountingInference(Inference, Protocol):
    """An `Inference` that can also count the prompt tokens of a body, without generating.

    `count_prompt_tokens` is thread-safe (it may run while `chat` generates on another thread)
    and raises when it cannot count.
    """

    def count_prompt_tokens(self, body: Mapping[str, Any]) -> int: ...


class XllamacppInference(CountingInference):
    """A GGUF file loaded by xllamacpp's in-process server.

    Args:
        path: The GGUF file (verified by the caller).
        threads: CPU threads for generation and prompt processing.
        context_size: The context window in tokens (prompt plus answer).

    Raises:
        ConfigError: the engine is not installed, the thread setting needs an environment it does
            not have, or llama.cpp could not load the file.
    """

    def __init__(self, *, path: Path, threads: int, context_size: int) -> None:
        xlc = _import_engine(threads)
        params = xlc.CommonParams()
        params.model.path = str(path)
        params.n_ctx = context_size
        params.n_parallel = 1  # one slot: one generation at a time, its KV prefix kept warm
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        key = secrets.token_urlsafe(32)
        params.api_keys = [key]  # its HTTP listener must not serve anyone but us
        params.ui = False
        params.verbosity = -1
        params.warmup = True
        try:
            self._server = xlc.Server(params)
        except RuntimeError as exc:
            raise ConfigError(
                f"llama.cpp could not load {path} ({exc}). The file may be damaged or too new for"
                " this xllamacpp build, or the context size too large for the memory left;"
                " try a smaller local.context_size, or another model (bastion models)."
            ) from exc
        self._key = key
        self._address = str(self._server.listening_address).rstrip("/")
        # Loopback only: no proxy from the environment may see the key or the prompt.
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def chat(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        answer: Mapping[str, Any] = self._server.handle_chat_completions(dict(body))
        return answer

    def count_prompt_tokens(self, body: Mapping[str, Any]) -> int:
        """The prompt tokens `body` is processed as: templated, then tokenized, by the engine.

        Raises:
            OSError: the listener did not answer (`urllib.error.URLError` is one).
            ValueError: it answered something else than a prompt or a token list.
        """
        templated = self._post("/apply-template", body).get("prompt")
        if not isinstance(templated, str):
            raise ValueError("the engine's /apply-template answered no prompt")
        # As the engine tokenizes a chat prompt: special tokens added and parsed.
        tokens = self._post(
            "/tokenize", {"content": templated, "add_special": True, "parse_special": True}
        ).get("tokens")
        if not isinstance(tokens, list):
            raise ValueError("the engine's /tokenize answered no token list")
        return len(tokens)

    def _post(self, route: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        request = urllib.request.Request(
            self._address + route,
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._key}"},
        )
        try:
            with self._http.open(request, timeout=COUNT_TIMEOUT_S) as answer:
                data = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            exc.close()
            raise OSError(f"the engine's {route} answered HTTP {exc.code}") from None
        if not isinstance(data, Mapping):
            raise ValueError(f"the engine's {route} answered no JSON object")
        return data


def _import_engine(threads: int) -> Any:
    """Import xllamacpp, with ``OMP_WAIT_POLICY=PASSIVE`` in place before it first loads."""
    if "xllamacpp" not in sys.modules:
        # OpenMP reads this once, when the library loads: later is too late.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    elif threads > 1 and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        raise ConfigError(
            f"local.threads={threads} needs OMP_WAIT_POLICY=PASSIVE set before xllamacpp loads,"
            " and it was loaded without it: spinning OpenMP threads collapse generation on a busy"
            " machine. Export OMP_WAIT_POLICY=PASSIVE, or leave local.threads at 1."
        )
    try:
        import xllamacpp  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:
        raise ConfigError(
            f"the local model engine is not installed ({exc}). Install it with:"
            " pip install 'bastion-agents[local]'"
        ) from exc
    return xllamacpp


# -- the worker --------------------------------------------------------------------------------


class QueueFull(Exception):
    """The worker's queue is at its bound."""


class WorkerClosed(Exception):
    """The worker was closed."""


_Job = tuple[concurrent.futures.Future[Mapping[str, Any]], Mapping[str, Any]]


class InferenceWorker:
    """One thread that loads an `Inference` and runs its requests in order, from a bounded queue.

    The thread lowers its own scheduling priority before it loads the engine, so the engine's
    threads (llama.cpp starts its own, and they inherit it) give way to the event loop when the
    cores are busy: a plan may take a little longer, but the loop keeps answering (Linux only;
    elsewhere the priority is left as it is).

    Args:
        load: Loads the engine; called on the worker's thread.
        queue_bound: Requests that may wait (beyond the one running) before `run` refuses.
        name: Names the thread (and log lines).

    Raises:
        ConfigError: `queue_bound` is below 1.
        Exception: whatever `load` raised (the thread has then ended).
    """

    def __init__(self, load: Callable[[], Inference], *, queue_bound: int, name: str) -> None:
        if queue_bound < 1:
            raise ConfigError(f"local.queue_bound must be at least 1, not {queue_bound}")
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_bound)
        self._closed = False
        self._lock = threading.Lock()
        self.name = name
        loaded: concurrent.futures.Future[Inference] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._main, args=(load, loaded), name=f"bastion-{name}", daemon=True
        )
        self._thread.start()
        self._inference = loaded.result()

    def _main(
        self, load: Callable[[], Inference], loaded: concurrent.futures.Future[Inference]
    ) -> None:
        _lower_priority()
        try:
            self._inference = load()
        except BaseException as exc:  # handed to the constructor, which raises it
            loaded.set_exception(exc)
            return
        loaded.set_result(self._inference)
        self._loop()

    @property
    def waiting(self) -> int:
        """Requests queued and not yet started."""
        return self._jobs.qsize()

    @property
    def queue_bound(self) -> int:
        """How many requests may wait."""
        return self._jobs.maxsize

    async def run(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """Queue `body` and wait for the engine's answer, without blocking the event loop.

        Raises:
            QueueFull: `queue_bound` requests are already waiting.
            WorkerClosed: the worker was closed.
            Exception: whatever the engine raised for this request.
        """
        future = self._submit(body)
        # Cancelling the awaiting task cancels a job that has not started (the thread skips it).
        return await asyncio.wrap_future(future)

    def count_prompt_tokens(self, body: Mapping[str, Any]) -> int | None:
        """The prompt tokens of `body`, counted on the caller's thread; None if it cannot count.

        Not queued: the engine counts beside a generation, and a count must not wait for one.

        Raises:
            WorkerClosed: the worker was closed.
            Exception: whatever the engine's count raised.
        """
        if self._closed:
            raise WorkerClosed(f"the {self.name} worker is closed")
        if not isinstance(self._inference, CountingInference):
            return None
        return self._inference.count_prompt_tokens(body)

    def run_blocking(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """`run` for synchronous callers (the warm-up at load), blocking until answered.

        Raises:
            QueueFull: `queue_bound` requests are already waiting.
            WorkerClosed: the worker was closed.
            Exception: whatever the engine raised for this request.
        """
        return self._submit(body).result()

    def _submit(self, body: Mapping[str, Any]) -> concurrent.futures.Future[Mapping[str, Any]]:
        future: concurrent.futures.Future[Mapping[str, Any]] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise WorkerClosed(f"the {self.name} worker is closed")
            try:
                self._jobs.put_nowait((future, body))
            except queue.Full:
                raise QueueFull(
                    f"{self._jobs.maxsize} requests are already waiting for {self.name}"
                ) from None
        return future

    def close(self) -> None:
        """Stop taking requests; fail the queued ones; let the running one finish. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].set_exception(WorkerClosed(f"the {self.name} worker was closed"))
        self._jobs.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, body = job
            if not future.set_running_or_notify_cancel():
                continue  # its caller was cancelled while it waited
            try:
                answer = self._inference.chat(body)
            except BaseException as exc:  # handed to the caller, who maps it
                future.set_exception(exc)
            else:
                future.set_result(answer)


def _lower_priority() -> None:
    """Raise this thread's nice value by `WORKER_NICENESS` (on Linux a thread has its own)."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICENESS)
    except OSError:  # a sandbox may forbid it: run at the normal priority
        logger.debug("could not lower the priority of the local model's thread", exc_info=True)


# -- sharing -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineKey:
    """What makes two loads the same engine."""

    path: Path
    threads: int
    context_size: int


class SharedEngines:
    """One loaded engine (and its worker) per `EngineKey`, for the life of the process.

    Thread-safe; a load happens once even when two systems are built at the same time.
    """

    def __init__(self) -> None:
        self._workers: dict[EngineKey, InferenceWorker] = {}
        self._lock = threading.Lock()

    def get(
        self, key: EngineKey, *, load: Callable[[], Inference], queue_bound: int
    ) -> InferenceWorker:
        """The worker for `key`, loading and warming its engine on first use.

        The queue bound of the first caller stays for the life of the engine.

        Raises:
            ConfigError: as `load`, or the warm-up failed.
        """
        with self._lock:
            worker = self._workers.get(key)
            if worker is not None:
                return worker
            worker = InferenceWorker(load, queue_bound=queue_bound, name=key.path.name)
            try:
                answer = worker.run_blocking(_WARM_UP_BODY)
            except Exception as exc:
                worker.close()
                raise ConfigError(f"the local model {key.path} failed its warm-up: {exc}") from exc
            if "error" in answer:
                worker.close()
                raise ConfigError(
                    f"the local model {key.path} failed its warm-up: {answer['error']}"
                )
            self._workers[key] = worker
            return worker

    def holds(self, path: Path) -> bool:
        """Whether an engine has loaded `path` (under any settings)."""
        resolved = path.resolve()
        with self._lock:
            return any(key.path == resolved for key in self._workers)

    def loaded(self) -> list[EngineKey]:
        """The engines loaded so far."""
        with self._lock:
            return list(self._workers)

    def close_all(self) -> None:
        """Stop every worker and drop every engine (tests and benchmarks free memory this way)."""
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.close()


#: The process's engines (see the module docstring for why this one is shared).
SHARED_ENGINES: Final = SharedEngines()


# -- errors ------------------------------------------------------------------------------------

ErrorHandler = Callable[[str, Mapping[str, Any]], ModelError]


def _context_overflow(model: str, error: Mapping[str, Any]) -> ModelError:
    return ModelContextOverflow(
        f"{model}: the request does not fit the context window ({_say(error)}). Raise"
        " local.context_size (BASTION_LOCAL__CONTEXT_SIZE), or shorten the conversation"
        " (planner.context_token_budget).",
        model=model,
    )


def _invalid(model: str, error: Mapping[str, Any]) -> ModelError:
    return ModelBadRequest(
        f"{model} rejected the request ({_say(error)}). Our request or the configuration is"
        " wrong (JSON schema, max_tokens); it will not be retried.",
        model=model,
    )


def _server(model: str, error: Mapping[str, Any]) -> ModelError:
    return ModelUnavailable(
        f"{model} failed while generating ({_say(error)}). Retry, or fall back to another model.",
        model=model,
    )


def _refused(model: str, error: Mapping[str, Any]) -> ModelError:
    # Only reachable if the server's own key check misfires: ours is the only key it knows.
    return ModelRefused(
        f"{model}'s embedded server refused our call ({_say(error)}). This is a bug in Bastion's"
        " local model; please report it.",
        model=model,
    )


def _busy(model: str, error: Mapping[str, Any]) -> ModelError:
    return ModelUnavailable(
        f"{model} is not ready ({_say(error)}). Retry shortly.",
        model=model,
    )


#: The error types llama.cpp's server answers with (``error.type``), and what each becomes.
ENGINE_ERROR_HANDLERS: Final[Mapping[str, ErrorHandler]] = MappingProxyType(
    {
        "exceed_context_size_error": _context_overflow,
        "invalid_request_error": _invalid,
        "not_supported_error": _invalid,
        "not_found_error": _invalid,
        "server_error": _server,
        "unavailable_error": _busy,
        "authentication_error": _refused,
        "permission_error": _refused,
    }
)


def map_engine_error(model: str, error: object) -> ModelError:
    """The `ModelError` for an ``{"error": ...}`` answer (not raised: the caller raises it)."""
    details: Mapping[str, Any] = error if isinstance(error, Mapping) else {"message": str(error)}
    handler = ENGINE_ERROR_HANDLERS.get(str(details.get("type")))
    if handler is not None:
        return handler(model, details)
    code = details.get("code")
    if isinstance(code, int) and 400 <= code < 500:
        return _invalid(model, details)
    return _server(model, details)


def map_engine_exception(model: str, exc: Exception, *, queue_bound: int) -> ModelError:
    """The `ModelError` for an exception from the worker or the engine."""
    if isinstance(exc, QueueFull):
        return ModelRateLimited(
            f"{model} is busy: {exc}. Retry shortly, or raise local.queue_bound if the machine can"
            f" take the wait (now {queue_bound}).",
            model=model,
        )
    if isinstance(exc, WorkerClosed):
        return ModelUnavailable(
            f"{model} is shut down ({exc}); it cannot take new requests.", model=model
        )
    if isinstance(exc, ValueError):  # xllamacpp's word for "cannot start this request"
        return ModelBadRequest(
            f"{model} could not start the request: {exc}. The JSON schema or the messages are"
            " not something llama.cpp accepts; it will not be retried.",
            model=model,
        )
    return ModelUnavailable(
        f"{model} failed: {type(exc).__name__}: {exc}. Retry, or fall back to another model.",
        model=model,
    )


def _say(error: Mapping[str, Any]) -> str:
    message = error.get("message") or "no message"
    kind = error.get("type")
    return f"{kind}: {message}" if kind else str(message)


# -- the model ---------------------------------------------------------------------------------


class LocalChatModel(ChatModel):
    """A `ChatModel` over a model embedded in this process.

    Build it with `open_local_model` (or `bastion.models.load_model("local:...")`), which loads
    (or shares) the engine; the constructor only wires.

    Args:
        name: ``local:<key>`` or ``local:<path>``, as configured.
        worker: The engine's worker (shared by every model object naming the same file).
        clock: Measures latency.
    """

    def __init__(self, *, name: str, worker: InferenceWorker, clock: Clock) -> None:
        self._name = name
        self._worker = worker
        self._clock = clock

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Generate once, constrained to ``request.json_schema`` when it has one.

        Raises:
            ModelContextOverflow: the request does not fit the context window.
            ModelRateLimited: the queue is full.
            ModelError: any other engine failure, mapped (see the module docstring).
        """
        started = self._clock.monotonic()
        try:
            answer = await self._worker.run(self._body(request))
        except Exception as exc:
            raise map_engine_exception(
                self._name, exc, queue_bound=self._worker.queue_bound
            ) from exc
        if "error" in answer:
            raise map_engine_error(self._name, answer["error"])
        return self._to_response(answer, latency_s=self._clock.monotonic() - started)

    async def count_input_tokens(self, request: ChatRequest) -> int | None:
        """The input tokens `request` will be reported as, counted by the model's own tokenizer.

        The prompt as `complete` would send it (chat template, and the schema if the template
        puts it in), counted off the event loop; None when the engine cannot count (a test
        engine). `bastion.cost.tokens` uses it to size the call's budget reservation.

        Raises:
            WorkerClosed: the model's worker was closed.
            OSError | ValueError: the engine did not count (the caller estimates instead).
        """
        return await asyncio.to_thread(self._worker.count_prompt_tokens, self._body(request))

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "cache_prompt": True,
        }
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": dict(request.json_schema)},
            }
        return body

    def _to_response(self, answer: Mapping[str, Any], *, latency_s: float) -> ChatResponse:
        choices = answer.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(choice, Mapping) or not isinstance(content, str):
            raise ModelUnavailable(
                f"{self._name} gave a malformed answer (no message content in its first choice)."
                " Retry; if it persists, the xllamacpp build is not the pinned one.",
                model=self._name,
            )
        usage = answer.get("usage")
        usage = usage if isinstance(usage, Mapping) else {}
        return ChatResponse(
            text=content,
            model=self._name,
            usage=Usage(
                input_tokens=_count(usage.get("prompt_tokens")),
                output_tokens=_count(usage.get("completion_tokens")),
            ),
            finish_reason=str(choice.get("finish_reason") or "stop"),
            latency_s=latency_s,
        )


def _count(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def open_local_model(
    name: str,
    *,
    path: Path,
    threads: int,
    context_size: int,
    queue_bound: int,
    clock: Clock,
    engines: SharedEngines = SHARED_ENGINES,
    load: Callable[[EngineKey], Inference] | None = None,
) -> LocalChatModel:
    """Load (or share) the engine for `path` and return a model over it.

    Args:
        name: The configured name, ``local:...``.
        path: A verified GGUF file.
        threads: CPU threads (1 unless ``OMP_WAIT_POLICY=PASSIVE``; see the module docstring).
        context_size: The context window in tokens.
        queue_bound: Requests that may wait for the engine.
        clock: Measures latency.
        engines: Where loaded engines are shared (the process's, by default).
        load: Builds the engine (xllamacpp by default; tests pass a fake).

    Raises:
        ConfigError: the engine is not installed or could not load the file.
    """
    if threads < 1:
        raise ConfigError(f"local.threads must be at least 1, not {threads}")
    key = EngineKey(path=path.resolve(), threads=threads, context_size=context_size)

    def build() -> Inference:
        if load is not None:
            return load(key)
        return XllamacppInference(path=key.path, threads=threads, context_size=context_size)

    worker = engines.get(key, load=build, queue_bound=queue_bound)
    return LocalChatModel(name=name, worker=worker, clock=clock)
