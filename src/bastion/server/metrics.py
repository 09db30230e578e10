"""Prometheus metrics of the HTTP service, fed by the runs' own events.

Every number here comes from a `RunEvent` the flow already emits (``model_call`` carries tokens,
cost and latency; ``step_finished`` a duration; ``status`` each transition), so the metrics need no
hook in the components and say exactly what the run's timeline says. Breaker states are read from
the system's board at scrape time. Each app has its own `CollectorRegistry` (never the global one),
so that several apps in one process (tests) do not share counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bastion.messages import EventKind, RunEvent, RunStatus

#: Content type of the exposition format served at /metrics.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BREAKER_VALUE = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class _Live(Collector):
    """Gauges read when scraped: breaker states, runs under way, approvals waiting."""

    def __init__(
        self,
        breakers: Callable[[], Mapping[str, str]],
        active: Callable[[], int],
        waiting: Callable[[], int],
    ) -> None:
        self._breakers = breakers
        self._active = active
        self._waiting = waiting

    def collect(self) -> Iterable[GaugeMetricFamily]:
        states = GaugeMetricFamily(
            "bastion_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            labels=["breaker"],
        )
        for name, state in sorted(self._breakers().items()):
            states.add_metric([name], _BREAKER_VALUE.get(str(state), -1.0))
        yield states
        yield GaugeMetricFamily(
            "bastion_runs_active", "Runs under way in this server.", value=self._active()
        )
        yield GaugeMetricFamily(
            "bastion_approvals_waiting",
            "Runs of this server waiting for a human approval.",
            value=self._waiting(),
        )


class Metrics:
    """The service's metrics; `observe` is a run event sink."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter(
            "bastion_runs", "Runs that ended, by final status.", ["status"], registry=r
        )
        self.step_seconds = Histogram(
            "bastion_step_duration_seconds",
            "Duration of tool calls (plan steps).",
            ["tool", "outcome"],
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.model_seconds = Histogram(
            "bastion_model_call_duration_seconds",
            "Latency of model calls.",
            ["model"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.tokens = Counter(
            "bastion_model_tokens",
            "Model tokens, by model and direction.",
            ["model", "direction"],
            registry=r,
        )
        self.cost = Counter(
            "bastion_model_cost_usd", "Model spend in USD, by model.", ["model"], registry=r
        )
        self.rate_limited = Counter(
            "bastion_rate_limit_rejections",
            "Requests refused by a rate limit (http: the API; run: a run stopped by one).",
            ["where"],
            registry=r,
        )
        self.http_requests = Counter(
            "bastion_http_requests",
            "HTTP requests, by route and status code.",
            ["route", "code"],
            registry=r,
        )
        self._status: dict[str, RunStatus] = {}

    def watch(
        self, *, breakers: Callable[[], Mapping[str, str]], active: Callable[[], int]
    ) -> None:
        """Register the gauges read at scrape time."""
        self.registry.register(_Live(breakers, active, self.waiting))

    def waiting(self) -> int:
        """Runs whose latest status is ``awaiting_approval``."""
        return sum(s is RunStatus.AWAITING_APPROVAL for s in self._status.values())

    def observe(self, event: RunEvent) -> None:
        """Count what `event` reports (a run event sink: never raises on odd data)."""
        data = event.data
        if event.kind is EventKind.MODEL_CALL:
            model = str(data.get("model") or "unknown")
            self.tokens.labels(model, "input").inc(_int(data.get("input_tokens")))
            self.tokens.labels(model, "output").inc(_int(data.get("output_tokens")))
            self.cost.labels(model).inc(float(_decimal(data.get("cost_usd"))))
            self.model_seconds.labels(model).observe(_float(data.get("latency_s")))
        elif event.kind is EventKind.STEP_FINISHED:
            outcome = "ok" if data.get("ok") else str(data.get("error_kind") or "failed")
            tool = str(data.get("tool_name") or "unknown")
            self.step_seconds.labels(tool, outcome).observe(_float(data.get("duration_s")))
        elif event.kind is EventKind.STATUS:
            self._on_status(event)

    def _on_status(self, event: RunEvent) -> None:
        try:
            status = RunStatus(str(event.data.get("status")))
        except ValueError:
            return
        if status.is_terminal:
            self._status.pop(event.run_id, None)
            self.runs.labels(status.value).inc()
            if "rate limit" in str(event.data.get("error") or "").lower():
                self.rate_limited.labels("run").inc()
        else:
            self._status[event.run_id] = status

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


def _int(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) and value >= 0 else 0.0


def _decimal(value: object) -> Decimal:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)
    return amount if amount.is_finite() and amount > 0 else Decimal(0)
