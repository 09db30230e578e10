"""Traces and logs of the HTTP service: OpenTelemetry spans from run events, JSON log lines.

Spans are made from the events a run already emits, as the metrics are (`bastion.server.metrics`):
one ``invoke_agent`` span per run (from ``admitted`` to its terminal status), a ``step`` span per
plan step with an ``execute_tool`` span inside it (from ``step_started`` to ``step_finished``), and
a ``chat`` span per model call (ending at its ``model_call`` event, starting ``latency_s`` before).
Attributes follow the OpenTelemetry GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, ``gen_ai.tool.name``, ...), plus
``bastion.*`` ones. Since events carry their own times, spans have the run's real timing, and no
component needs a tracing hook. Tracing is off unless ``observability.traces`` says ``console`` or
``otlp``; the exporter is chosen here and nowhere else.

Logs: one JSON object per line (time, level, logger, message, run id, exception), secrets hidden
by the gate's `RedactingFilter`. The run id is the one of the run whose task logs (a context
variable set by the hub), else one named in the message.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from bastion.errors import ConfigError
from bastion.gate.redact import RedactingFilter
from bastion.gate.wiring import redactor_for
from bastion.messages import EventKind, RunEvent, RunStatus
from bastion.settings import Settings

#: The run whose task is logging (set by `bastion.server.live.RunHub` for each run's task).
current_run_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "bastion_run_id", default=None
)

_RUN_ID = re.compile(r"\brun_[0-9a-f]{8,}\b")
_HANDLER = "_bastion_json_handler"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ns(at: datetime) -> int:
    # Exact integer arithmetic: a float timestamp loses the nanoseconds of today's dates.
    return (at - _EPOCH) // timedelta(microseconds=1) * 1000


class RunTracer:
    """A run event sink that turns each run's events into spans.

    Args:
        tracer: where spans go (from a `TracerProvider`).
        agent_name: the app's name (``gen_ai.agent.name``).
    """

    def __init__(self, tracer: Tracer, *, agent_name: str) -> None:
        self._tracer = tracer
        self._agent = agent_name
        self._runs: dict[str, Span] = {}
        self._steps: dict[tuple[str, int], tuple[Span, Span]] = {}

    def observe(self, event: RunEvent) -> None:
        """Open or close the spans `event` marks."""
        match event.kind:
            case EventKind.STATUS:
                self._status(event)
            case EventKind.MODEL_CALL:
                self._model_call(event)
            case EventKind.STEP_STARTED:
                self._step_started(event)
            case EventKind.STEP_FINISHED:
                self._step_finished(event)
            case _:
                run = self._runs.get(event.run_id)
                if run is not None:
                    run.add_event(event.kind.value, timestamp=_ns(event.at))

    def _run_span(self, event: RunEvent) -> Span:
        span = self._runs.get(event.run_id)
        if span is None:
            span = self._tracer.start_span(
                f"invoke_agent {self._agent}",
                start_time=_ns(event.at),
                attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": self._agent,
                    "bastion.run_id": event.run_id,
                },
            )
            self._runs[event.run_id] = span
        return span

    def _status(self, event: RunEvent) -> None:
        span = self._run_span(event)
        try:
            status = RunStatus(str(event.data.get("status")))
        except ValueError:
            return
        span.add_event(f"status {status.value}", timestamp=_ns(event.at))
        if status.is_terminal:
            span.set_attribute("bastion.run.status", status.value)
            if status is not RunStatus.COMPLETED:
                span.set_status(Status(StatusCode.ERROR, str(event.data.get("error") or status)))
            for key in [k for k in self._steps if k[0] == event.run_id]:
                for open_span in self._steps.pop(key):
                    open_span.end(end_time=_ns(event.at))
            self._runs.pop(event.run_id, None)
            span.end(end_time=_ns(event.at))

    def _model_call(self, event: RunEvent) -> None:
        parent = trace.set_span_in_context(self._run_span(event))
        data = event.data
        model = str(data.get("model") or "unknown")
        provider, _, name = model.partition(":")
        latency = data.get("latency_s")
        end = _ns(event.at)
        if isinstance(latency, int | float) and latency > 0:
            start = end - int(latency * 1_000_000) * 1000
        else:
            start = end
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider if name else "unknown",
            "gen_ai.request.model": name or model,
            "gen_ai.response.model": name or model,
            "bastion.run_id": event.run_id,
        }
        for key, attr in (
            ("input_tokens", "gen_ai.usage.input_tokens"),
            ("output_tokens", "gen_ai.usage.output_tokens"),
        ):
            if isinstance(data.get(key), int):
                attributes[attr] = data[key]
        if data.get("finish_reason"):
            attributes["gen_ai.response.finish_reasons"] = [str(data["finish_reason"])]
        if data.get("cost_usd") is not None:
            attributes["bastion.cost_usd"] = str(data["cost_usd"])
        span = self._tracer.start_span(
            f"chat {name or model}", context=parent, start_time=start, attributes=attributes
        )
        span.end(end_time=end)

    def _step_started(self, event: RunEvent) -> None:
        step_id = event.data.get("step_id")
        if not isinstance(step_id, int):
            return
        tool = str(event.data.get("tool_name") or "unknown")
        parent = trace.set_span_in_context(self._run_span(event))
        step = self._tracer.start_span(
            f"step {step_id}",
            context=parent,
            start_time=_ns(event.at),
            attributes={"bastion.run_id": event.run_id, "bastion.step_id": step_id},
        )
        call = self._tracer.start_span(
            f"execute_tool {tool}",
            context=trace.set_span_in_context(step),
            start_time=_ns(event.at),
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool,
                "gen_ai.tool.type": "function",
                "bastion.run_id": event.run_id,
            },
        )
        previous = self._steps.pop((event.run_id, step_id), None)
        for open_span in previous or ():
            open_span.end(end_time=_ns(event.at))
        self._steps[(event.run_id, step_id)] = (step, call)

    def _step_finished(self, event: RunEvent) -> None:
        step_id = event.data.get("step_id")
        spans = self._steps.pop((event.run_id, step_id), None) if isinstance(step_id, int) else None
        if spans is None:
            return
        step, call = spans
        if not event.data.get("ok"):
            error = str(event.data.get("error") or event.data.get("error_kind") or "failed")
            for span in (call, step):
                span.set_status(Status(StatusCode.ERROR, error))
                span.set_attribute("error.type", str(event.data.get("error_kind") or "failed"))
        call.end(end_time=_ns(event.at))
        step.end(end_time=_ns(event.at))


def tracer_provider(settings: Settings) -> TracerProvider | None:
    """The provider the settings ask for (None when tracing is off).

    Raises:
        ConfigError: ``otlp`` without an endpoint, or without the OTLP exporter installed.
    """
    config = settings.observability
    if config.traces == "off":
        return None
    exporter: SpanExporter
    if config.traces == "console":
        exporter = ConsoleSpanExporter(out=sys.stderr)
    else:
        if not config.otlp_endpoint:
            raise ConfigError(
                "observability.traces=otlp needs observability.otlp_endpoint "
                "(e.g. http://127.0.0.1:4318/v1/traces)"
            )
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ConfigError(
                "observability.traces=otlp needs the OTLP exporter: "
                "pip install 'bastion-agents[otel]'"
            ) from exc
        exporter = OTLPSpanExporter(endpoint=config.otlp_endpoint)
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    processor = (
        SimpleSpanProcessor(exporter)
        if config.traces == "console"
        else BatchSpanProcessor(exporter)
    )
    provider.add_span_processor(processor)
    return provider


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, run_id and exc when known."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        run_id = getattr(record, "run_id", None) or current_run_id.get()
        if run_id is None:
            found = _RUN_ID.search(message)
            run_id = found.group(0) if found else None
        if run_id is not None:
            line["run_id"] = run_id
        if record.exc_text:
            line["exc"] = record.exc_text
        elif record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def json_log_handler(settings: Settings, stream: Any = None) -> logging.Handler:
    """A handler writing JSON lines to `stream` (stderr), secrets hidden."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter(redactor_for(settings)))
    setattr(handler, _HANDLER, True)
    return handler


def configure_logs(settings: Settings) -> None:
    """Send Bastion's and uvicorn's logs to stderr as JSON lines (when ``json_logs``)."""
    if not settings.observability.json_logs:
        return
    handler = json_log_handler(settings)
    for name in ("bastion", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, _HANDLER, False)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
