"""Runs one request of the kill -9 app in this process, prints its answer, and hangs.

DBOS's record of the run's end is held forever (as if the process died right after the caller
had its answer), so the test that runs this (tests/durable/test_workflow.py) can kill it at that
point and check that the restarted executor finishes the run without running any step again.
Settings come from the environment (``BASTION_*``), the log from ``K9_LOG`` (see kill9_app).
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import kill9_app
from dbos._sys_db import SystemDatabase

from bastion import AgentRequest
from bastion.settings import load_settings

_never = threading.Event()


def _hold(_self: SystemDatabase, *_args: Any, **_kwargs: Any) -> bool:
    print("recording the end", flush=True)
    _never.wait()
    return False


async def main() -> None:
    SystemDatabase.update_workflow_outcome = _hold  # type: ignore[method-assign]
    system = kill9_app.build(load_settings())
    async with system:
        request = AgentRequest(user_id="u", session_id="s", message="refund please")
        response = await system.run(request)
        print(json.dumps({"run_id": response.run_id, "status": response.status.value}), flush=True)
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main())
