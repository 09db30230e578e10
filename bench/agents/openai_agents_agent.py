"""The OpenAI Agents SDK under the common workload, tracing off.

Runs in ``bench/.venvs/openai_agents``. The lightest fake its API allows: a `Model` subclass whose
``get_response`` returns one ``function_call`` output item per step (counting the
``function_call_output`` items in its input), then an assistant message. (The SDK's own
``agents.testing.ScriptedModel`` records every call and opens generation spans: heavier.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from importlib import metadata
from typing import Any

from agents import Agent, Model, ModelResponse, Runner, Usage, function_tool, set_tracing_disabled
from harness import FINAL_ANSWER, STEPS, TOOL_NAME, next_action
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)


@function_tool(name_override=TOOL_NAME)
async def noop(i: int) -> int:
    """Return i."""
    return i


class FakeToolModel(Model):
    """Asks for one `noop` call per step, then answers."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        items = input if isinstance(input, list) else []
        done = sum(1 for item in items if _item_type(item) == "function_call_output")
        arg = next_action(done)
        if arg is None:
            text = ResponseOutputText(text=FINAL_ANSWER, type="output_text", annotations=[])
            output: Any = ResponseOutputMessage(
                id="msg", type="message", role="assistant", status="completed", content=[text]
            )
        else:
            output = ResponseFunctionToolCall(
                id=f"call_{done}",
                call_id=f"call_{done}",
                type="function_call",
                name=TOOL_NAME,
                arguments=json.dumps({"i": arg}),
            )
        return ModelResponse(output=[output], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the benchmark does not stream")


def _item_type(item: Any) -> Any:
    return item.get("type") if isinstance(item, dict) else getattr(item, "type", None)


class OpenAIAgentsAgent:
    """One `Agent`; each run is one ``Runner.run``."""

    model_calls_per_run = STEPS + 1

    def __init__(self, latency_s: float) -> None:
        set_tracing_disabled(True)
        self.model = FakeToolModel(latency_s)
        self.agent = Agent(name="bench", model=self.model, tools=[noop])
        self.versions = {"openai-agents": metadata.version("openai-agents")}

    async def run(self) -> int:
        result = await Runner.run(self.agent, "go", max_turns=STEPS + 5)
        if result.final_output != FINAL_ANSWER:
            raise RuntimeError(f"unexpected output {result.final_output!r}")
        return sum(1 for item in result.new_items if item.type == "tool_call_output_item")

    def set_latency(self, latency_s: float) -> None:
        self.model.latency_s = latency_s

    async def close(self) -> None:
        pass


async def build(latency_s: float, max_concurrency: int) -> OpenAIAgentsAgent:
    """The agent (concurrency needs no setup: the runner is async)."""
    return OpenAIAgentsAgent(latency_s)
