"""`load_model`: from a configured name (``provider:model``) to a `ChatModel`.

The CLI, the HTTP app and `AgentSystem.from_settings` name models as strings in settings and on
the command line; this is the one place that turns such a name into an object, so every surface
accepts the same names and fails on a wrong one with the same message, at start-up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from bastion.clock import Clock
from bastion.errors import ConfigError
from bastion.models.interface import ChatModel
from bastion.models.openai_compat import OpenAIChatModel
from bastion.models.scripted import ScriptedModel
from bastion.settings import Settings

logger = logging.getLogger(__name__)

#: What may come before the colon, and what comes after it.
KNOWN_PROVIDERS: Final[dict[str, str]] = {
    "openai": "an OpenAI-compatible endpoint, e.g. openai:gpt-4o-mini",
    "scripted": "a scripted model from a JSON file, e.g. scripted:path/to/script.json",
    "local": "the embedded llama.cpp model, e.g. local:qwen2.5-1.5b or local:path/to/model.gguf",
}


def load_model(name: str, *, settings: Settings, clock: Clock) -> ChatModel:
    """Build the model `name` stands for.

    A ``local:`` model is loaded here, once per process (1 to 3 s, plus assembling and verifying
    its weights the first time), and shared by every system that names it. An ``openai:`` model
    reaches the base URL and key from `settings` (model section first, then
    ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``) and owns an HTTP client: close it with
    `OpenAIChatModel.aclose` when done.

    Args:
        name: ``provider:model``, e.g. ``openai:gpt-4o-mini`` or ``scripted:demo/plans.json``.
        settings: Where the provider's URL, key and timeout come from.
        clock: Handed to the model (latency, Retry-After).

    Returns:
        The model, not yet connected to anything.

    Raises:
        ConfigError: an unknown provider, a name without ``provider:``, an empty model, a
            scripted file that cannot be loaded, or a local model that is not installed, fails
            its sha256 or cannot be loaded (the message says what to install or fix).
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
        return _local_model(name, model, settings=settings, clock=clock)
    raise ConfigError(f"model {name!r}: unknown provider {provider!r}. {_known_providers()}")


#: The embedded models, best first, tried when no model is configured (the first installed wins).
LOCAL_PREFERENCE: Final = ("qwen2.5-1.5b", "qwen2.5-0.5b", "smollm2")


def installed_local_model() -> tuple[str | None, str]:
    """The best embedded model installed here (``local:...``), or None; and why.

    Checks only that the engine and the weight packages are installed (milliseconds); the
    weights' sha256 is verified when the model loads, which refuses damaged ones.
    """
    from bastion.models import weights

    if not weights.engine_installed():
        return None, f"the embedded llama.cpp engine is not installed ({weights.ENGINE_INSTALL})"
    for key in LOCAL_PREFERENCE:
        if not weights.missing_parts(weights.CATALOG[key]):
            return f"local:{key}", f"embedded {weights.CATALOG[key].title}, installed"
    best = weights.CATALOG[LOCAL_PREFERENCE[0]]
    return None, weights.weights_missing_message(best, weights.missing_parts(best))


def default_model_name(settings: Settings, fallback: str | None = None) -> str:
    """The model a system uses: the configured one, else `fallback`, else an embedded one.

    Raises:
        ConfigError: nothing is configured and no embedded model is installed (says what to do).
    """
    name = settings.model.name or fallback
    if name:
        return name
    local, why = installed_local_model()
    if local is None:
        raise ConfigError(
            "no model is configured and no embedded model can be used: set BASTION_MODEL__NAME"
            f" (e.g. openai:gpt-4o-mini) or pass --model; or install one: {why}"
        )
    logger.info("no model configured: using %s (%s)", local, why)
    return local


def _local_model(name: str, model: str, *, settings: Settings, clock: Clock) -> ChatModel:
    """A catalog model (``local:qwen2.5-1.5b``) or a GGUF file (``local:path/model.gguf``)."""
    # Imported here: the weights and engine modules are only needed when a local model is named.
    from bastion.models import weights
    from bastion.models.local import SHARED_ENGINES, open_local_model

    spec = weights.CATALOG.get(model)
    if spec is None and not model.endswith(".gguf"):
        known = ", ".join(f"local:{key}" for key in weights.CATALOG)
        raise ConfigError(
            f"model {name!r}: no local model {model!r}. Known: {known}, or local:<path>.gguf"
            " for a GGUF file of your own (bastion models lists what is installed)."
        )
    if not weights.engine_installed():
        raise ConfigError(
            f"model {name!r}: the embedded llama.cpp engine is not installed. Install it with:"
            f" {weights.ENGINE_INSTALL}"
        )
    if spec is None:
        path = weights.check_gguf(Path(model).expanduser())
    else:
        path = settings.local_cache_dir / spec.filename
        # A file already loaded was verified before it was; its bytes are in memory now.
        if not SHARED_ENGINES.holds(path):
            path = weights.ensure_weights(spec, settings.local_cache_dir)
    local = settings.local
    return open_local_model(
        name,
        path=path,
        threads=local.threads,
        context_size=local.context_size,
        queue_bound=local.queue_bound,
        clock=clock,
    )


def _known_providers() -> str:
    listed = "; ".join(f"{provider}: {what}" for provider, what in KNOWN_PROVIDERS.items())
    return f"Known providers: {listed}."
