"""smolagents' `ToolCallingAgent` under the common workload.

Runs in ``bench/.venvs/smolagents``. smolagents is synchronous (no async agent, model or tool):
the tool is a trivial *sync* function, the fake model's latency a ``time.sleep``, and concurrent
runs run on threads (a pool as large as the runs in flight, one agent per thread, reset per run).
The fake is a `Model` subclass whose ``generate`` returns one tool call per step (counting the
tool responses it is given), then a call of the built-in ``final_answer`` tool: 11 model calls.
Logging is off (``verbosity_level=LogLevel.OFF``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any

from harness import FINAL_ANSWER, STEPS, TOOL_NAME, next_action
from smolagents import LogLevel, Model, ToolCallingAgent, tool
from smolagents.models import (
    ChatMessage,
    ChatMessageToolCall,
    ChatMessageToolCallFunction,
    MessageRole,
)
from smolagents.monitoring import TokenUsage


@tool
def noop(i: int) -> int:
    """Return i.

    Args:
        i: any integer.
    """
    return i


class FakeToolModel(Model):
    """Asks for one `noop` call per step, then calls ``final_answer``."""

    def __init__(self, owner: SmolagentsAgent) -> None:
        super().__init__(model_id="bench-fake")
        self.owner = owner

    def generate(self, messages: list[Any], *args: Any, **kwargs: Any) -> ChatMessage:
        if self.owner.latency_s:
            time.sleep(self.owner.latency_s)
        done = sum(1 for message in messages if _role(message) == MessageRole.TOOL_RESPONSE)
        arg = next_action(done)
        if arg is None:
            name, arguments = "final_answer", {"answer": FINAL_ANSWER}
        else:
            name, arguments = TOOL_NAME, {"i": arg}
        call = ChatMessageToolCall(
            function=ChatMessageToolCallFunction(name=name, arguments=arguments),
            id=f"call_{done}",
            type="function",
        )
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            content="",
            tool_calls=[call],
            token_usage=TokenUsage(input_tokens=0, output_tokens=0),
        )


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, dict) else message.role


class SmolagentsAgent:
    """A thread pool of agents; each run is one ``agent.run`` on a worker thread."""

    model_calls_per_run = STEPS + 1

    def __init__(self, latency_s: float, max_concurrency: int) -> None:
        self.latency_s = latency_s
        self.pool = ThreadPoolExecutor(max_workers=max(1, max_concurrency))
        self.local = threading.local()
        self.versions = {"smolagents": metadata.version("smolagents")}

    def _run_sync(self) -> int:
        agent = getattr(self.local, "agent", None)
        if agent is None:
            agent = ToolCallingAgent(
                tools=[noop],
                model=FakeToolModel(self),
                max_steps=STEPS + 5,
                verbosity_level=LogLevel.OFF,
            )
            self.local.agent = agent
        answer = agent.run("go", reset=True)
        if answer != FINAL_ANSWER:
            raise RuntimeError(f"unexpected answer {answer!r}")
        return sum(
            1
            for step in agent.memory.steps
            for call in (getattr(step, "tool_calls", None) or [])
            if call.name == TOOL_NAME
        )

    async def run(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._run_sync)

    def set_latency(self, latency_s: float) -> None:
        self.latency_s = latency_s

    async def close(self) -> None:
        self.pool.shutdown(wait=True)


async def build(latency_s: float, max_concurrency: int) -> SmolagentsAgent:
    """The agent pool, sized for `max_concurrency` runs in flight."""
    return SmolagentsAgent(latency_s, max_concurrency)
