"""Spans from run events (GenAI conventions), JSON logs with run ids and secrets hidden."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from bastion.errors import ConfigError
from bastion.messages import EventKind, RunEvent
from bastion.server.telemetry import (
    RunTracer,
    current_run_id,
    json_log_handler,
    tracer_provider,
)
from bastion.settings import load_settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(seq: int, kind: EventKind, seconds: float, **data) -> RunEvent:
    return RunEvent(
        run_id="run_abc", seq=seq, kind=kind, at=T0 + timedelta(seconds=seconds), data=data
    )


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = RunTracer(provider.get_tracer("test"), agent_name="support")
    return tracer, exporter


def test_a_run_becomes_agent_model_step_and_tool_spans(spans):
    tracer, exporter = spans
    for e in [
        event(1, EventKind.STATUS, 0, status="admitted"),
        event(
            2,
            EventKind.MODEL_CALL,
            1.5,
            model="openai:gpt-4o-mini",
            input_tokens=120,
            output_tokens=30,
            cost_usd="0.0001",
            latency_s=0.5,
            finish_reason="stop",
        ),
        event(3, EventKind.STEP_STARTED, 2, step_id=1, tool_name="lookup_order"),
        event(
            4,
            EventKind.STEP_FINISHED,
            2.25,
            step_id=1,
            tool_name="lookup_order",
            ok=False,
            error_kind="timeout",
            error="too slow",
        ),
        event(5, EventKind.STATUS, 3, status="failed", error="step failed"),
    ]:
        tracer.observe(e)
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    run = by_name["invoke_agent support"]
    chat = by_name["chat gpt-4o-mini"]
    step = by_name["step 1"]
    tool = by_name["execute_tool lookup_order"]
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["bastion.run.status"] == "failed"
    assert run.status.status_code is StatusCode.ERROR
    assert (run.end_time - run.start_time) == 3_000_000_000
    assert chat.parent.span_id == run.context.span_id
    assert chat.attributes["gen_ai.provider.name"] == "openai"
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 120
    assert chat.attributes["gen_ai.usage.output_tokens"] == 30
    assert chat.end_time - chat.start_time == 500_000_000
    assert step.parent.span_id == run.context.span_id
    assert tool.parent.span_id == step.context.span_id
    assert tool.attributes["gen_ai.tool.name"] == "lookup_order"
    assert tool.attributes["error.type"] == "timeout"
    assert tool.end_time - tool.start_time == 250_000_000


def test_steps_left_open_end_with_the_run(spans):
    tracer, exporter = spans
    tracer.observe(event(1, EventKind.STATUS, 0, status="admitted"))
    tracer.observe(event(2, EventKind.STEP_STARTED, 1, step_id=1, tool_name="hold"))
    tracer.observe(event(3, EventKind.STATUS, 2, status="cancelled"))
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["execute_tool hold", "invoke_agent support", "step 1"]


def test_odd_event_data_is_ignored(spans):
    tracer, exporter = spans
    tracer.observe(event(1, EventKind.STATUS, 0, status="nonsense"))
    tracer.observe(event(2, EventKind.STEP_STARTED, 0, step_id="x"))
    tracer.observe(event(3, EventKind.STEP_FINISHED, 0, step_id=9))
    tracer.observe(event(4, EventKind.RETRY, 0))
    assert exporter.get_finished_spans() == ()


def test_tracing_is_off_by_default_and_otlp_needs_an_endpoint(tmp_path):
    assert tracer_provider(load_settings(data_dir=tmp_path)) is None
    console = tracer_provider(load_settings(data_dir=tmp_path, observability={"traces": "console"}))
    assert console is not None
    console.shutdown()
    with pytest.raises(ConfigError, match="otlp_endpoint"):
        tracer_provider(load_settings(data_dir=tmp_path, observability={"traces": "otlp"}))
    otlp = tracer_provider(
        load_settings(
            data_dir=tmp_path,
            observability={"traces": "otlp", "otlp_endpoint": "http://127.0.0.1:9/v1/traces"},
        )
    )
    assert otlp is not None
    otlp.shutdown()


def test_json_logs_carry_the_run_id_and_hide_secrets(tmp_path):
    out = io.StringIO()
    handler = json_log_handler(load_settings(data_dir=tmp_path), stream=out)
    logger = logging.getLogger("bastion.test.jsonlogs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        token = current_run_id.set("run_0123456789abcdef")
        try:
            logger.warning("calling with api_key=%s", "sk-abcdefghijklmnopqrstuvwxyz123456")
        finally:
            current_run_id.reset(token)
        logger.error("run run_fedcba9876543210 failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["run_id"] == "run_0123456789abcdef"
    assert first["level"] == "warning"
    assert "sk-abcdefghijklmnopqrstuvwxyz123456" not in first["message"]
    assert second["run_id"] == "run_fedcba9876543210"


def test_a_run_through_the_server_is_traced(traced):
    with traced.client("alice") as client:
        run_id = client.post("/v1/runs", json={"message": "lookup A1", "wait": True}).json()[
            "run_id"
        ]
    spans = [
        s for s in traced.spans.get_finished_spans() if s.attributes.get("bastion.run_id") == run_id
    ]
    names = sorted(s.name for s in spans)
    assert names == ["chat http", "execute_tool lookup", "invoke_agent scripted", "step 0"]
    run = next(s for s in spans if s.name == "invoke_agent scripted")
    assert run.attributes["bastion.run.status"] == "completed"
    assert all(s.context.trace_id == run.context.trace_id for s in spans)
