"""Benchmark the embedded local models on the support demo's planning.

For each model: load time (verify the weights' sha256 and load them; the one-time assembly is
timed apart), the first plan (it pays for the system prompt's prefill) and warm plans, output
tokens per second (end to end, warm), the process's RSS, and plan quality on the support requests
of `CASES`: the share whose first step names a right tool and, where the request names an order,
that order's id. Plans come from the real `ModelPlanner` with the demo's tools and prompt, as each
caller sees them (a customer has no refund tool). Every plan's validity, repair rounds and
finish reason are counted too.

Each model runs in its own process (RSS is per model), ``--runs`` times; the figures printed are
the medians. Run from the repository root:

    .venv/bin/python bench/local_model.py                       # every installed model, 3 runs
    .venv/bin/python bench/local_model.py --model qwen2.5-0.5b --runs 1 --verbose
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.clock import SystemClock
from bastion.demo.support.app import PLANNER_PROMPT
from bastion.demo.support.data import ensure_database
from bastion.demo.support.policies import PRINCIPALS
from bastion.demo.support.tools import make_tools
from bastion.errors import BastionError
from bastion.memory.interface import MemoryContext
from bastion.messages import AgentRequest
from bastion.models import weights
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse
from bastion.models.loader import load_model
from bastion.planner.default import ModelPlanner
from bastion.planner.interface import PlanningContext
from bastion.settings import LocalModelSettings, PlannerSettings, Settings

ORDER = ("lookup_order", "track_shipment")


@dataclass(frozen=True)
class Case:
    """A support request, who asks it, the right first tools and the order id it names."""

    user: str
    message: str
    tools: tuple[str, ...]
    order: str | None = None


#: 24 requests: orders (own, staff), how-to questions, hand-overs, refunds by a lead.
CASES: tuple[Case, ...] = (
    Case("c1", "Where is my order A1001?", ORDER, "A1001"),
    Case("c1", "How do I reset my password?", ("search_kb",)),
    Case("c2", "My parcel arrived damaged, I want to talk to a human", ("escalate_to_human",)),
    Case("c1", "Please refund my order A1002", ("escalate_to_human", "lookup_order")),
    Case("c3", "Can I still cancel my order A1005?", ("lookup_order", "search_kb")),
    Case("c4", "Has my espresso machine order A1007 shipped yet?", ORDER, "A1007"),
    Case("c2", "What did I buy in order A1004?", ("lookup_order",), "A1004"),
    Case("c3", "Which carrier is delivering order A1006?", ORDER, "A1006"),
    Case("c1", "Do you ship to Switzerland?", ("search_kb",)),
    Case("c2", "How long does a refund take to reach my bank?", ("search_kb",)),
    Case("c3", "I need to speak with a real person, please.", ("escalate_to_human",)),
    Case("c4", "Which payment methods do you accept?", ("search_kb",)),
    Case("c1", "Is there a warranty on coffee grinders?", ("search_kb",)),
    Case("c4", "Can I buy a gift card for a friend?", ("search_kb",)),
    Case("c2", "When will order A1003 arrive?", ORDER, "A1003"),
    Case("c3", "You charged me twice! Get me a manager now.", ("escalate_to_human",)),
    Case("c1", "I moved house: how do I update my shipping address?", ("search_kb",)),
    Case("c4", "What is the total of my order A1008?", ("lookup_order",), "A1008"),
    Case(
        "lead",
        "Refund 20.00 on order A1003, the customer was charged twice for shipping",
        ("issue_refund",),
        "A1003",
    ),
    Case(
        "lead",
        "Refund 15.50 on order A1004, the carafe lid was chipped",
        ("issue_refund",),
        "A1004",
    ),
    Case("lead", "Look up order A1008 for me", ("lookup_order",), "A1008"),
    Case("lead", "Track the parcel of order A1007", ("track_shipment",), "A1007"),
    Case("lead", "What is our return policy? A customer asks.", ("search_kb",)),
    Case("c1", "Where is my order A1002 and when did it arrive?", ORDER, "A1002"),
)


class Recording(ChatModel):
    """Keeps every response, to count repair rounds and finish reasons."""

    def __init__(self, wrapped: ChatModel) -> None:
        self.wrapped = wrapped
        self.responses: list[ChatResponse] = []

    @property
    def name(self) -> str:
        return self.wrapped.name

    async def complete(self, request: ChatRequest) -> ChatResponse:
        response = await self.wrapped.complete(request)
        self.responses.append(response)
        return response


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _plan_all(model: Recording, db: Path, verbose: bool) -> list[dict[str, Any]]:
    tools = make_tools(db)
    principals = {p.id: p for p in PRINCIPALS}
    planner = ModelPlanner(settings=PlannerSettings(), system_prompt=PLANNER_PROMPT)
    rows = []
    for case in CASES:
        principal = principals[case.user]
        # The demo's principals hold plain scopes (no wildcards): a tool is offered if all are held.
        visible = tuple(t for t in tools if set(t.required_permissions) <= principal.scopes)
        context = PlanningContext(
            request=AgentRequest(user_id=case.user, session_id="bench", message=case.message),
            tools=visible,
            memory=MemoryContext(),
        )
        before = len(model.responses)
        started = time.perf_counter()
        try:
            plan = await planner.plan(context, model=model)
            steps = [(s.tool_name, dict(s.tool_args)) for s in plan.steps]
            error = None
        except BastionError as exc:
            steps, error = [], str(exc)
        elapsed = time.perf_counter() - started
        calls = model.responses[before:]
        first_tool, first_args = steps[0] if steps else (None, {})
        right_tool = first_tool in case.tools
        named = str(first_args.get("order_id", "")).strip().upper()
        right_id = case.order is None or named == case.order
        rows.append(
            {
                "message": case.message,
                "seconds": elapsed,
                "calls": len(calls),
                "valid": error is None,
                "stop": all(r.finish_reason == "stop" for r in calls),
                "output_tokens": sum(r.usage.output_tokens for r in calls),
                "input_tokens": sum(r.usage.input_tokens for r in calls),
                "right": right_tool and right_id,
                "steps": steps,
            }
        )
        if verbose:
            mark = "ok " if right_tool and right_id else "BAD"
            print(f"  {mark} {elapsed:5.1f}s {case.user:>4} {case.message[:50]!r} -> {steps}")
    return rows


def run_one(key: str, verbose: bool) -> dict[str, Any]:
    """Measure one model in this process."""
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        cache = Path(tmp) / "models"
        spec = weights.CATALOG[key]
        started = time.perf_counter()
        weights.ensure_weights(spec, cache)
        assemble_s = time.perf_counter() - started
        settings = Settings(data_dir=Path(tmp), local=LocalModelSettings(cache_dir=cache))
        rss_before = _rss_mb()
        started = time.perf_counter()
        model = Recording(load_model(f"local:{key}", settings=settings, clock=SystemClock()))
        load_s = time.perf_counter() - started
        db = ensure_database(Path(tmp) / "support.db")
        rows = asyncio.run(_plan_all(model, db, verbose))
        rss = _rss_mb()
    warm = rows[1:]
    warm_tokens = sum(r["output_tokens"] for r in warm)
    warm_seconds = sum(r["seconds"] for r in warm)
    return {
        "model": key,
        "assemble_s": assemble_s,
        "load_s": load_s,
        "first_plan_s": rows[0]["seconds"],
        "warm_plan_s": statistics.median(r["seconds"] for r in warm),
        "warm_plan_max_s": max(r["seconds"] for r in warm),
        "tokens_per_s": warm_tokens / warm_seconds,
        "rss_mb": rss,
        "rss_model_mb": rss - rss_before,
        "cases": len(rows),
        "right": sum(r["right"] for r in rows),
        "valid": sum(r["valid"] for r in rows),
        "no_repair": sum(r["calls"] == 1 for r in rows),
        "stop": sum(r["stop"] for r in rows),
        "prompt_tokens_first": rows[0]["input_tokens"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=list(weights.CATALOG))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.model[0], args.verbose)))
        return
    keys = args.model or [
        key for key, spec in weights.CATALOG.items() if not weights.missing_parts(spec)
    ]
    for key in keys:
        results = []
        for run in range(args.runs):
            command = [sys.executable, __file__, "--child", "--model", key]
            if args.verbose:
                command.append("--verbose")
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            lines = done.stdout.strip().splitlines()
            if args.verbose:
                print("\n".join(lines[:-1]))
            results.append(json.loads(lines[-1]))
            print(f"{key} run {run + 1}: {results[-1]}", file=sys.stderr)
        median = {
            name: statistics.median(r[name] for r in results)
            for name in results[0]
            if name != "model"
        }
        print(
            f"| local:{key} | {median['load_s']:.1f} s (+{median['assemble_s']:.1f} s once) |"
            f" {median['first_plan_s']:.1f} s | {median['warm_plan_s']:.1f} s"
            f" (max {median['warm_plan_max_s']:.1f}) | {median['tokens_per_s']:.0f} |"
            f" {median['rss_mb']:.0f} MB | {median['right']:.0f}/{median['cases']:.0f}"
            f" ({median['right'] / median['cases']:.0%}) | {median['valid']:.0f}"
            f" / {median['no_repair']:.0f} / {median['stop']:.0f} |"
        )


if __name__ == "__main__":
    main()
