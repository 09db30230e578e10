"""`load_model`: from a configured name (``provider:model``) to a `ChatModel`.

The CLI, the HTTP app and `AgentSystem.from_settings` name models as strings in settings and on
the command line; this is the one place that turns such a name into an object, so every surface
accepts the same names and fails on a wrong one with the same message, at start-up.
"""

from __future__ import annotations

from typing import Final

from bastion.clock import Clock
from bastion.errors import ConfigError
from bastion.models.interface import ChatModel
from bastion.models.openai_compat import OpenAIChatModel
from bastion.models.scripted import ScriptedModel
from bastion.settings import Settings

#: What may come before the colon, and what comes after it.
KNOWN_PROVIDERS: Final[dict[str, str]] = {
    "openai": "an OpenAI-compatible endpoint, e.g. openai:gpt-4o-mini",
    "scripted": "a scripted model from a JSON file, e.g. scripted:path/to/script.json",
    "local": "the embedded llama.cpp model (not in this build yet)",
}


def load_model(name: str, *, settings: Settings, clock: Clock) -> ChatModel:
    """Build the model `name` stands for.

    An ``openai:`` model reaches the base URL and key from `settings` (model section first, then
    ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``) and owns an HTTP client: close it with
    `OpenAIChatModel.aclose` when done.

    Args:
        name: ``provider:model``, e.g. ``openai:gpt-4o-mini`` or ``scripted:demo/plans.json``.
        settings: Where the provider's URL, key and timeout come from.
        clock: Handed to the model (latency, Retry-After).

    Returns:
        The model, not yet connected to anything.

    Raises:
        ConfigError: an unknown provider, a name without ``provider:``, an empty model, an
            unavailable provider, or a scripted file that cannot be loaded.
    """
    provider, sep, model = name.partition(":")
    provider, model = provider.strip(), model.strip()
    if not sep or not provider or not model:
        raise ConfigError(
            f"model name {name!r} is not of the form provider:model. {_known_providers()}"
        )
    if provider == "openai":
        key = settings.effective_openai_api_key
        return OpenAIChatModel(
            model=model,
            base_url=settings.effective_openai_base_url,
            api_key=key.get_secret_value() if key is not None else None,
            timeout_s=settings.model.request_timeout_s,
            clock=clock,
        )
    if provider == "scripted":
        return ScriptedModel.from_file(model)
    if provider == "local":
        raise ConfigError(
            f"model {name!r}: the embedded local model is not available in this build yet. Use an"
            " OpenAI-compatible server instead (a local llama.cpp, vLLM or Ollama server works:"
            " openai:<model> with model.openai_base_url set)."
        )
    raise ConfigError(f"model {name!r}: unknown provider {provider!r}. {_known_providers()}")


def _known_providers() -> str:
    listed = "; ".join(f"{provider}: {what}" for provider, what in KNOWN_PROVIDERS.items())
    return f"Known providers: {listed}."
