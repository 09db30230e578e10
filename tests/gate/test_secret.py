"""The server secret: from the environment, or a 0600 file generated once; derived keys."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest
from pydantic import SecretStr

from bastion.errors import ConfigError
from bastion.gate.secret import (
    API_KEYS_PURPOSE,
    AUDIT_PURPOSE,
    derive_key,
    load_server_secret,
    secret_file,
)


def test_a_configured_secret_wins_and_no_file_is_made(tmp_path):
    path = tmp_path / "gate.secret"
    value = "x" * 40
    assert load_server_secret(configured=SecretStr(value), path=path) == value.encode()
    assert not path.exists()


def test_a_short_configured_secret_is_refused_without_showing_it(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_server_secret(configured=SecretStr("hunter2-short"), path=tmp_path / "s")
    assert "at least 32" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_file_is_generated_once_with_0600_and_reused(tmp_path):
    path = tmp_path / "deep" / "gate.secret"
    first = load_server_secret(configured=None, path=path)
    assert len(first) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_server_secret(configured=None, path=path) == first
    assert [p.name for p in path.parent.iterdir()] == ["gate.secret"]  # no temporary left


async def test_processes_starting_at_once_agree_on_one_secret(tmp_path):
    path = tmp_path / "gate.secret"
    secrets = await asyncio.gather(
        *(asyncio.to_thread(load_server_secret, configured=None, path=path) for _ in range(8))
    )
    assert len(set(secrets)) == 1


def test_a_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "gate.secret"
    load_server_secret(configured=None, path=path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"accessible to other users \(mode 0644\).*chmod 600"):
        load_server_secret(configured=None, path=path)


def test_a_file_with_too_short_a_secret_is_refused(tmp_path):
    path = tmp_path / "gate.secret"
    path.write_text("short\n")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="holds 5 characters"):
        load_server_secret(configured=None, path=path)


def test_an_unwritable_directory_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot create the gate secret file"):
        load_server_secret(configured=None, path=blocker / "gate.secret")


def test_derived_keys_differ_by_purpose_and_secret():
    a = derive_key(b"s" * 32, API_KEYS_PURPOSE)
    assert len(a) == 32
    assert a != derive_key(b"s" * 32, AUDIT_PURPOSE)
    assert a != derive_key(b"t" * 32, API_KEYS_PURPOSE)
    assert a == derive_key(b"s" * 32, API_KEYS_PURPOSE)


def test_secret_file_defaults_to_the_data_dir(tmp_path):
    assert secret_file(tmp_path) == tmp_path / "gate.secret"
    assert secret_file(tmp_path, tmp_path / "x") == tmp_path / "x"
