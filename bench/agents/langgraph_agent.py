"""LangGraph's prebuilt ReAct agent (`create_react_agent`) under the common workload.

Runs in ``bench/.venvs/langgraph``. The lightest fake its API allows: a `BaseChatModel` subclass
whose ``_agenerate`` returns an `AIMessage` with one tool call per step (counting the
`ToolMessage`s it is given) and whose ``bind_tools`` returns itself (langchain_core's
``GenericFakeChatModel`` and ``FakeMessagesListChatModel`` raise on ``bind_tools``, which
``create_react_agent`` calls). No checkpointer: state lives in memory for the run only.
"""

from __future__ import annotations

import asyncio
from importlib import metadata
from typing import Any

from harness import FINAL_ANSWER, STEPS, TOOL_NAME, next_action
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent


@tool(TOOL_NAME)
async def noop(i: int) -> int:
    """Return i."""
    return i


class FakeToolModel(BaseChatModel):
    """Asks for one `noop` call per step, then answers."""

    latency_s: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "bench-fake"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _reply(self, messages: list[BaseMessage]) -> ChatResult:
        done = sum(1 for message in messages if isinstance(message, ToolMessage))
        arg = next_action(done)
        if arg is None:
            message = AIMessage(content=FINAL_ANSWER)
        else:
            call = {
                "name": TOOL_NAME,
                "args": {"i": arg},
                "id": f"call_{done}",
                "type": "tool_call",
            }
            message = AIMessage(content="", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("the benchmark runs the agent asynchronously")

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any
    ) -> ChatResult:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self._reply(messages)


class LangGraphAgent:
    """One compiled graph; each run is one ``ainvoke``."""

    model_calls_per_run = STEPS + 1

    def __init__(self, latency_s: float) -> None:
        self.model = FakeToolModel(latency_s=latency_s)
        self.graph = create_react_agent(self.model, [noop])
        self.versions = {p: metadata.version(p) for p in ("langgraph", "langchain-core")}

    async def run(self) -> int:
        state = await self.graph.ainvoke(
            {"messages": [("user", "go")]}, {"recursion_limit": 4 * STEPS + 10}
        )
        messages = state["messages"]
        if messages[-1].content != FINAL_ANSWER:
            raise RuntimeError(f"unexpected last message {messages[-1]!r}")
        return sum(1 for message in messages if isinstance(message, ToolMessage))

    def set_latency(self, latency_s: float) -> None:
        self.model.latency_s = latency_s

    async def close(self) -> None:
        pass


async def build(latency_s: float, max_concurrency: int) -> LangGraphAgent:
    """The agent (concurrency needs no setup: the graph is async)."""
    return LangGraphAgent(latency_s)
