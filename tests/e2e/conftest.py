"""The real local model for end-to-end tests: installed by `make test`, required in CI.

The weights are assembled once per test session into a temporary cache (a second or two for the
0.5B model) and the engine is loaded once per process and shared, as in production. Where the
model is not installed the tests skip, saying what to install; with
``BASTION_REQUIRE_LOCAL_MODEL=1`` (the Makefile sets it) a missing model fails them instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bastion.models import weights
from bastion.settings import Settings, load_settings

#: CI's model: the fast one (README: which model each make target uses).
E2E_MODEL = "qwen2.5-0.5b"


@pytest.fixture(scope="session")
def local_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = weights.CATALOG[E2E_MODEL]
    missing = [] if weights.engine_installed() else [weights.ENGINE_INSTALL]
    if not missing:
        missing = weights.missing_parts(spec)
    if missing:
        reason = f"local:{E2E_MODEL} is not installed ({', '.join(missing[:2])}): `make test`"
        if os.environ.get("BASTION_REQUIRE_LOCAL_MODEL") == "1":
            pytest.fail(f"{reason}, and BASTION_REQUIRE_LOCAL_MODEL=1")
        pytest.skip(reason)
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def e2e_settings(local_cache: Path, tmp_path: Path) -> Settings:
    """Settings for a demo system on the real local model, in a fresh data directory."""
    overrides: dict[str, Any] = {}
    if "durable" in Settings.model_fields:
        # In process: these tests are about the model, not about surviving a crash.
        overrides["durable"] = {"enabled": False}
    return load_settings(
        data_dir=tmp_path,
        model={"name": f"local:{E2E_MODEL}"},
        local={"cache_dir": local_cache},
        **overrides,
    )
