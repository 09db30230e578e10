"""Pydantic AI under the common workload.

Runs in ``bench/.venvs/pydantic_ai`` (``pydantic-ai-slim``: no provider SDKs). The fake is the
library's own `FunctionModel` around an async function that asks for one tool call per step
(counting the `ToolReturnPart`s it is given), then answers with text.
"""

from __future__ import annotations

import asyncio
from importlib import metadata

from harness import FINAL_ANSWER, STEPS, TOOL_NAME, next_action
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel


async def noop(i: int) -> int:
    """Return i."""
    return i


class PydanticAIAgent:
    """One `Agent`; each run is one ``agent.run``."""

    model_calls_per_run = STEPS + 1

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s

        async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            done = sum(
                isinstance(part, ToolReturnPart)
                for message in messages
                if isinstance(message, ModelRequest)
                for part in message.parts
            )
            arg = next_action(done)
            if arg is None:
                return ModelResponse(parts=[TextPart(FINAL_ANSWER)])
            return ModelResponse(parts=[ToolCallPart(TOOL_NAME, {"i": arg}, f"call_{done}")])

        self.agent = Agent(FunctionModel(model), tools=[noop])
        self.versions = {"pydantic-ai-slim": metadata.version("pydantic-ai-slim")}

    async def run(self) -> int:
        result = await self.agent.run("go")
        if result.output != FINAL_ANSWER:
            raise RuntimeError(f"unexpected output {result.output!r}")
        return sum(
            isinstance(part, ToolReturnPart)
            for message in result.all_messages()
            if isinstance(message, ModelRequest)
            for part in message.parts
        )

    def set_latency(self, latency_s: float) -> None:
        self.latency_s = latency_s

    async def close(self) -> None:
        pass


async def build(latency_s: float, max_concurrency: int) -> PydanticAIAgent:
    """The agent (concurrency needs no setup: the agent is async)."""
    return PydanticAIAgent(latency_s)
