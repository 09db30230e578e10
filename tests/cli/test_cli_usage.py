"""``bastion usage``: the ledger's spend through the CLI, as a table and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.cli.main import main
from bastion.demo.support.app import SCRIPT_PATH

MODEL = f"scripted:{SCRIPT_PATH}"


@pytest.fixture(autouse=True)
def data(cli_data: Path) -> Path:
    return cli_data


def test_usage_reports_the_runs_model_calls(capsys):
    assert main(["run", "Where is my order A1001?", "--user", "c1", "--model", MODEL]) == 0
    capsys.readouterr()
    assert main(["usage", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [line] = report["lines"]
    assert line["key"] == MODEL
    assert line["calls"] >= 1
    assert line["input_tokens"] > 0
    assert report["total_cost_usd"] == "0"

    assert main(["usage", "--by", "user", "--since", "2000-01-01"]) == 0
    out = capsys.readouterr().out
    assert "c1" in out
    assert out.splitlines()[-1].startswith("total")

    assert main(["usage", "--user", "nobody"]) == 0
    assert "no usage recorded for user 'nobody'" in capsys.readouterr().out


def test_usage_refuses_a_bad_date_and_grouping(capsys):
    assert main(["usage", "--since", "yesterday"]) == 2
    assert "'yesterday' is not a date" in capsys.readouterr().err
    assert main(["usage", "--by", "tool"]) == 2
    assert "tool" in capsys.readouterr().err
