"""With no model configured, a system takes the best embedded model installed, or says why not."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import ConfigError
from bastion.models import weights
from bastion.models.loader import default_model_name, installed_local_model
from bastion.settings import ModelSettings, Settings


def _installed(monkeypatch: pytest.MonkeyPatch, *, engine: bool, models: set[str]) -> None:
    monkeypatch.setattr(weights, "engine_installed", lambda: engine)

    def missing(spec: weights.LocalModelSpec) -> list[str]:
        return [] if spec.key in models else [f"{p.distribution}=={p.version}" for p in spec.parts]

    monkeypatch.setattr(weights, "missing_parts", missing)


def test_a_configured_model_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, engine=True, models={"qwen2.5-1.5b"})
    settings = Settings(data_dir=tmp_path, model=ModelSettings(name="openai:gpt-4o-mini"))
    assert default_model_name(settings, "scripted:x.json") == "openai:gpt-4o-mini"
    assert default_model_name(Settings(data_dir=tmp_path), "scripted:x.json") == "scripted:x.json"


@pytest.mark.parametrize(
    ("models", "chosen"),
    [
        ({"qwen2.5-1.5b", "qwen2.5-0.5b"}, "local:qwen2.5-1.5b"),
        ({"qwen2.5-0.5b", "smollm2"}, "local:qwen2.5-0.5b"),
        ({"smollm2"}, "local:smollm2"),
    ],
)
def test_the_best_installed_embedded_model_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models: set[str], chosen: str
) -> None:
    _installed(monkeypatch, engine=True, models=models)
    assert default_model_name(Settings(data_dir=tmp_path)) == chosen


def test_without_the_engine_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _installed(monkeypatch, engine=False, models={"qwen2.5-1.5b"})
    assert installed_local_model()[0] is None
    with pytest.raises(ConfigError, match=r"BASTION_MODEL__NAME.*bastion-agents\[local\]"):
        default_model_name(Settings(data_dir=tmp_path))


def test_without_weights_the_error_says_which_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _installed(monkeypatch, engine=True, models=set())
    with pytest.raises(ConfigError, match=r"weights of local:qwen2.5-1.5b .* not installed"):
        default_model_name(Settings(data_dir=tmp_path))
