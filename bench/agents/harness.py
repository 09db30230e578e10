"""Measures one agent configuration in this process and prints one JSON line per measurement.

Standard library only: it runs under Bastion's venv and under each peer's own venv
(``bench/.venvs/<peer>``), started by `bench/agents/suite.py` as
``python bench/agents/harness.py --adapter NAME --plan JSON``.

The workload is the same for every adapter (see `bench/agents/suite.py`): a fake model that asks for
one call of a trivial async tool per step, `STEPS` steps, then a final answer. An adapter is a
module in this folder exposing ``async def build(latency_s, max_concurrency) -> Agent`` (plus
``variant=`` when named ``module:variant``): an object
with ``async run() -> int`` (one whole run; returns the tool calls it made), ``async close()``,
``set_latency(seconds)`` (the fake model's latency from now on), ``versions`` (what is compared,
``{"package": "version"}``) and ``model_calls_per_run``.

``--plan`` is a JSON list of measurements, run in order on one agent, each
``{"mode": ..., "runs": N, "latency_ms": L, ...}``:

* ``overhead``: warm-up (``warmup`` runs), then ``runs`` runs one after the other, each timed.
* ``throughput``: ``runs`` runs with ``concurrency`` in flight; steps per second.
* ``rss``: ``runs`` runs all started at once after one warm-up run; the resident set is sampled
  while they are in flight (peak over the baseline). Give it a fresh process of its own.
* ``profile``: ``runs`` sequential runs under pyinstrument (if installed) and cProfile, the text
  report written to ``out``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

#: Tool calls per run; every fake model asks for this many, then answers.
STEPS = 10
#: The tool's name in every framework.
TOOL_NAME = "noop"
FINAL_ANSWER = "done"

_PAGE = os.sysconf("SC_PAGE_SIZE")


def next_action(tool_results: int) -> int | None:
    """The fake model's decision: the argument of the next tool call, or None to answer."""
    return tool_results if tool_results < STEPS else None


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


class _RssSampler(threading.Thread):
    """Samples the resident set every few ms while runs are in flight; keeps the peak."""

    def __init__(self, every_s: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.peak = rss_bytes()
        self._every_s = every_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._every_s):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, rss_bytes())
        return self.peak


async def _run_checked(agent: Any) -> float:
    started = time.perf_counter()
    calls = await agent.run()
    elapsed = time.perf_counter() - started
    if calls != STEPS:
        raise RuntimeError(f"a run made {calls} tool calls, expected {STEPS}")
    return elapsed


async def _overhead(agent: Any, runs: int, warmup: int) -> dict[str, Any]:
    for _ in range(warmup):
        await _run_checked(agent)
    times = [await _run_checked(agent) for _ in range(runs)]
    run_s = statistics.median(times)
    return {
        "run_us": round(run_s * 1e6, 2),
        "run_us_min": round(min(times) * 1e6, 2),
        "step_us": round(run_s / STEPS * 1e6, 3),
    }


async def _throughput(agent: Any, runs: int, concurrency: int, warmup: int) -> dict[str, Any]:
    for _ in range(warmup):
        await _run_checked(agent)
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await _run_checked(agent)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    elapsed = time.perf_counter() - started
    return {"elapsed_s": round(elapsed, 4), "steps_per_s": round(runs * STEPS / elapsed, 2)}


async def _rss(agent: Any, runs: int) -> dict[str, Any]:
    await _run_checked(agent)  # warm-up: lazy imports, caches, connections
    gc.collect()
    baseline = rss_bytes()
    sampler = _RssSampler()
    sampler.start()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(_run_checked(agent) for _ in range(runs)))
    finally:
        peak = sampler.stop()
    elapsed = time.perf_counter() - started
    return {
        "elapsed_s": round(elapsed, 4),
        "baseline_mib": round(baseline / 2**20, 2),
        "peak_mib": round(peak / 2**20, 2),
        "in_flight_mib": round((peak - baseline) / 2**20, 2),
        "kib_per_run": round((peak - baseline) / 1024 / runs, 2),
        "maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 2),
    }


async def _profile(agent: Any, runs: int, out: Path) -> dict[str, Any]:
    for _ in range(20):
        await _run_checked(agent)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        from pyinstrument import Profiler
    except ImportError:
        Profiler = None
    if Profiler is not None:
        profiler = Profiler(interval=0.0001, async_mode="disabled")
        profiler.start()
        for _ in range(runs):
            await _run_checked(agent)
        profiler.stop()
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        tool = "pyinstrument"
    else:
        text, tool = "", "none"
    import cProfile
    import io
    import pstats

    cprofile = cProfile.Profile()
    cprofile.enable()
    for _ in range(runs):
        await _run_checked(agent)
    cprofile.disable()
    buffer = io.StringIO()
    stats = pstats.Stats(cprofile, stream=buffer)
    stats.sort_stats("tottime").print_stats(40)
    header = f"# {runs} runs of {STEPS} steps, 0 ms model; {tool} tree, then cProfile self time\n"
    report = header + text + "\n\n# cProfile, top 40 by self time\n" + buffer.getvalue()
    out.write_text(report)  # noqa: ASYNC240 (after the measurement: nothing else runs)
    return {"profile": str(out), "profiler": tool}


async def _measure(args: argparse.Namespace) -> None:
    module, _, variant = args.adapter.partition(":")
    adapter = importlib.import_module(module)
    plan: list[dict[str, Any]] = json.loads(args.plan)
    concurrency = max(
        int(item["runs"] if item["mode"] == "rss" else item.get("concurrency", 1)) for item in plan
    )
    options = {"variant": variant} if variant else {}
    agent = await adapter.build(latency_s=0.0, max_concurrency=concurrency, **options)
    try:
        for item in plan:
            mode, runs = item["mode"], int(item["runs"])
            warmup = int(item.get("warmup", 2))
            latency_s = float(item.get("latency_ms", 0.0)) / 1000
            agent.set_latency(latency_s)
            if mode == "overhead":
                figures = await _overhead(agent, runs, warmup)
            elif mode == "throughput":
                figures = await _throughput(agent, runs, int(item["concurrency"]), warmup)
            elif mode == "rss":
                figures = await _rss(agent, runs)
            elif mode == "profile":
                figures = await _profile(agent, runs, Path(item["out"]))
            else:
                raise SystemExit(f"unknown mode {mode!r}")
            line = {
                "adapter": args.adapter,
                **item,
                "model_calls_per_run": agent.model_calls_per_run,
                "versions": agent.versions,
                **figures,
            }
            print(json.dumps(line), flush=True)
    finally:
        await agent.close()


def main() -> int:
    """Parse the arguments, measure, print one JSON line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True, help="module[:variant] in this folder")
    parser.add_argument(
        "--plan",
        required=True,
        help='JSON list of measurements, e.g. [{"mode": "overhead", "runs": 50}]',
    )
    args = parser.parse_args()
    asyncio.run(_measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
