"""What the resilience checks add to each call: breaker + rate limiter, in process and with Redis.

Targets (issue 8): under 10 µs per call in process, under 1 ms per call with Redis.

One "check" is what the wrappers do around every model call (`BreakerChatModel`,
`RateLimitedChatModel`): the board's ``sync`` of the model's breaker (with Redis: one ``PTTL``,
reused for ``--refresh`` seconds as ``resilience.breaker_refresh_s`` does),
``check``, the limiter's ``acquire`` of a request charge and a token charge (with Redis: one Lua
script, both keys atomically), then ``record_success`` and the board's ``flush``. No model is
called: the figure is the overhead alone. Keys are spread over 100 users so that the limits never
refuse (a refusal is cheaper than an admission, and would flatter the figure).

Usage, from the repository root (Redis on 127.0.0.1:6379 unless ``--redis`` says otherwise)::

    .venv/bin/python bench/resilience_overhead.py                 # both backends, 5 runs
    .venv/bin/python bench/resilience_overhead.py --calls 20000 --runs 3 --backend memory

Prints one JSON line per backend: median µs per call over the runs (and min, max), wall clock and
CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
import uuid

from bastion.clock import SystemClock
from bastion.resilience.breaker import BreakerBoard, BreakerConfig
from bastion.resilience.rate_limit import Charge, InProcessLimiter, Limit, RateLimiter

REQUESTS = Limit(rate=1e9, burst=1_000_000)
TOKENS = Limit(rate=1e12, burst=1_000_000_000)


async def one_run(board: BreakerBoard, limiter: RateLimiter, calls: int) -> tuple[float, float]:
    """Microseconds per check over `calls` checks: wall clock, and this process's CPU time."""
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(calls):
        user = f"user:{i % 100}"
        breaker = await board.sync("model:openai:bench")
        breaker.check()
        decision = await limiter.acquire(
            [
                Charge(key=f"{user}:req", limit=REQUESTS),
                Charge(key=f"{user}:tok", limit=TOKENS, cost=1200),
            ]
        )
        assert decision.allowed
        breaker.record_success(duration_s=0.2)
        await board.flush()
    wall = (time.perf_counter() - started) / calls * 1e6
    return wall, (time.process_time() - cpu) / calls * 1e6


async def measure(
    backend: str, calls: int, runs: int, url: str, refresh_s: float
) -> dict[str, object]:
    clock = SystemClock()
    config = BreakerConfig()
    client = None
    if backend == "memory":
        board = BreakerBoard(clock=clock, config=config)
        limiter: RateLimiter = InProcessLimiter(clock=clock)
    else:
        from bastion.resilience.redis_backend import RedisBreakerShare, RedisLimiter, connect

        client = connect(url)
        await client.ping()
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        board = BreakerBoard(
            clock=clock,
            config=config,
            share=RedisBreakerShare(client, prefix=prefix, clock=clock, refresh_s=refresh_s),
        )
        limiter = RedisLimiter(client, clock=clock, prefix=prefix)
    try:
        await one_run(board, limiter, min(calls, 500))  # warm up: script loaded, pools open
        pairs = [await one_run(board, limiter, calls) for _ in range(runs)]
    finally:
        if client is not None:
            keys = [k async for k in client.scan_iter(match="bench-*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
    return {
        "backend": backend,
        "calls": calls,
        "runs": runs,
        "median_us_per_call": round(statistics.median(w for w, _ in pairs), 2),
        "min_us": round(min(w for w, _ in pairs), 2),
        "max_us": round(max(w for w, _ in pairs), 2),
        # CPU time: less inflated than wall clock on a busy machine (with Redis, the wait on the
        # server is not in it: compare the two to see the round trip).
        "median_cpu_us_per_call": round(statistics.median(c for _, c in pairs), 2),
        "breaker_refresh_s": refresh_s if backend == "redis" else None,
        "python": platform.python_version(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", choices=["memory", "redis", "all"], default="all")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--refresh", type=float, default=1.0, help="resilience.breaker_refresh_s (0: ask always)"
    )
    args = parser.parse_args()
    backends = ["memory", "redis"] if args.backend == "all" else [args.backend]
    for backend in backends:
        calls = args.calls if backend == "memory" else max(1, args.calls // 10)
        result = asyncio.run(measure(backend, calls, args.runs, args.redis, args.refresh))
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
