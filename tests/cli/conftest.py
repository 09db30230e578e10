"""Shared fixtures of the CLI tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def cli_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A fresh data directory for in-process ``main()`` calls, durable execution off, no model
    or key from the environment; the log handlers the CLI adds are closed afterwards."""
    data = tmp_path / "data"
    monkeypatch.setenv("BASTION_DATA_DIR", str(data))
    monkeypatch.setenv("BASTION_DURABLE__ENABLED", "false")
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "BASTION_MODEL__NAME", "BASTION_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    logger = logging.getLogger("bastion")
    handlers, level = list(logger.handlers), logger.level
    yield data
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers, logger.level = handlers, level
