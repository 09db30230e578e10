"""The gate's parts from settings: one secret, principals from code and file, one redactor."""

from __future__ import annotations

import json

import pytest

from bastion.errors import ConfigError
from bastion.gate.redact import REDACTED
from bastion.gate.secret import AUDIT_PURPOSE, derive_key
from bastion.gate.wiring import checkpoint_file, gate_from_settings, redactor_for
from bastion.messages import Principal
from bastion.settings import load_settings
from bastion.storage.engine import create_engine
from bastion.testing.clock import FakeClock


@pytest.fixture
async def engine(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    yield engine
    await engine.dispose()


async def test_principals_come_from_the_app_and_the_principals_file(tmp_path, engine):
    path = tmp_path / "people.json"
    path.write_text(json.dumps({"principals": [{"id": "ops", "scopes": ["*"]}]}))
    settings = load_settings(data_dir=tmp_path, gate={"principals_file": str(path)})
    wiring = gate_from_settings(
        settings, engine=engine, clock=FakeClock(), principals=[Principal(id="c1")]
    )
    assert [p.id for p in wiring.principals] == ["c1", "ops"]


async def test_a_principal_declared_twice_is_a_config_error(tmp_path, engine):
    path = tmp_path / "people.toml"
    path.write_text('[[principals]]\nid = "c1"\n')
    settings = load_settings(data_dir=tmp_path, gate={"principals_file": str(path)})
    with pytest.raises(ConfigError, match="'c1' are already declared by the app"):
        gate_from_settings(
            settings, engine=engine, clock=FakeClock(), principals=[Principal(id="c1")]
        )


async def test_the_audit_key_is_derived_from_the_configured_secret(tmp_path, engine):
    secret = "s" * 40
    settings = load_settings(data_dir=tmp_path, gate={"secret": secret})
    wiring = gate_from_settings(settings, engine=engine, clock=FakeClock())
    assert wiring.audit_key == derive_key(secret.encode(), AUDIT_PURPOSE)
    assert not (tmp_path / "gate.secret").exists()
    assert wiring.checkpoint_file == tmp_path / "audit-checkpoints.jsonl"


async def test_without_a_configured_secret_the_file_is_made_and_reused(tmp_path, engine):
    settings = load_settings(data_dir=tmp_path)
    first = gate_from_settings(settings, engine=engine, clock=FakeClock())
    second = gate_from_settings(settings, engine=engine, clock=FakeClock())
    assert first.audit_key == second.audit_key
    assert (tmp_path / "gate.secret").exists()


async def test_the_redactor_hides_declared_fields_and_every_configured_secret(tmp_path, engine):
    settings = load_settings(
        data_dir=tmp_path,
        gate={"secret": "g" * 40, "secret_fields": ["iban"]},
        openai_api_key="provider-key-123456",
    )
    redactor = gate_from_settings(settings, engine=engine, clock=FakeClock()).redactor
    assert redactor.value({"iban": "x"}) == {"iban": REDACTED}
    assert redactor.text("g" * 40) == REDACTED
    assert redactor.text("key provider-key-123456") == f"key {REDACTED}"
    assert redactor_for(settings).text("provider-key-123456") == REDACTED


def test_the_checkpoint_file_can_be_configured(tmp_path):
    settings = load_settings(
        data_dir=tmp_path, gate={"audit_checkpoint_file": "/elsewhere/c.jsonl"}
    )
    assert str(checkpoint_file(settings)) == "/elsewhere/c.jsonl"


def test_gate_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BASTION_GATE__REQUIRE_API_KEY", "true")
    monkeypatch.setenv("BASTION_GATE__SECRET_FIELDS", '["iban"]')
    monkeypatch.setenv("BASTION_GATE__KEY_TTL_DAYS", "7")
    settings = load_settings(data_dir=tmp_path)
    assert settings.gate.require_api_key
    assert settings.gate.secret_fields == ["iban"]
    assert settings.gate.key_ttl_days == 7
    monkeypatch.setenv("BASTION_GATE__AUDIT_CHECKPOINT_EVERY", "0")
    with pytest.raises(ConfigError, match="audit_checkpoint_every"):
        load_settings(data_dir=tmp_path)
