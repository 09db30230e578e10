"""A second process for the ledger's cross-process test: N concurrent runs against a shared budget.

Usage: ``python ledger_worker.py DATABASE_URL PREFIX RUNS DAILY_LIMIT``; waits for a line on stdin
(so that both processes start together), then prints how many calls reached its model.
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))

from tests.cost.ledger_support import NOON, CountingModel, controller, one_run

from bastion.storage import create_engine
from bastion.testing.clock import FakeClock


async def main(url: str, prefix: str, runs: int, limit: str) -> None:
    engine = create_engine(url)
    try:
        cost = controller(engine, FakeClock(wall_start=NOON), user_daily_usd=Decimal(limit))
        await cost.start()
        model = CountingModel()
        print("ready", flush=True)
        sys.stdin.readline()
        async with asyncio.TaskGroup() as group:
            for i in range(runs):
                group.create_task(one_run(cost, model, run_id=f"{prefix}{i}"))
        print(model.calls, flush=True)
        await cost.aclose()
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
