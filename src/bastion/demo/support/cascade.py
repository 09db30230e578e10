"""The demo as a cascade (``bastion demo --cascade``), and what it saved against always-strong.

The demo's models run here and cost nothing, so a saving in dollars needs prices: each tier
*stands for* a hosted model (`STANDS_FOR`: the cheap tier for ``openai:gpt-4o-mini``, the strong
one for ``openai:gpt-4o``), and every call is priced at that model's list price from the price
table (`bastion.cost.PriceTable`, settings first). The tiers are what this machine has
(`choose_cascade`): the embedded 0.5B model under the 1.5B one when both are installed; else a
cheap script (`script_cheap.json`: it plans the simple requests and names a tool that does not
exist for refunds and memory, as a weak model does) under the demo's strong model (the 1.5B, a
configured one, or the full script), so the cascade runs with no weights at all.

`CascadeTally` collects the runs' events (``model_call`` and ``escalate``) as they happen, and
`cascade_report` works out from them alone, never from set figures: calls and tokens per tier,
each escalation with its reason, the cascade's cost, and an estimate of always-strong's: every
call the runs made, priced at the strong tier's price, except a run's planning calls on the cheap
tier before it escalated (a strong model from the start would not have made them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

from bastion.cost.pricing import PriceTable
from bastion.demo.support.app import LOCAL_MODEL, choose_model
from bastion.messages import EventKind, RunEvent
from bastion.models.interface import Usage
from bastion.settings import Settings

#: The hosted models whose list prices the demo's tiers are priced at, cheap first.
STANDS_FOR: Final = ("openai:gpt-4o-mini", "openai:gpt-4o")

#: The cheap tier when no smaller local model is installed (see the module docstring).
CHEAP_SCRIPT_PATH = Path(str(files("bastion.demo.support").joinpath("script_cheap.json")))

#: The fast local model, the cheap tier under the 1.5B one when it is installed.
SMALL_LOCAL_MODEL = "local:qwen2.5-0.5b"


@dataclass(frozen=True, slots=True, kw_only=True)
class CascadeTier:
    """One rung of the demo's cascade."""

    label: str
    model: str
    #: The hosted model whose list price this tier's calls are priced at.
    stands_for: str
    why: str


def choose_cascade(settings: Settings) -> tuple[CascadeTier, CascadeTier]:
    """The demo's cascade on this machine: a cheap tier, then the demo's own model.

    The strong tier is the model the demo plans with anyway (`choose_model`); the cheap one is the
    embedded 0.5B model when the strong one is the embedded 1.5B and the 0.5B is installed too,
    else the cheap script.
    """
    from bastion.models import weights

    strong = choose_model(settings)
    small = weights.CATALOG[SMALL_LOCAL_MODEL.removeprefix("local:")]
    if (
        strong.name == LOCAL_MODEL
        and weights.engine_installed()
        and not weights.missing_parts(small)
    ):
        cheap = CascadeTier(
            label="cheap",
            model=SMALL_LOCAL_MODEL,
            stands_for=STANDS_FOR[0],
            why=f"embedded {small.title}, installed",
        )
    else:
        cheap = CascadeTier(
            label="cheap",
            model=f"scripted:{CHEAP_SCRIPT_PATH}",
            stands_for=STANDS_FOR[0],
            why="a script that plans the simple requests and gets refunds and memory wrong",
        )
    return cheap, CascadeTier(
        label="strong", model=strong.name, stands_for=STANDS_FOR[1], why=strong.why
    )


def with_cascade(settings: Settings, tiers: Sequence[CascadeTier]) -> Settings:
    """`settings` with ``cost.cascade`` set to `tiers`' models, cheap first."""
    cost = settings.cost.model_copy(update={"cascade": [tier.model for tier in tiers]})
    return settings.model_copy(update={"cost": cost})


@dataclass(frozen=True, slots=True, kw_only=True)
class _Call:
    model: str
    input_tokens: int
    output_tokens: int
    #: Why the call was made when not for a plan (``summary``, ``judge``); None for a plan.
    purpose: str | None
    #: Whether the run had already escalated when the call was made.
    after_escalation: bool


@dataclass(slots=True)
class CascadeTally:
    """The model calls and escalations of the demo's runs, from their events (an ``on_event``)."""

    calls: dict[str, list[_Call]] = field(default_factory=dict)
    escalations: list[RunEvent] = field(default_factory=list)

    def __call__(self, event: RunEvent) -> None:
        """Record `event` if it is a model call or an escalation."""
        d = event.data
        if event.kind is EventKind.ESCALATE:
            self.escalations.append(event)
        elif event.kind is EventKind.MODEL_CALL:
            escalated = any(e.run_id == event.run_id for e in self.escalations)
            self.calls.setdefault(event.run_id, []).append(
                _Call(
                    model=str(d.get("model")),
                    input_tokens=_int(d.get("input_tokens")),
                    output_tokens=_int(d.get("output_tokens")),
                    purpose=None if d.get("purpose") is None else str(d.get("purpose")),
                    after_escalation=escalated,
                )
            )


@dataclass(slots=True)
class _Totals:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class TierLine:
    """What one tier did, and cost at its stand-in's list price."""

    tier: CascadeTier
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class EscalationLine:
    """One escalation: which run, from which model to which, and why."""

    run_id: str
    request: str | None
    from_model: str | None
    to_model: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CascadeReport:
    """The cascade's saving against always-strong, from what the runs did."""

    runs: int
    tiers: tuple[TierLine, ...]
    escalations: tuple[EscalationLine, ...]
    #: Calls to models off the cascade (a fallback model): counted here, priced nowhere.
    other_calls: int
    cascade_usd: Decimal
    always_strong_usd: Decimal
    prices_version: str

    @property
    def saving_usd(self) -> Decimal:
        """Always-strong's estimated cost less the cascade's."""
        return self.always_strong_usd - self.cascade_usd

    @property
    def saving_percent(self) -> Decimal | None:
        """The saving as a share of always-strong's cost; None when that is zero."""
        if not self.always_strong_usd:
            return None
        share = self.saving_usd * 100 / self.always_strong_usd
        return share.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def cascade_report(
    tally: CascadeTally,
    tiers: Sequence[CascadeTier],
    prices: PriceTable,
    *,
    requests: Mapping[str, str] | None = None,
) -> CascadeReport:
    """Price what `tally` saw at the tiers' stand-ins' list prices; estimate always-strong's cost.

    Args:
        tally: the runs' model calls and escalations.
        tiers: the cascade, cheap to strong.
        prices: the price table (settings' prices first, then the shipped list prices).
        requests: each run's request message, by run id, to name the escalated runs.

    Raises:
        LookupError: a stand-in model has no price in `prices`.
    """
    by_model = {tier.model: index for index, tier in enumerate(tiers)}
    strong = tiers[-1]
    totals = [_Totals() for _ in tiers]
    other = 0
    cascade_usd = always_strong_usd = Decimal(0)
    escalated = {e.run_id for e in tally.escalations if e.data.get("from_model") is not None}
    for run_id, calls in tally.calls.items():
        for call in calls:
            index = by_model.get(call.model)
            if index is None:
                other += 1
                continue
            usage = Usage(input_tokens=call.input_tokens, output_tokens=call.output_tokens)
            cost = prices.cost(tiers[index].stands_for, usage)
            line = totals[index]
            line.calls += 1
            line.input_tokens += call.input_tokens
            line.output_tokens += call.output_tokens
            line.cost_usd += cost
            cascade_usd += cost
            # A plan on a lower tier, before its run escalated: always-strong would not make it.
            replaced = (
                index < len(tiers) - 1
                and call.purpose is None
                and not call.after_escalation
                and run_id in escalated
            )
            if not replaced:
                always_strong_usd += prices.cost(strong.stands_for, usage)
    named = requests or {}
    return CascadeReport(
        runs=len(tally.calls),
        tiers=tuple(
            TierLine(
                tier=tier,
                calls=line.calls,
                input_tokens=line.input_tokens,
                output_tokens=line.output_tokens,
                cost_usd=line.cost_usd,
            )
            for tier, line in zip(tiers, totals, strict=True)
        ),
        escalations=tuple(
            EscalationLine(
                run_id=e.run_id,
                request=named.get(e.run_id),
                from_model=None if e.data.get("from_model") is None else str(e.data["from_model"]),
                to_model=str(e.data.get("to_model")),
                reason=str(e.data.get("reason")),
            )
            for e in tally.escalations
        ),
        other_calls=other,
        cascade_usd=cascade_usd,
        always_strong_usd=always_strong_usd,
        prices_version=prices.version,
    )


def render_report(report: CascadeReport) -> list[str]:
    """The report as lines of plain text, for the demo's summary."""
    lines = [
        f"Cascade report ({report.runs} runs, from their model_call and escalate events):",
        f"  {'tier':<7}{'model':<28}{'priced as':<20}{'calls':>6}{'in tok':>9}{'out tok':>9}"
        f"{'cost':>13}",
    ]
    for t in report.tiers:
        lines.append(
            f"  {t.tier.label:<7}{_short(t.tier.model):<28}{t.tier.stands_for:<20}{t.calls:>6}"
            f"{t.input_tokens:>9}{t.output_tokens:>9}{_usd(t.cost_usd):>13}"
        )
    if report.other_calls:
        lines.append(f"  {report.other_calls} call(s) to models off the cascade, not priced")
    lines.append(f"  Escalations: {len(report.escalations)}")
    for e in report.escalations:
        what = f'"{e.request}"' if e.request else f"run {e.run_id}"
        moved = f"{_short(e.from_model)} → " if e.from_model else "started on "
        lines.append(f"    {what}: {moved}{_short(e.to_model)}, because {e.reason}")
    percent = report.saving_percent
    share = "" if percent is None else f" ({percent}% of always-strong)"
    stand_ins = ", ".join(f"{t.tier.label}: {t.tier.stands_for}" for t in report.tiers)
    lines += [
        f"  Cascade {_usd(report.cascade_usd)}; always-strong {_usd(report.always_strong_usd)}"
        f" (estimated); saved {_usd(report.saving_usd)}{share}.",
        "  These are not this demo's costs (its models run here, free): they are the list prices"
        f" of the hosted models the tiers stand for ({stand_ins}), from Bastion's price table"
        f" ({report.prices_version}; settings.cost.prices wins). Always-strong: every call priced"
        " at the strong tier's price, without the cheap tier's plans that were escalated.",
    ]
    return lines


def report_json(report: CascadeReport) -> dict[str, Any]:
    """The report as a JSON object (amounts as strings)."""
    return {
        "runs": report.runs,
        "tiers": [
            {
                "tier": t.tier.label,
                "model": t.tier.model,
                "priced_as": t.tier.stands_for,
                "calls": t.calls,
                "input_tokens": t.input_tokens,
                "output_tokens": t.output_tokens,
                "cost_usd": str(t.cost_usd),
            }
            for t in report.tiers
        ],
        "escalations": [
            {
                "run_id": e.run_id,
                "request": e.request,
                "from_model": e.from_model,
                "to_model": e.to_model,
                "reason": e.reason,
            }
            for e in report.escalations
        ],
        "other_calls": report.other_calls,
        "cascade_usd": str(report.cascade_usd),
        "always_strong_usd": str(report.always_strong_usd),
        "saving_usd": str(report.saving_usd),
        "prices_version": report.prices_version,
    }


def describe_tiers(tiers: Iterable[CascadeTier]) -> str:
    """One line naming the tiers, cheap first, and why each."""
    return " → ".join(
        f"{_short(t.model)} ({t.label}, priced as {t.stands_for}: {t.why})" for t in tiers
    )


def _short(model: str | None) -> str:
    """A scripted model's name without its path (the file name says which script)."""
    if model is None:
        return "-"
    provider, _, rest = model.partition(":")
    return f"scripted:{Path(rest).name}" if provider == "scripted" else model


def _usd(amount: Decimal) -> str:
    return f"${amount.quantize(Decimal('0.00001'), rounding=ROUND_HALF_UP)}"


def _int(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0
