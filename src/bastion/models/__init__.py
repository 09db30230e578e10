"""Chat models: the `ChatModel` protocol, its implementations, and `load_model` to pick one.

Every model speaks the same request and response (`interface`); provider errors arrive as the
`bastion.errors.ModelError` family. `OpenAIChatModel` serves any OpenAI-compatible endpoint,
`LocalChatModel` runs an embedded llama.cpp model in process (`weights` holds the catalog),
`ScriptedModel` answers from a script (tests, demos), and `load_model` builds any of them from a
``provider:model`` name.
"""

from bastion.models.interface import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    ChatResponse,
    Role,
    Usage,
    as_messages,
)
from bastion.models.loader import KNOWN_PROVIDERS, load_model
from bastion.models.local import LocalChatModel, ModelContextOverflow
from bastion.models.openai_compat import OpenAIChatModel, map_openai_error, openai_errors
from bastion.models.scripted import ScriptedModel, ScriptItem, UnexpectedModelCall

__all__ = [
    "KNOWN_PROVIDERS",
    "ChatMessage",
    "ChatModel",
    "ChatRequest",
    "ChatResponse",
    "LocalChatModel",
    "ModelContextOverflow",
    "OpenAIChatModel",
    "Role",
    "ScriptItem",
    "ScriptedModel",
    "UnexpectedModelCall",
    "Usage",
    "as_messages",
    "load_model",
    "map_openai_error",
    "openai_errors",
]
