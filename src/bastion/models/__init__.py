"""Chat models: the `ChatModel` protocol, its implementations, and `load_model` to pick one.

Every model speaks the same request and response (`interface`); provider errors arrive as the
`bastion.errors.ModelError` family. `OpenAIChatModel` serves any OpenAI-compatible endpoint,
`ScriptedModel` answers from a script (tests, demos), and `load_model` builds either from a
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
from bastion.models.openai_compat import OpenAIChatModel, map_openai_error, openai_errors
from bastion.models.scripted import ScriptedModel, ScriptItem, UnexpectedModelCall

__all__ = [
    "KNOWN_PROVIDERS",
    "ChatMessage",
    "ChatModel",
    "ChatRequest",
    "ChatResponse",
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
