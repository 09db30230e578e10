"""Requests per second and p50/p99 latency of creating runs over HTTP, against a scripted model.

Starts ``bastion serve`` (one uvicorn worker, a separate process) on a scripted app whose model
plans one tool call per request, then creates runs with ``POST /v1/runs`` from 1, 10 and 100
concurrent clients (httpx, one process). ``--mode wait`` (default) waits for each run's end in the
request (``"wait": true``), so latency is the whole run over HTTP; ``--mode async`` measures the
create alone (the run goes on in the server).

    .venv/bin/python bench/http_runs.py [--requests 300] [--concurrency 1 10 100] [--mode wait]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bastion import AgentSystem, Principal, tool
from bastion.clock import SystemClock
from bastion.gate.wiring import gate_from_settings
from bastion.models.scripted import ScriptedModel
from bastion.settings import Settings, load_settings
from bastion.storage.engine import create_engine
from bastion.storage.migrations import migrate

USER = Principal(id="bench", roles=frozenset({"customer"}), scopes=frozenset({"basic"}))


@tool(permissions=("basic",))
def lookup(order_id: str) -> dict[str, str]:
    """Look up an order.

    Args:
        order_id: The order id.
    """
    return {"order_id": order_id, "status": "shipped"}


PLAN = json.dumps(
    {
        "reasoning": "look it up",
        "steps": [
            {"description": "look up", "tool_name": "lookup", "tool_args": {"order_id": "A1"}}
        ],
    }
)


def build(settings: Settings) -> AgentSystem:
    """The benchmark's app: one tool, a scripted model planning one call per request."""
    return AgentSystem.from_settings(
        settings,
        tools=[lookup],
        principals=[USER],
        model=ScriptedModel.matching([(r"(?s).*", PLAN)], name="scripted:bench"),
        rng=random.Random(1),
    )


async def issue_key(settings: Settings) -> str:
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        wiring = gate_from_settings(settings, engine=engine, clock=SystemClock())
        issued = await wiring.keys.create(
            USER.id, name="bench", now=SystemClock().now(), expires_at=None
        )
        return issued.key
    finally:
        await engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def level(url: str, key: str, *, clients: int, requests: int, wait: bool) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120, limits=limits
    ) as client:

        async def worker() -> None:
            nonlocal errors
            while not queue.empty():
                i = queue.get_nowait()
                start = time.perf_counter()
                response = await client.post(
                    "/v1/runs", json={"message": f"where is order {i}", "wait": wait}
                )
                latencies.append(time.perf_counter() - start)
                if response.status_code not in (200, 201, 202):
                    errors += 1

        began = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(clients):
                group.create_task(worker())
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "clients": clients,
        "requests": requests,
        "errors": errors,
        "rps": requests / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--mode", choices=["wait", "async"], default="wait")
    parser.add_argument("--durable", action="store_true", help="Run on DBOS (default: off).")
    parser.add_argument(
        "--database-url", default=None, help="e.g. postgresql://postgres@127.0.0.1/bench"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-http-") as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).parent),
            "BASTION_DATA_DIR": tmp,
            "BASTION_DURABLE__ENABLED": "true" if args.durable else "false",
            "BASTION_GATE__REQUIRE_API_KEY": "true",
            "BASTION_OBSERVABILITY__JSON_LOGS": "false",
        }
        if args.database_url:
            env["BASTION_MEMORY__DATABASE_URL"] = args.database_url
        settings = load_settings(data_dir=Path(tmp), memory={"database_url": args.database_url})
        key = asyncio.run(issue_key(settings))
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bastion.cli.main",
                "serve",
                "--app",
                "http_runs:build",
                "--port",
                str(port),
            ],
            env=env,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(f"{url}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            print(
                f"# {platform.machine()}, {os.cpu_count()} CPUs, Python "
                f"{platform.python_version()}, mode={args.mode}, durable={args.durable}, "
                f"database={settings.database_url.split(':')[0]}"
            )
            print("| clients | requests | req/s | p50 | p99 | errors |")
            print("|---|---|---|---|---|---|")
            for clients in args.concurrency:
                r = asyncio.run(
                    level(
                        url, key, clients=clients, requests=args.requests, wait=args.mode == "wait"
                    )
                )
                print(
                    f"| {clients} | {args.requests} | {r['rps']:.1f} | {r['p50_ms']:.1f} ms "
                    f"| {r['p99_ms']:.1f} ms | {r['errors']} |"
                )
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
