"""Bastion's overhead against a bare asyncio floor and four agent frameworks, side by side.

Usage::

    python bench/agents/suite.py            # full: peers too, 5 rounds, 1,000 and 10,000 in flight
    python bench/agents/suite.py --quick    # CI smoke: Bastion and the floor only, small counts

(`make bench` and `make bench-quick`.) Writes every measurement as a JSON line under
``bench/out/`` and rewrites the section between the ``bench:agents`` markers of
``bench/RESULTS.md`` (the rest of the file is left alone).

The workload is the same for everyone: a fake model with a fixed latency (0 ms for the overhead,
50 ms for throughput and memory) asks for one call of a trivial async tool per step, 10 steps,
then gives a final answer. The floor is that loop by hand in bare asyncio (`floor.py`); each
framework has an adapter in this folder, each peer runs in its own virtualenv made by this script
from PyPI with pinned versions (``bench/peers/*.txt``, venvs under ``bench/.venvs/``).

Bastion plans all steps in one model call and words the answer from the tool results, so it makes
1 model call per run where the others make 11 (10 tool calls + the answer); its fake waits 11
times the latency in that one call, so that the model's time, and the ideal run (0.55 s at 50 ms),
are the same for everyone (`bastion_agent.py`).

Figures, each against the floor measured in the same round (configurations interleaved, in a new
random order each round; median, min and max over the rounds):

* overhead: per-step time above the floor's, in µs (a run's time / 10 steps), 0 ms model;
* throughput: steps/s with 1 and 100 runs in flight, 50 ms model;
* memory: peak RSS over the baseline with N runs started at once (a fresh process per
  configuration and N), 50 ms model, and how long those N runs took against the ideal 0.55 s
  (the durable configurations up to 1,000 runs: 10,000 would take the better part of an hour);
* Bastion only: the checkpoint cost per step (durable SQLite / PostgreSQL against the same
  system with durability off, store on disk), the cold start of ``bastion run`` (process start to
  the first model call), and a profile of the in-memory configuration (``bench/profiles/``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
VENVS = BENCH / ".venvs"
PEERS = BENCH / "peers"
OUT = BENCH / "out"
PROFILES = BENCH / "profiles"
RESULTS = BENCH / "RESULTS.md"
START_PREFIX = "<!-- bench:agents:start"
START = f"{START_PREFIX} (rewritten by bench/agents/suite.py; edit outside the markers) -->"
END = "<!-- bench:agents:end -->"
STEPS = 10
LATENCY_MS = 50.0
IDEAL_RUN_S = (STEPS + 1) * LATENCY_MS / 1000


@dataclass(frozen=True)
class Config:
    """One configuration: the adapter that runs it, and the venv it runs in (None: Bastion's)."""

    name: str
    adapter: str
    venv: str | None = None
    about: str = ""
    #: The most runs it is asked to hold in flight (the memory figures).
    max_in_flight: int = 10_000


FLOOR = Config("floor", "floor", about="hand-written loop, bare asyncio")
BASTION = (
    Config("bastion-memory", "bastion_agent:memory", about="durability off, store on tmpfs"),
    Config("bastion-disk", "bastion_agent:disk", about="durability off, store on disk"),
    Config(
        "bastion-sqlite",
        "bastion_agent:sqlite",
        about="durable, SQLite (the default)",
        max_in_flight=1_000,
    ),
    Config(
        "bastion-postgres",
        "bastion_agent:postgres",
        about="durable, PostgreSQL",
        max_in_flight=1_000,
    ),
)
PEER_CONFIGS = (
    Config("langgraph", "langgraph_agent", "langgraph", "prebuilt ReAct agent"),
    Config("openai-agents", "openai_agents_agent", "openai_agents", "tracing off"),
    Config("pydantic-ai", "pydantic_ai_agent", "pydantic_ai", "FunctionModel"),
    Config("smolagents", "smolagents_agent", "smolagents", "ToolCallingAgent, threads"),
)
ALL = (FLOOR, *BASTION, *PEER_CONFIGS)


@dataclass(frozen=True)
class Mode:
    """How much to measure."""

    rounds: int
    overhead_runs: int
    warmup: int
    serial_runs: int
    concurrent_runs: int
    concurrency: int
    rss_runs: tuple[int, ...]
    rss_rounds: int
    cold_starts: int
    profile_runs: int
    timeout_s: float


FULL = Mode(5, 200, 20, 3, 100, 100, (1_000, 10_000), 3, 5, 300, 1800.0)
QUICK = Mode(1, 10, 2, 1, 10, 10, (50,), 1, 1, 0, 300.0)


class BenchError(Exception):
    """A measurement failed; the message says which and why."""


# -- environments --------------------------------------------------------------------------------


def python_for(config: Config) -> Path:
    """The interpreter that runs `config`: Bastion's own, or the peer's venv."""
    if config.venv is None:
        return Path(sys.executable)
    return VENVS / config.venv / "bin" / "python"


def ensure_venv(config: Config) -> None:
    """Create the peer's venv from its pinned requirements when missing or when they changed."""
    assert config.venv is not None
    requirements = PEERS / f"{config.venv}.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    venv = VENVS / config.venv
    stamp = venv / ".bench-installed"
    if stamp.is_file() and stamp.read_text() == digest:
        return
    print(f"bench: installing {config.name} into {venv} ({requirements.name})", file=sys.stderr)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(requirements)], check=True)
    stamp.write_text(digest)


# -- running measurements ------------------------------------------------------------------------


def postgres_reachable() -> bool:
    """Whether PostgreSQL listens on 127.0.0.1:5432 (where `bastion_agent` creates its database)."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def measure(config: Config, plan: list[dict[str, Any]], timeout_s: float) -> list[dict[str, Any]]:
    """Run `plan` in a fresh process of `config`'s interpreter; its JSON lines, tagged.

    Raises:
        BenchError: the process failed, timed out or printed no result.
    """
    command = [
        str(python_for(config)),
        str(HERE / "harness.py"),
        "--adapter",
        config.adapter,
        "--plan",
        json.dumps(plan),
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{config.name}: timed out after {timeout_s:.0f} s") from exc
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or len(lines) != len(plan):
        tail = done.stderr.strip().splitlines()[-3:]
        raise BenchError(f"{config.name}: exit {done.returncode}: {' | '.join(tail)}")
    return [{"config": config.name, **line} for line in lines]


def cold_start(timeout_s: float) -> float:
    """Seconds from starting ``bastion run`` to its first model call (default settings, durable).

    Raises:
        BenchError: the command failed or never called the model.
    """
    bastion = Path(sys.executable).parent / "bastion"
    with tempfile.TemporaryDirectory() as tmp:
        mark = Path(tmp) / "first-call"
        env = {
            **os.environ,
            "PYTHONPATH": str(HERE),
            "BASTION_DATA_DIR": str(Path(tmp) / "data"),
            "BENCH_FIRST_CALL_FILE": str(mark),
        }
        command = [str(bastion), "run", "go", "--app", "bastion_agent:app", "--user", "bench"]
        started = time.time()
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
        if done.returncode != 0 or not mark.is_file():
            raise BenchError(f"bastion run: exit {done.returncode}: {done.stderr.strip()[-300:]}")
        return float(mark.read_text()) - started


def overhead_plan(mode: Mode) -> list[dict[str, Any]]:
    """One round's timed measurements: overhead (0 ms), then throughput at 1 and 100 (50 ms)."""
    return [
        {"mode": "overhead", "runs": mode.overhead_runs, "warmup": mode.warmup},
        {"mode": "throughput", "runs": mode.serial_runs, "concurrency": 1, "warmup": 0,
         "latency_ms": LATENCY_MS},
        {"mode": "throughput", "runs": mode.concurrent_runs, "concurrency": mode.concurrency,
         "warmup": 0,
         "latency_ms": LATENCY_MS},
    ]  # fmt: skip


def run_suite(  # noqa: C901 (one loop per kind of measurement, kept in one place)
    mode: Mode, configs: list[Config], out: Path
) -> list[dict[str, Any]]:
    """Every measurement of the suite, interleaved, each written to `out` as it lands."""
    records: list[dict[str, Any]] = []

    def keep(record: dict[str, Any]) -> None:
        records.append(record)
        with out.open("a") as stream:
            stream.write(json.dumps(record) + "\n")

    def attempt(config: Config, plan: list[dict[str, Any]], **tags: Any) -> None:
        try:
            for line in measure(config, plan, mode.timeout_s):
                keep({**line, **tags})
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            keep({"config": config.name, "error": str(exc), **plan[0], **tags})

    for round_no in range(mode.rounds):
        order = configs[:]
        random.Random(round_no).shuffle(order)
        for config in order:
            print(f"bench: round {round_no + 1}/{mode.rounds}: {config.name}", file=sys.stderr)
            attempt(config, overhead_plan(mode), round=round_no)
    for runs in mode.rss_runs:
        for round_no in range(mode.rss_rounds if runs <= 1_000 else 1):
            order = configs[:]
            random.Random(1000 + round_no).shuffle(order)
            for config in (c for c in order if runs <= c.max_in_flight):
                print(f"bench: {runs} in flight: {config.name}", file=sys.stderr)
                plan = [{"mode": "rss", "runs": runs, "latency_ms": LATENCY_MS}]
                attempt(config, plan, round=round_no)
    if any(config.name == "bastion-sqlite" for config in configs):
        for round_no in range(mode.cold_starts):
            try:
                keep({"config": "bastion-sqlite", "mode": "cold_start", "round": round_no,
                      "seconds": round(cold_start(mode.timeout_s), 4)})  # fmt: skip
            except (BenchError, subprocess.TimeoutExpired) as exc:
                keep({"config": "bastion-sqlite", "mode": "cold_start", "error": str(exc)})
    if mode.profile_runs:
        PROFILES.mkdir(exist_ok=True)
        for config in configs:
            if config.name in ("bastion-memory", "bastion-sqlite"):
                target = PROFILES / f"{config.name}.txt"
                plan = [{"mode": "profile", "runs": mode.profile_runs, "out": str(target)}]
                attempt(config, plan)
    return records


# -- summary -------------------------------------------------------------------------------------


def _spread(values: list[float], digits: int = 1) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def _key(record: dict[str, Any]) -> tuple[str, str, int, Any]:
    mode = record["mode"]
    size = record.get("concurrency", 0) if mode == "throughput" else record.get("runs", 0)
    return (
        record["config"],
        mode,
        int(size) if mode in ("throughput", "rss") else 0,
        record.get("round"),
    )


def _first(records: list[dict[str, Any]], name: str, field: str) -> Any:
    return next((r[field] for r in records if r["config"] == name and field in r), None)


def _timed(by: dict[tuple[str, str, int, Any], dict[str, Any]], name: str) -> dict[str, Any]:
    """Overhead and throughput of `name`, each round against the floor of the same round."""
    rounds = sorted({k[3] for k in by if k[1] == "overhead"})
    levels = sorted({k[2] for k in by if k[1] == "throughput"})
    over, ratio = [], []
    tput: dict[int, list[float]] = defaultdict(list)
    tput_ratio: dict[int, list[float]] = defaultdict(list)
    for rnd in rounds:
        mine, floor = by.get((name, "overhead", 0, rnd)), by.get(("floor", "overhead", 0, rnd))
        if mine and floor:
            over.append((mine["run_us"] - floor["run_us"]) / STEPS)
            ratio.append(mine["run_us"] / floor["run_us"])
        for c in levels:
            mine, floor = (
                by.get((name, "throughput", c, rnd)),
                by.get(("floor", "throughput", c, rnd)),
            )
            if mine and floor:
                tput[c].append(mine["steps_per_s"])
                tput_ratio[c].append(mine["steps_per_s"] / floor["steps_per_s"])
    out: dict[str, Any] = {"step_overhead_us": _spread(over), "run_time_ratio": _spread(ratio, 2)}
    out["throughput"] = {
        str(c): {"steps_per_s": _spread(tput[c]), "ratio": _spread(tput_ratio[c], 3)}
        for c in levels
    }
    return out


def _memory(records: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """RSS and time of `name`'s runs in flight, per count, the KiB per run against the floor's."""
    out: dict[str, Any] = {}
    rss = [r for r in records if r["config"] == name and r["mode"] == "rss"]
    for runs in sorted({r["runs"] for r in rss}):
        ok = [r for r in rss if r["runs"] == runs and "error" not in r]
        floor = [
            r["kib_per_run"]
            for r in records
            if r["config"] == "floor"
            and r["mode"] == "rss"
            and r["runs"] == runs
            and "error" not in r
        ]
        if not ok:
            out[str(runs)] = {"error": next(r["error"] for r in rss if r["runs"] == runs)}
            continue
        kib = statistics.median(r["kib_per_run"] for r in ok)
        floor_kib = statistics.median(floor) if floor else None
        out[str(runs)] = {
            "in_flight_mib": _spread([r["in_flight_mib"] for r in ok]),
            "peak_mib": _spread([r["peak_mib"] for r in ok]),
            "kib_per_run": round(kib, 1),
            "kib_ratio": round(kib / floor_kib, 2) if floor_kib else None,
            "x_ideal": _spread([r["elapsed_s"] / IDEAL_RUN_S for r in ok], 2),
        }
    return out


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per configuration: each figure's median, min and max, and its ratio to the floor."""
    by = {_key(r): r for r in records if "error" not in r}
    names = {r["config"] for r in records}
    summary: dict[str, Any] = {}
    for config in ALL:
        if config.name in names:
            summary[config.name] = {
                "about": config.about,
                "versions": _first(records, config.name, "versions") or {},
                "model_calls_per_run": _first(records, config.name, "model_calls_per_run"),
                **_timed(by, config.name),
                "rss": _memory(records, config.name),
            }
    rounds = sorted({k[3] for k in by if k[1] == "overhead"})
    for durable in ("bastion-sqlite", "bastion-postgres"):
        costs = []
        for rnd in rounds:
            mine = by.get((durable, "overhead", 0, rnd))
            base = by.get(("bastion-disk", "overhead", 0, rnd))
            if mine and base:
                costs.append((mine["run_us"] - base["run_us"]) / STEPS / 1000)
        if costs and durable in summary:
            summary[durable]["checkpoint_ms_per_step"] = _spread(costs, 3)
    cold = [r["seconds"] for r in records if r["mode"] == "cold_start" and "error" not in r]
    if cold and "bastion-sqlite" in summary:
        summary["bastion-sqlite"]["cold_start_s"] = _spread(cold, 3)
    return summary


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    load = os.getloadavg()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "load_average": [round(x, 2) for x in load],
    }


def _fmt(spread: dict[str, float] | None, unit: str = "", digits: int = 0) -> str:
    if not spread:
        return "n/a"
    f = f"{{:,.{digits}f}}"
    low, high = f.format(spread["min"]), f.format(spread["max"])
    return f"{f.format(spread['median'])}{unit} ({low}-{high})"


def _timed_rows(summary: dict[str, Any]) -> list[str]:
    levels = sorted({int(c) for s in summary.values() for c in s["throughput"]})
    head = " | ".join(f"steps/s, {c} in flight (/ floor)" for c in levels)
    rows = [
        "| configuration | versions | model calls / run | µs per step above floor (0 ms model) "
        f"| run time / floor | {head} |",
        "|---|---|---|---|---|" + "---|" * len(levels),
    ]
    for name, s in summary.items():
        versions = ", ".join(f"{k} {v}" for k, v in s["versions"].items())
        cells = []
        for c in levels:
            t = s["throughput"].get(str(c), {})
            ratio = t.get("ratio")
            cells.append(f"{_fmt(t.get('steps_per_s'))} ({ratio['median'] if ratio else 'n/a'})")
        rows.append(
            f"| {name} ({s['about']}) | {versions} | {s['model_calls_per_run']} "
            f"| {_fmt(s['step_overhead_us'], digits=1)} | {_fmt(s['run_time_ratio'], 'x', 1)} "
            f"| {' | '.join(cells)} |"
        )
    return rows


def _memory_rows(summary: dict[str, Any]) -> list[str]:
    counts = sorted({int(n) for s in summary.values() for n in s["rss"]})
    if not counts:
        return []
    rows = [
        "",
        f"Memory and concurrency, 50 ms model, all runs started at once (ideal: {IDEAL_RUN_S:.2f} "
        "s): RSS over the baseline (KiB per run, ratio to the floor's), and the time the runs "
        "took as a multiple of the ideal.",
        "",
        "| configuration | "
        + " | ".join(
            f"{n:,} in flight: MiB (KiB/run, / floor) | {n:,}: time / ideal" for n in counts
        )
        + " |",
        "|---|" + "---|---|" * len(counts),
    ]
    for name, s in summary.items():
        cells = []
        for n in counts:
            cell = s["rss"].get(str(n))
            if cell is None:
                cells += ["n/a", "n/a"]
            elif "error" in cell:
                cells += [f"failed: {cell['error'][:60]}", "n/a"]
            else:
                mib = cell["in_flight_mib"]["median"]
                cells += [
                    f"{mib:,.1f} ({cell['kib_per_run']:,.1f}, {cell['kib_ratio']}x)",
                    _fmt(cell["x_ideal"], "x", 2),
                ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def _bastion_rows(summary: dict[str, Any]) -> list[str]:
    rows = []
    for name in ("bastion-sqlite", "bastion-postgres"):
        spread = summary.get(name, {}).get("checkpoint_ms_per_step")
        if spread:
            rows.append(
                f"- checkpoint cost, {name}: {_fmt(spread, ' ms', 3)} per step "
                "(against bastion-disk in the same round)"
            )
    cold = summary.get("bastion-sqlite", {}).get("cold_start_s")
    if cold:
        rows.append(
            "- cold start of `bastion run` (process start to the first model call; default "
            f"settings, durable on SQLite, empty data directory): {_fmt(cold, ' s', 2)}"
        )
    profiles = sorted(PROFILES.glob("*.txt")) if PROFILES.is_dir() else []
    if profiles:
        names = ", ".join(f"`bench/profiles/{p.name}`" for p in profiles)
        rows.append(f"- profiles of runs with a 0 ms model (pyinstrument, cProfile): {names}")
    return ["", "Bastion only:", "", *rows] if rows else []


def render(summary: dict[str, Any], info: dict[str, Any], quick: bool, note: str) -> str:
    """The Markdown section written between the markers."""
    mode = "quick (CI smoke: tiny counts, 1 round, no peers)" if quick else "full"
    lines = [
        START,
        "## Agent loop overhead against the floor and the peers (`bench/agents/suite.py`)",
        "",
        f"{info['date']}, mode: {mode}. Machine: {info['machine']}, {info['cores']} cores, "
        f"{info['system']}, Python {info['python']}, load average at the end "
        f"{', '.join(str(x) for x in info['load_average'])}.",
    ]
    if note:
        lines += ["", f"**{note}**"]
    lines += [
        "",
        "Workload: a fake model asks for one call of a trivial async tool per step, 10 steps, "
        "then answers (`bench/agents/suite.py` says how each framework is driven). Medians over "
        "the rounds (min-max); each ratio is against the floor measured in the same round.",
        "",
        *_timed_rows(summary),
        *_memory_rows(summary),
        *_bastion_rows(summary),
        "",
        "Targets (Bastion with everything on, in memory: `bastion-memory`):",
        "",
        *targets(summary),
        END,
    ]
    return "\n".join(lines) + "\n"


def targets(summary: dict[str, Any]) -> list[str]:
    """Each target of issue 12, met or missed, from this run's figures."""
    out = []
    memory = summary.get("bastion-memory", {})

    def line(label: str, value: float | None, limit: float, unit: str) -> None:
        if value is None:
            out.append(f"- {label}: not measured in this run")
        elif value < 0:
            out.append(f"- {label}: {value:,.2f}{unit}: below this run's noise, not resolved")
        else:
            verdict = "met" if value <= limit else "**missed**"
            out.append(f"- {label}: {value:,.2f}{unit} (target <= {limit:,}{unit}): {verdict}")

    def rss(count: str, field: str) -> float | None:
        cell = memory.get("rss", {}).get(count, {})
        value = cell.get(field)
        return value["median"] if isinstance(value, dict) else value

    over = memory.get("step_overhead_us")
    line("µs per step above the floor", over and over["median"], 50, " µs")
    counts = sorted((n for n in memory.get("rss", {})), key=int)
    largest = counts[-1] if counts else ""
    label = f"KiB per in-flight run ({int(largest):,} in flight)" if largest else "KiB per run"
    line(label, rss(largest, "kib_per_run"), 30, " KiB")
    line("1,000 runs with a 50 ms model, time / ideal", rss("1000", "x_ideal"), 2, "x")
    line("10,000 runs in flight, peak RSS", rss("10000", "peak_mib"), 512, " MiB")
    cp = summary.get("bastion-sqlite", {}).get("checkpoint_ms_per_step")
    line("SQLite durable, checkpoint cost per step", cp and cp["median"], 1, " ms")
    return out


def write_results(section: str, path: Path) -> None:
    """Replace the marked section of `path` (append it when absent); leave the rest alone.

    The section runs from the line starting ``<!-- bench:agents:start`` to the end marker.
    """
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start, end = text.find(START_PREFIX), text.find(END)
    if 0 <= start < end:
        text = text[:start] + section.rstrip("\n") + text[end + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def _configs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Config]:
    configs = [FLOOR, *BASTION] + ([] if args.quick or args.no_peers else list(PEER_CONFIGS))
    if args.configs:
        wanted = set(args.configs.split(",")) | {"floor"}
        if wanted & {"bastion-sqlite", "bastion-postgres"}:
            wanted.add("bastion-disk")  # the baseline of the checkpoint cost
        unknown = wanted - {c.name for c in ALL}
        if unknown:
            parser.error(
                f"unknown configurations {sorted(unknown)}; known: {[c.name for c in ALL]}"
            )
        configs = [c for c in ALL if c.name in wanted]
    if any(c.name == "bastion-postgres" for c in configs) and not postgres_reachable():
        print("bench: no PostgreSQL at 127.0.0.1:5432: bastion-postgres skipped", file=sys.stderr)
        configs = [c for c in configs if c.name != "bastion-postgres"]
    return configs


def _mode(args: argparse.Namespace) -> Mode:
    mode = QUICK if args.quick else FULL
    if args.rounds:
        mode = Mode(**{**mode.__dict__, "rounds": args.rounds})
    if args.rss_runs:
        runs = tuple(int(x) for x in args.rss_runs.split(","))
        mode = Mode(**{**mode.__dict__, "rss_runs": runs})
    if args.rss_rounds:
        mode = Mode(**{**mode.__dict__, "rss_rounds": args.rss_rounds})
    if args.no_profile:
        mode = Mode(**{**mode.__dict__, "profile_runs": 0})
    return mode


def main() -> int:
    """Run the suite (or re-read a run), write the JSON lines and the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: no peers, small counts")
    parser.add_argument(
        "--configs",
        help="comma-separated subset (with the floor, and bastion-disk for a durable one)",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip the peer frameworks")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--rss-runs", help="override the runs in flight, e.g. 100,1000")
    parser.add_argument(
        "--rss-rounds", type=int, help="override the rounds of up to 1,000 in flight"
    )
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--results",
        type=Path,
        help="the Markdown to update (default bench/RESULTS.md; quick: bench/out/RESULTS-quick.md)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="where the JSON lines go")
    parser.add_argument("--note", default="", help="a line shown above the tables")
    parser.add_argument(
        "--from-jsonl", type=Path, help="measure nothing: summarize this earlier run's JSON lines"
    )
    args = parser.parse_args()
    skipped: list[str] = []
    if args.from_jsonl:
        lines = [json.loads(line) for line in args.from_jsonl.read_text().splitlines() if line]
        records = [line for line in lines if "summary" not in line]
        info = next((line for line in lines if "summary" in line), None) or machine()
        quick = bool(info.get("quick", args.quick))
        out = args.from_jsonl
    else:
        mode, configs = _mode(args), _configs(args, parser)
        for config in [c for c in configs if c.venv is not None]:
            try:
                ensure_venv(config)
            except (OSError, subprocess.CalledProcessError) as exc:
                print(f"bench: {config.name} skipped: cannot install it ({exc})", file=sys.stderr)
                configs.remove(config)
                skipped.append(config.name)
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = args.out / f"agents-{'quick' if args.quick else 'full'}-{stamp}.jsonl"
        records = run_suite(mode, configs, out)
        info, quick = {**machine(), "quick": args.quick}, args.quick
    summary = summarize(records)
    if not args.from_jsonl:
        with out.open("a") as stream:
            stream.write(json.dumps({"summary": summary, **info}) + "\n")
    results = args.results or (args.out / "RESULTS-quick.md" if quick else RESULTS)
    write_results(render(summary, info, quick, args.note), results)
    print(f"bench: raw results in {out}; summary in {results}", file=sys.stderr)
    failed = [r for r in records if "error" in r]
    for r in failed:
        print(f"bench: FAILED {r['config']} {r.get('mode')}: {r['error']}", file=sys.stderr)
    for name in skipped:
        print(f"bench: FAILED {name}: not installed, not measured", file=sys.stderr)
    return 1 if failed or skipped else 0


if __name__ == "__main__":
    sys.exit(main())
