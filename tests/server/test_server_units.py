"""Pure parts of the server: error mapping, cursors, metrics from odd events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bastion.errors import (
    BudgetExceeded,
    ModelUnavailable,
    NotAuthenticated,
    PermissionDenied,
    RateLimited,
)
from bastion.messages import EventKind, RunEvent
from bastion.server.errors import from_bastion_error
from bastion.server.metrics import Metrics
from bastion.server.routes.runs import idempotent_run_id
from bastion.server.store import BadCursor, decode_cursor, encode_cursor


@pytest.mark.parametrize(
    ("exc", "status", "type_"),
    [
        (NotAuthenticated("who?"), 401, "not_authenticated"),
        (PermissionDenied("no"), 403, "permission_denied"),
        (RateLimited("slow", retry_after_s=2.4), 429, "rate_limited"),
        (BudgetExceeded("broke"), 402, "budget_exceeded"),
        (ModelUnavailable("down"), 500, "internal_error"),
    ],
)
def test_bastion_errors_map_to_typed_statuses(exc, status, type_):
    error = from_bastion_error(exc)
    assert (error.status, error.type) == (status, type_)


def test_rate_limited_sets_retry_after():
    assert from_bastion_error(RateLimited("slow", retry_after_s=2.4)).headers == {
        "Retry-After": "2"
    }


def test_cursors_round_trip_and_foreign_ones_are_refused():
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "run_x")) == (at, "run_x")
    for bad in ("%%%", "bm90IGpzb24", encode_cursor(at, "r")[:-3], "WyIyMDI2LTAxLTAxIiwgInIiXQ"):
        with pytest.raises(BadCursor):
            decode_cursor(bad)


def test_idempotent_run_ids_depend_on_principal_and_key():
    assert idempotent_run_id("a", "k") == idempotent_run_id("a", "k")
    assert idempotent_run_id("a", "k") != idempotent_run_id("b", "k")


def test_metrics_ignore_odd_event_data_and_track_approvals_waiting():
    metrics = Metrics()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    odd = [
        RunEvent(
            run_id="r",
            seq=1,
            kind=EventKind.MODEL_CALL,
            at=at,
            data={"input_tokens": "many", "cost_usd": "abc", "latency_s": -1},
        ),
        RunEvent(run_id="r", seq=2, kind=EventKind.STATUS, at=at, data={"status": "weird"}),
        RunEvent(
            run_id="r", seq=3, kind=EventKind.STATUS, at=at, data={"status": "awaiting_approval"}
        ),
    ]
    for e in odd:
        metrics.observe(e)
    assert metrics.waiting() == 1
    metrics.observe(
        RunEvent(
            run_id="r",
            seq=4,
            kind=EventKind.STATUS,
            at=at,
            data={"status": "aborted", "error": "Rate limit of user u1"},
        )
    )
    assert metrics.waiting() == 0
    text = metrics.render().decode()
    assert 'bastion_runs_total{status="aborted"} 1.0' in text
    assert 'bastion_rate_limit_rejections_total{where="run"} 1.0' in text
    assert 'bastion_model_tokens_total{direction="input",model="unknown"} 0.0' in text
