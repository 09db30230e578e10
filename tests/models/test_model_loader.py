from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from bastion.errors import ConfigError, ModelTimeout
from bastion.models.interface import ChatRequest, as_messages
from bastion.models.loader import KNOWN_PROVIDERS, load_model
from bastion.models.openai_compat import OpenAIChatModel
from bastion.models.scripted import ScriptedModel
from bastion.settings import ModelSettings, Settings
from bastion.testing.clock import FakeClock
from bastion.testing.fake_openai import FakeOpenAIServer

REQUEST = ChatRequest(messages=as_messages([("user", "hello")]))


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)


async def test_openai_model_uses_the_model_section(
    fake_openai: FakeOpenAIServer, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        model=ModelSettings(openai_base_url=fake_openai.base_url, openai_api_key=SecretStr("sk-1")),
    )
    fake_openai.ok("hi")

    model = load_model("openai:gpt-4o-mini", settings=settings, clock=FakeClock())
    assert isinstance(model, OpenAIChatModel)
    async with model:
        response = await model.complete(REQUEST)

    assert model.name == "openai:gpt-4o-mini"
    assert response.text == "hi"
    assert fake_openai.requests[0]["model"] == "gpt-4o-mini"
    assert fake_openai.request_headers[0]["authorization"] == "Bearer sk-1"


async def test_openai_model_falls_back_to_the_top_level_openai_settings(
    fake_openai: FakeOpenAIServer, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        openai_base_url=fake_openai.base_url,
        openai_api_key=SecretStr("sk-top"),
    )
    fake_openai.ok("hi")

    model = load_model("openai:m", settings=settings, clock=FakeClock())
    assert isinstance(model, OpenAIChatModel)
    async with model:
        await model.complete(REQUEST)

    assert fake_openai.request_headers[0]["authorization"] == "Bearer sk-top"


async def test_openai_model_uses_the_request_timeout(
    fake_openai: FakeOpenAIServer, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        model=ModelSettings(openai_base_url=fake_openai.base_url, request_timeout_s=0.05),
    )
    fake_openai.hang(5)

    model = load_model("openai:m", settings=settings, clock=FakeClock())
    assert isinstance(model, OpenAIChatModel)
    async with model:
        with pytest.raises(ModelTimeout, match=r"0\.05 s"):
            await model.complete(REQUEST)


async def test_scripted_model_loads_its_file(tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    path.write_text(json.dumps({"mode": "sequence", "responses": ["scripted hi"]}))

    model = load_model(f"scripted:{path}", settings=Settings(data_dir=tmp_path), clock=FakeClock())

    assert isinstance(model, ScriptedModel)
    assert model.name == f"scripted:{path}"
    assert (await model.complete(REQUEST)).text == "scripted hi"


def test_scripted_model_with_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read scripted model file"):
        load_model("scripted:nope.json", settings=Settings(data_dir=tmp_path), clock=FakeClock())


def test_an_unknown_local_model_names_the_known_ones(tmp_path: Path) -> None:
    # local: models are loaded for real in test_local_loader.py; here only the name is wrong.
    with pytest.raises(ConfigError, match=r"no local model 'qwen'\. Known: local:qwen2\.5-1\.5b"):
        load_model("local:qwen", settings=Settings(data_dir=tmp_path), clock=FakeClock())


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("gpt-4o-mini", "not of the form provider:model"),
        ("openai:", "not of the form provider:model"),
        ("openai:  ", "not of the form provider:model"),
        (":gpt", "not of the form provider:model"),
        ("", "not of the form provider:model"),
        ("anthropic:claude", "unknown provider 'anthropic'"),
    ],
)
def test_bad_names_list_the_known_providers(tmp_path: Path, name: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        load_model(name, settings=Settings(data_dir=tmp_path), clock=FakeClock())

    for provider in KNOWN_PROVIDERS:
        assert f"{provider}:" in str(caught.value)
