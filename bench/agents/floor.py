"""The floor: the same agent loop written by hand in bare asyncio, no framework.

A fake model (a coroutine that counts the tool results in the conversation) asks for one call of a
trivial async tool per step, `STEPS` of them, then answers; the loop appends each call and result
to a list of message dicts, as any hand-written loop over a chat API would.
"""

from __future__ import annotations

import asyncio
import platform
from typing import Any

from harness import FINAL_ANSWER, STEPS, TOOL_NAME, next_action


async def noop(i: int) -> int:
    """The trivial tool: returns its argument."""
    return i


class FloorAgent:
    """A hand-written tool-calling loop."""

    model_calls_per_run = STEPS + 1

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.versions = {"python": platform.python_version()}
        self._tools = {TOOL_NAME: noop}

    async def _model(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        done = sum(1 for message in messages if message["role"] == "tool")
        arg = next_action(done)
        if arg is None:
            return {"role": "assistant", "content": FINAL_ANSWER}
        call = {"id": f"call_{done}", "name": TOOL_NAME, "arguments": {"i": arg}}
        return {"role": "assistant", "tool_calls": [call]}

    async def run(self) -> int:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
        calls = 0
        while True:
            reply = await self._model(messages)
            messages.append(reply)
            if "tool_calls" not in reply:
                return calls
            for call in reply["tool_calls"]:
                result = await self._tools[call["name"]](**call["arguments"])
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
                calls += 1

    def set_latency(self, latency_s: float) -> None:
        self.latency_s = latency_s

    async def close(self) -> None:
        pass


async def build(latency_s: float, max_concurrency: int) -> FloorAgent:
    """The floor agent (no setup: concurrency needs nothing)."""
    return FloorAgent(latency_s)
