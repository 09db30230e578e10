"""The checkpoint file: MAC'd lines, appended atomically, torn and forged lines reported."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bastion.errors import ConfigError
from bastion.gate.checkpoints import (
    append_checkpoint,
    checkpoint_line,
    make_checkpoint,
    read_checkpoints,
)

KEY = b"c" * 32
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_checkpoints_round_trip_through_the_file(tmp_path):
    path = tmp_path / "sub" / "cp.jsonl"
    first = make_checkpoint(KEY, size=5, head="a" * 64, at=AT)
    second = make_checkpoint(KEY, size=10, head="b" * 64, at=AT)
    append_checkpoint(path, first)
    append_checkpoint(path, second)
    read = read_checkpoints(path, key=KEY)
    assert read.checkpoints == (first, second)
    assert read.problems == ()
    assert not read.torn_tail
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_line_is_one_compact_json_object_with_its_mac(tmp_path):
    line = checkpoint_line(make_checkpoint(KEY, size=3, head="c" * 64, at=AT))
    assert line.endswith("\n")
    assert json.loads(line) == {
        "size": 3,
        "head": "c" * 64,
        "at": "2026-03-01T12:00:00.000000Z",
        "mac": make_checkpoint(KEY, size=3, head="c" * 64, at=AT).mac,
    }


@pytest.mark.parametrize(
    ("field", "value"), [("size", 4), ("head", "d" * 64), ("at", "2026-03-01T13:00:00.000000Z")]
)
def test_an_edited_checkpoint_fails_its_mac(tmp_path, field, value):
    path = tmp_path / "cp.jsonl"
    data = json.loads(checkpoint_line(make_checkpoint(KEY, size=3, head="c" * 64, at=AT)))
    data[field] = value
    path.write_text(json.dumps(data) + "\n")
    read = read_checkpoints(path, key=KEY)
    assert read.checkpoints == ()
    assert "bad MAC" in read.problems[0]
    assert f"{path}:1" in read.problems[0]


def test_a_checkpoint_made_with_another_key_is_refused(tmp_path):
    path = tmp_path / "cp.jsonl"
    append_checkpoint(path, make_checkpoint(b"o" * 32, size=3, head="c" * 64, at=AT))
    assert read_checkpoints(path, key=KEY).checkpoints == ()


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "[1, 2]",
        '{"size": 0, "head": "x", "at": "2026-03-01T12:00:00Z", "mac": "m"}',
        '{"size": "3", "head": "x", "at": "2026-03-01T12:00:00Z", "mac": "m"}',
        '{"size": 3, "head": "x", "at": "yesterday", "mac": "m"}',
        '{"size": 3, "head": "x", "at": "2026-03-01T12:00:00", "mac": "m"}',
        '{"size": 3, "head": "x", "at": "2026-03-01T12:00:00Z"}',
        '{"size": 3, "head": 7, "at": "2026-03-01T12:00:00Z", "mac": "m"}',
    ],
)
def test_malformed_lines_are_reported(tmp_path, line):
    path = tmp_path / "cp.jsonl"
    good = make_checkpoint(KEY, size=2, head="e" * 64, at=AT)
    path.write_text(line + "\n" + checkpoint_line(good))
    read = read_checkpoints(path, key=KEY)
    assert read.checkpoints == (good,)
    assert read.problems == (f"{path}:1: not a checkpoint (malformed line)",)


def test_a_torn_last_line_is_skipped_and_noted(tmp_path):
    path = tmp_path / "cp.jsonl"
    good = make_checkpoint(KEY, size=2, head="e" * 64, at=AT)
    torn = checkpoint_line(make_checkpoint(KEY, size=4, head="f" * 64, at=AT))[:30]
    path.write_text(checkpoint_line(good) + "\n" + torn)
    read = read_checkpoints(path, key=KEY)
    assert read.checkpoints == (good,)
    assert read.problems == ()
    assert read.torn_tail


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the checkpoint file"):
        read_checkpoints(tmp_path / "nope.jsonl", key=KEY)
