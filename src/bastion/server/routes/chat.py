"""``POST /v1/chat/completions``: talk to the agent app as if it were an OpenAI model.

``model`` names the served app (``GET /v1/models`` lists it). The last user message is the
request; earlier messages are ignored, since the agent keeps its own history per session. The
session is the ``X-Session-Id`` header, else the ``user`` field, else a new one per request. The
answer is a ``chat.completion`` whose content is the run's message to the user, with the run's
token usage; with ``stream: true``, ``chat.completion.chunk`` events (the role, then the answer,
then the finish reason, and the usage when ``stream_options.include_usage`` asks for it), ended by
``data: [DONE]``. Each completion is a run like any other (its id is in ``bastion.run_id``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from bastion.messages import AgentRequest, AgentResponse, new_id
from bastion.server.errors import ApiError, ErrorBody, InvalidRequest
from bastion.server.state import CurrentCaller, ServerState, State

router = APIRouter(prefix="/v1", tags=["openai"])


class ModelNotFound(ApiError):
    """The ``model`` is not the app this server serves."""

    status, type = 404, "model_not_found"


class ContentPart(BaseModel):
    """A part of a message's content (only text parts are read)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    text: str | None = Field(default=None, max_length=20_000)


class ChatMessage(BaseModel):
    """One message of the conversation."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text (its text parts joined)."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content or () if p.type == "text" and p.text)


class StreamOptions(BaseModel):
    """What a stream carries besides the content."""

    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The OpenAI request body; sampling parameters are accepted and ignored (the app decides)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=255)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^\S+$")


class CompletionUsage(BaseModel):
    """Tokens the run's model calls used."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    """The agent's answer."""

    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    """The one choice of a completion."""

    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"


class RunRef(BaseModel):
    """Which run answered, and how it ended."""

    run_id: str
    status: str


class ChatCompletion(BaseModel):
    """An OpenAI ``chat.completion``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    bastion: RunRef


class ModelCard(BaseModel):
    """A model: here, the served app."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "bastion"


class ModelList(BaseModel):
    """The models this server answers as."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No, or no valid, API key."},
    404: {"model": ErrorBody, "description": "No such model."},
    422: {"model": ErrorBody, "description": "Invalid request."},
}


@router.get("/models", response_model=ModelList, responses=_ERRORS)
async def models(caller: CurrentCaller, state: State) -> ModelList:
    """The served app, as the one model."""
    return ModelList(data=[ModelCard(id=state.app_name)])


def _usage(response: AgentResponse) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=response.input_tokens,
        completion_tokens=response.output_tokens,
        total_tokens=response.input_tokens + response.output_tokens,
    )


async def _answer(state: ServerState, request: AgentRequest) -> AgentResponse:
    task = await state.hub.start(request)
    # Shielded: a client that hangs up must not cancel the run (awaiting a task directly would).
    return await asyncio.shield(task)


def _chunk(completion_id: str, created: int, model: str, **fields: Any) -> str:
    body = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        **fields,
    }
    return f"data: {json.dumps(body)}\n\n"


async def _stream(
    state: ServerState, request: AgentRequest, body: ChatCompletionRequest, created: int
) -> AsyncIterator[str]:
    cid, model = f"chatcmpl-{request.run_id}", body.model
    role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    yield _chunk(cid, created, model, choices=[role])
    response = await _answer(state, request)
    content = {"index": 0, "delta": {"content": response.message}, "finish_reason": None}
    yield _chunk(cid, created, model, choices=[content])
    yield _chunk(
        cid,
        created,
        model,
        choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}],
        bastion={"run_id": response.run_id, "status": response.status.value},
    )
    if body.stream_options is not None and body.stream_options.include_usage:
        yield _chunk(cid, created, model, choices=[], usage=_usage(response).model_dump())
    yield "data: [DONE]\n\n"


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "A completion, or chunks as Server-Sent Events when stream is true.",
        },
        **_ERRORS,
    },
)
async def chat_completions(
    body: ChatCompletionRequest,
    caller: CurrentCaller,
    state: State,
    session_header: Annotated[
        str | None,
        Header(alias="X-Session-Id", min_length=1, max_length=200, pattern=r"^\S+$"),
    ] = None,
) -> ChatCompletion | StreamingResponse:
    """Ask the agent app named by ``model``; its answer comes back as a chat completion."""
    if body.model != state.app_name:
        raise ModelNotFound(
            f"no model {body.model!r}: this server runs the agent app {state.app_name!r} "
            "(see GET /v1/models)"
        )
    users = [m for m in body.messages if m.role == "user" and m.text().strip()]
    if not users:
        raise InvalidRequest("messages: there is no user message with text to answer")
    try:
        request = AgentRequest(
            user_id=caller.principal.id,
            session_id=session_header or body.user or new_id("chat"),
            message=users[-1].text(),
            api_key=caller.api_key,
        )
    except ValueError as exc:
        raise InvalidRequest(f"messages: {exc}") from None
    created = int(state.clock.now().timestamp())
    if body.stream:
        return StreamingResponse(
            _stream(state, request, body, created), media_type="text/event-stream"
        )
    response = await _answer(state, request)
    return ChatCompletion(
        id=f"chatcmpl-{response.run_id}",
        created=created,
        model=body.model,
        choices=[Choice(message=AssistantMessage(content=response.message))],
        usage=_usage(response),
        bastion=RunRef(run_id=response.run_id, status=response.status.value),
    )
