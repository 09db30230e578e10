"""Loading an app (``module:factory``) and preparing settings for one CLI invocation.

An app is a factory ``(Settings) -> AgentSystem``; the support demo's is
``bastion.demo.support:build``. Every way this can go wrong is a one-line `ConfigError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.errors import ConfigError
from bastion.settings import Settings, load_settings

if TYPE_CHECKING:
    from bastion.system import AgentSystem

DEFAULT_APP = "bastion.demo.support:build"

AppFactory = Callable[[Settings], "AgentSystem"]


def load_factory(spec: str) -> AppFactory:
    """Import ``module:factory`` and return the factory.

    Raises:
        ConfigError: the spec is malformed, the module or attribute is missing, or not callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--app must look like 'package.module:factory', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import app module {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if factory is None:
        raise ConfigError(f"app module {module_name!r} has no attribute {attr!r}")
    if not callable(factory):
        raise ConfigError(
            f"{spec!r} is not callable: an app is a factory (Settings) -> AgentSystem"
        )
    return factory  # type: ignore[no-any-return]


def build_app(spec: str, settings: Settings) -> AgentSystem:
    """Build the app's `AgentSystem`, checking the factory returned one.

    Raises:
        ConfigError: the factory failed to build or returned something else.
    """
    from bastion.system import AgentSystem

    factory = load_factory(spec)
    try:
        system = factory(settings)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"app {spec!r} failed to build: {type(exc).__name__}: {exc}") from exc
    if not isinstance(system, AgentSystem):
        raise ConfigError(f"app {spec!r} returned {type(system).__name__}, not an AgentSystem")
    return system


def cli_settings(*, model: str | None = None, data_dir: Path | None = None) -> Settings:
    """Settings from the environment, with the CLI's flags on top."""
    settings = load_settings()
    if model is not None:
        if not model.strip():
            raise ConfigError("--model must not be empty (e.g. openai:gpt-4o-mini)")
        settings = settings.model_copy(
            update={"model": settings.model.model_copy(update={"name": model})}
        )
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings
