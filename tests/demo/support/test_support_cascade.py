"""The demo as a cascade: tiers from what is installed, a saving report that follows the runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bastion.cost.pricing import PriceTable
from bastion.demo.support import cascade as demo_cascade
from bastion.demo.support.app import LOCAL_MODEL, SCRIPT_PATH, build
from bastion.demo.support.cascade import (
    CHEAP_SCRIPT_PATH,
    STANDS_FOR,
    CascadeTally,
    CascadeTier,
    cascade_report,
    choose_cascade,
    render_report,
    report_json,
    with_cascade,
)
from bastion.demo.support.requests import DEMO_REQUESTS
from bastion.messages import AgentRequest, EventKind, RunEvent, RunStatus
from bastion.models import weights
from bastion.models.interface import Usage
from bastion.settings import CostSettings, ModelPrice, Settings, load_settings

CHEAP = CascadeTier(label="cheap", model="local:a", stands_for=STANDS_FOR[0], why="test")
STRONG = CascadeTier(label="strong", model="local:b", stands_for=STANDS_FOR[1], why="test")
#: Round prices (USD per million tokens), so that the expected figures read easily.
PRICES = PriceTable(
    CostSettings(
        prices={
            STANDS_FOR[0]: ModelPrice(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)),
            STANDS_FOR[1]: ModelPrice(input_per_mtok=Decimal(10), output_per_mtok=Decimal(20)),
        }
    )
)
#: The demo requests a weak model gets wrong: the cheap script names a tool that does not exist.
HARD = {
    "Refund 20.00 on order A1003, the customer was charged twice for shipping",
    "Please refund my order A1002",
    "Refund 250.00 on order A1007, the espresso machine arrived broken",
    "Please contact me by email from now on, not by phone",
    "My coffee grinder stopped working, I need a person",
    "Order A1003 was paid 112.05 after a 10% voucher and the customer returns the coffee scale: "
    "work out the refund pro rata",
}


class Events:
    """Builds one run's events in order."""

    def __init__(self, tally: CascadeTally, run_id: str) -> None:
        self.tally, self.run_id, self.seq = tally, run_id, 0

    def emit(self, kind: EventKind, **data: Any) -> None:
        self.seq += 1
        at = datetime(2026, 11, 27, tzinfo=UTC)
        self.tally(RunEvent(run_id=self.run_id, seq=self.seq, kind=kind, at=at, data=data))

    def call(self, model: str, tokens_in: int, tokens_out: int, **data: Any) -> None:
        self.emit(
            EventKind.MODEL_CALL,
            model=model,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost_usd="0",
            **data,
        )


def usd(tokens_in: int, tokens_out: int, price_in: int, price_out: int) -> Decimal:
    return Decimal(tokens_in * price_in + tokens_out * price_out) / 1_000_000


def test_the_report_counts_each_tier_and_prices_it_at_its_stand_in() -> None:
    tally = CascadeTally()
    easy = Events(tally, "easy")
    easy.emit(EventKind.STATUS, status="planning")
    easy.call("local:a", 1000, 100)
    hard = Events(tally, "hard")
    hard.call("local:a", 2000, 200)  # a bad plan...
    hard.call("local:a", 2000, 200)  # ...and its repair
    hard.call("local:a", 300, 30, purpose="summary")  # not a plan: always-strong makes it too
    hard.emit(EventKind.ESCALATE, from_model="local:a", to_model="local:b", reason="bad plan")
    hard.call("local:b", 3000, 300)
    ruled = Events(tally, "ruled")
    ruled.emit(EventKind.ESCALATE, to_model="local:b", reason="the request matched a rule")
    ruled.call("local:b", 500, 50)
    ruled.call("openai:elsewhere", 9, 9)  # a fallback model: off the cascade

    report = cascade_report(tally, [CHEAP, STRONG], PRICES, requests={"hard": "Refund it"})

    cheap, strong = report.tiers
    assert (cheap.calls, cheap.input_tokens, cheap.output_tokens) == (4, 5300, 530)
    assert cheap.cost_usd == usd(5300, 530, 1, 2)
    assert (strong.calls, strong.input_tokens, strong.output_tokens) == (2, 3500, 350)
    assert strong.cost_usd == usd(3500, 350, 10, 20)
    assert report.cascade_usd == cheap.cost_usd + strong.cost_usd
    # Always-strong: every call at the strong price but the hard run's two cheap plans.
    assert report.always_strong_usd == usd(1000 + 300 + 3000 + 500, 100 + 30 + 300 + 50, 10, 20)
    assert report.saving_usd == report.always_strong_usd - report.cascade_usd
    assert report.saving_percent == Decimal("16.0")  # 0.00924 of 0.0576
    assert (report.runs, report.other_calls) == (3, 1)
    assert [(e.request, e.from_model, e.to_model, e.reason) for e in report.escalations] == [
        ("Refund it", "local:a", "local:b", "bad plan"),
        (None, None, "local:b", "the request matched a rule"),
    ]


def test_the_prices_come_from_the_price_table() -> None:
    tally = CascadeTally()
    Events(tally, "r").call("local:a", 1_000_000, 0)
    shipped = PriceTable()

    listed = cascade_report(tally, [CHEAP, STRONG], shipped)
    changed = cascade_report(tally, [CHEAP, STRONG], PRICES)

    assert listed.cascade_usd == shipped.cost(STANDS_FOR[0], Usage(input_tokens=1_000_000))
    assert listed.always_strong_usd == shipped.cost(STANDS_FOR[1], Usage(input_tokens=1_000_000))
    assert (changed.cascade_usd, changed.always_strong_usd) == (Decimal(1), Decimal(10))
    assert listed.prices_version == shipped.version


def test_no_calls_make_an_empty_report() -> None:
    report = cascade_report(CascadeTally(), [CHEAP, STRONG], PRICES)

    assert report.cascade_usd == report.always_strong_usd == report.saving_usd == 0
    assert report.saving_percent is None
    assert "  Escalations: 0" in render_report(report)


def test_a_stand_in_without_a_price_is_refused() -> None:
    tally = CascadeTally()
    Events(tally, "r").call("local:a", 10, 1)
    unpriced = CascadeTier(label="cheap", model="local:a", stands_for="openai:nope", why="t")

    with pytest.raises(LookupError, match="openai:nope"):
        cascade_report(tally, [unpriced, STRONG], PRICES)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch):
    """Pretend that the engine and exactly the given local models are installed."""

    def install(*keys: str) -> None:
        monkeypatch.setattr(weights, "engine_installed", lambda: True)
        monkeypatch.setattr(
            weights,
            "missing_parts",
            lambda spec: [] if spec.key in keys else [f"{spec.key}-part1"],
        )

    return install


def test_both_local_models_make_a_local_cascade(installed, tmp_path: Path) -> None:
    installed("qwen2.5-1.5b", "qwen2.5-0.5b")

    cheap, strong = choose_cascade(Settings(data_dir=tmp_path))

    assert (cheap.model, strong.model) == ("local:qwen2.5-0.5b", LOCAL_MODEL)
    assert (cheap.stands_for, strong.stands_for) == ("openai:gpt-4o-mini", "openai:gpt-4o")


def test_only_the_big_model_is_under_the_cheap_script(installed, tmp_path: Path) -> None:
    installed("qwen2.5-1.5b")

    cheap, strong = choose_cascade(Settings(data_dir=tmp_path))

    assert (cheap.model, strong.model) == (f"scripted:{CHEAP_SCRIPT_PATH}", LOCAL_MODEL)


def test_with_no_weights_both_tiers_are_scripts(installed, tmp_path: Path) -> None:
    installed()

    cheap, strong = choose_cascade(Settings(data_dir=tmp_path))

    assert (cheap.model, strong.model) == (
        f"scripted:{CHEAP_SCRIPT_PATH}",
        f"scripted:{SCRIPT_PATH}",
    )


async def test_the_scripted_demo_cascade_escalates_the_hard_requests(tmp_path: Path) -> None:
    base = load_settings(
        data_dir=tmp_path,
        model={"name": f"scripted:{SCRIPT_PATH}"},
        durable={"enabled": False},
        gate={"approval_ttl_s": 0.05},  # nobody approves the refund above the cap: don't wait
    )
    tiers = choose_cascade(base)
    settings = with_cascade(base, tiers)
    tally = CascadeTally()
    events: list[RunEvent] = []

    def record(event: RunEvent) -> None:
        events.append(event)
        tally(event)

    asked = [
        AgentRequest(user_id=r.user_id, session_id=r.session_id, message=r.message)
        for r in DEMO_REQUESTS
    ]
    async with build(settings) as system:
        responses = [await system.run(request, on_event=record) for request in asked]
    report = cascade_report(
        tally, tiers, PriceTable(settings.cost), requests={r.run_id: r.message for r in asked}
    )

    assert all(r.status is RunStatus.COMPLETED for r in responses), [r.error for r in responses]
    assert {e.request for e in report.escalations} == HARD
    assert len(report.escalations) == len(HARD)
    assert all(e.reason == "its plan failed validation after repair" for e in report.escalations)
    for request, response in zip(asked, responses, strict=True):
        expected = tiers[1] if request.message in HARD else tiers[0]
        assert response.model == expected.model, request.message
    calls = [e for e in events if e.kind is EventKind.MODEL_CALL]
    for line in report.tiers:
        mine = [e for e in calls if e.data["model"] == line.tier.model]
        assert line.calls == len(mine)
        assert line.input_tokens == sum(e.data["input_tokens"] for e in mine)
        assert line.cost_usd == sum(
            PriceTable().cost(
                line.tier.stands_for,
                Usage(input_tokens=e.data["input_tokens"], output_tokens=e.data["output_tokens"]),
            )
            for e in mine
        )
    assert 0 < report.cascade_usd < report.always_strong_usd


def test_the_demo_prints_the_cascade_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion.cli.main import main

    monkeypatch.setenv("BASTION_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BASTION_MODEL__NAME", f"scripted:{SCRIPT_PATH}")

    assert main(["demo", "--cascade"]) == 0

    out = capsys.readouterr().out
    assert "Planning with a cascade: scripted:script_cheap.json (cheap" in out
    assert f"Escalations: {len(HARD)}" in out
    assert "Please refund my order A1002" in out.split("Cascade report")[1]
    assert "list prices of the hosted models the tiers stand for" in out
    assert "cheap: openai:gpt-4o-mini, strong: openai:gpt-4o" in out
    assert "saved $" in out


def test_the_demo_json_ends_with_the_cascade_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion.cli.main import main

    monkeypatch.setenv("BASTION_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BASTION_MODEL__NAME", f"scripted:{SCRIPT_PATH}")

    assert main(["demo", "--cascade", "--json"]) == 0

    last = json.loads(capsys.readouterr().out.splitlines()[-1])["cascade_report"]
    assert len(last["escalations"]) == len(HARD)
    assert [t["priced_as"] for t in last["tiers"]] == list(STANDS_FOR)
    saving = Decimal(last["always_strong_usd"]) - Decimal(last["cascade_usd"])
    assert Decimal(last["saving_usd"]) == saving > 0


def test_report_json_matches_the_report() -> None:
    tally = CascadeTally()
    Events(tally, "r").call("local:a", 10, 1)
    report = cascade_report(tally, [CHEAP, STRONG], PRICES)

    data = report_json(report)

    assert data["cascade_usd"] == str(report.cascade_usd)
    assert data["tiers"][0]["calls"] == 1
    assert demo_cascade.describe_tiers([CHEAP, STRONG]).startswith("local:a (cheap, priced as")
