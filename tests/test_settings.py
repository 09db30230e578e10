import pytest

from bastion.errors import ConfigError
from bastion.settings import load_settings


def test_nested_environment_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("BASTION_RECOVERY__MAX_ATTEMPTS", "5")
    monkeypatch.setenv("BASTION_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.recovery.max_attempts == 5
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}"


def test_openai_variables_are_honoured(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = load_settings()
    assert settings.effective_openai_base_url == "http://127.0.0.1:9/v1"
    key = settings.effective_openai_api_key
    assert key is not None
    assert key.get_secret_value() == "sk-test"
    assert "sk-test" not in repr(settings)


def test_bad_value_names_key_and_value(monkeypatch):
    monkeypatch.setenv("BASTION_RECOVERY__MAX_ATTEMPTS", "lots")
    with pytest.raises(ConfigError, match=r"recovery\.max_attempts='lots'"):
        load_settings()


def test_negative_timeout_override_is_refused():
    with pytest.raises(ConfigError, match="positive"):
        load_settings(sandbox={"timeout_overrides": {"slow": -1}})


def test_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="nonsense"):
        load_settings(nonsense=1)
