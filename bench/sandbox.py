"""Benchmark the sandbox tiers: added latency of one trivial call, and calls per second.

Targets (issue 9): a warm ``process`` call adds under 5 ms, an ``os`` call under 100 ms.

The tool is `bastion.sandbox.probe.echo` (returns its argument; standard library only), so what is
measured is the tier's own cost: `TieredSandbox.run` from the call to the outcome, args validated,
the child's rlimits, namespaces and uid drop, and the SIGKILL of the worker's tree (its reaping
and cgroup removal happen after the outcome is returned, in the pool's background).

* ``inline``: the call in the event loop.
* ``warm``: a started worker is waiting (the pool is refilled and every worker ready before each
  measured call).
* ``cold``: no worker is waiting: the call starts one (interpreter start, namespaces, bubblewrap).
* ``calls/s at N``: N calls at a time, ``--calls`` in all, with ``warm_workers = N``.

Each figure is the median of ``--runs`` runs. Run from the repository root, as root (the isolated
tiers need it; ``bastion doctor`` says what is missing):

    .venv/bin/python bench/sandbox.py
    .venv/bin/python bench/sandbox.py --samples 50 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import statistics
import time
from typing import Any

from bastion.clock import SystemClock
from bastion.messages import Principal, ToolCall
from bastion.router.interface import SandboxTier, ToolSpec
from bastion.router.registry import make_tool
from bastion.sandbox import probe
from bastion.sandbox.capabilities import machine_capabilities
from bastion.sandbox.default import TieredSandbox
from bastion.settings import SandboxSettings

PRINCIPAL = Principal(id="bench")
CLOCK = SystemClock()


def spec_for(tier: SandboxTier) -> ToolSpec:
    return dataclasses.replace(make_tool(probe.echo, name=f"echo_{tier}"), sandbox=tier)


async def one_call(sandbox: TieredSandbox, spec: ToolSpec, n: int) -> float:
    call = ToolCall(run_id="bench", step_id=n, tool_name=spec.name, args={"value": n})
    started = time.perf_counter()
    outcome = await sandbox.run(call, spec, deadline=CLOCK.monotonic() + 60, principal=PRINCIPAL)
    elapsed = time.perf_counter() - started
    if not outcome.ok or outcome.value != n:
        raise SystemExit(f"{spec.name} failed: {outcome.error}")
    return elapsed * 1000


async def latency(tier: SandboxTier, mode: str, samples: int) -> float:
    """Median ms of `samples` single calls."""
    warm = 1 if mode == "warm" else 0
    sandbox = TieredSandbox(clock=CLOCK, settings=SandboxSettings(warm_workers=warm))
    spec = spec_for(tier)
    times: list[float] = []
    try:
        for n in range(samples + 1):
            if tier != "inline":
                pool = sandbox.isolated(tier).pool
                await pool.settle()
                if warm:
                    await pool.start()  # refilled, and every idle worker ready
            elapsed = await one_call(sandbox, spec, n)
            if n:  # the first call of a fresh pool imports the module: not counted
                times.append(elapsed)
    finally:
        await sandbox.aclose()
    return statistics.median(times)


async def throughput(tier: SandboxTier, concurrency: int, calls: int) -> float:
    """Calls per second with `concurrency` calls in flight."""
    sandbox = TieredSandbox(clock=CLOCK, settings=SandboxSettings(warm_workers=concurrency))
    spec = spec_for(tier)
    try:
        if tier != "inline":
            await one_call(sandbox, spec, 0)  # teach the pool the module to preload
            await sandbox.isolated(tier).pool.start()
        queue = iter(range(1, calls + 1))

        async def worker() -> None:
            for n in queue:
                await one_call(sandbox, spec, n)

        started = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            for _ in range(concurrency):
                tasks.create_task(worker())
        return calls / (time.perf_counter() - started)
    finally:
        await sandbox.aclose()


def median_of(runs: int, make: Any) -> tuple[float, float, float]:
    values = [asyncio.run(make()) for _ in range(runs)]
    return statistics.median(values), min(values), max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=30, help="calls per latency run")
    parser.add_argument("--calls", type=int, default=100, help="calls per throughput run")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    args = parser.parse_args()
    caps = machine_capabilities()
    tiers: list[SandboxTier] = ["inline"]
    for tier in ("process", "os"):
        support = caps.support(tier)  # type: ignore[arg-type]
        if support.available:
            tiers.append(tier)  # type: ignore[arg-type]
        else:
            print(f"{tier}: unavailable: {'; '.join(support.reasons)}")
    load = os.getloadavg()[0]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}, load {load:.1f}; medians of {args.runs} runs"
    )
    print("| tier | mode | added latency per call (ms) | min-max |")
    print("|---|---|---|---|")
    for tier in tiers:
        for mode in ("warm", "cold") if tier != "inline" else ("in loop",):
            med, low, high = median_of(
                args.runs, lambda t=tier, m=mode: latency(t, m, args.samples)
            )
            print(f"| {tier} | {mode} | {med:.2f} | {low:.2f}-{high:.2f} |")
    print("| tier | concurrent calls | calls/s | min-max |")
    print("|---|---|---|---|")
    for tier in tiers:
        for concurrency in (2, 20):
            med, low, high = median_of(
                args.runs, lambda t=tier, c=concurrency: throughput(t, c, args.calls)
            )
            print(f"| {tier} | {concurrency} | {med:.0f} | {low:.0f}-{high:.0f} |")
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
