from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.errors import ConfigError
from bastion.gate.principals import load_principals
from bastion.messages import Principal

EXPECTED = [
    Principal(
        id="c1",
        roles=frozenset({"customer"}),
        scopes=frozenset({"orders:read", "kb:read"}),
        display_name="Alice",
    ),
    Principal(id="lead", scopes=frozenset({"*"})),
]


def write_json(tmp_path: Path, data: object, name: str = "principals.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_loads_json(tmp_path: Path) -> None:
    path = write_json(
        tmp_path,
        {
            "principals": [
                {
                    "id": "c1",
                    "roles": ["customer"],
                    "scopes": ["orders:read", "kb:read"],
                    "display_name": "Alice",
                },
                {"id": "lead", "scopes": ["*"]},
            ]
        },
    )
    assert load_principals(path) == EXPECTED


def test_loads_toml(tmp_path: Path) -> None:
    path = tmp_path / "principals.toml"
    path.write_text(
        """
[[principals]]
id = "c1"
roles = ["customer"]
scopes = ["orders:read", "kb:read"]
display_name = "Alice"

[[principals]]
id = "lead"
scopes = ["*"]
""",
        encoding="utf-8",
    )
    assert load_principals(path) == EXPECTED


def test_empty_list_is_fine(tmp_path: Path) -> None:
    assert load_principals(write_json(tmp_path, {"principals": []})) == []


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"principals": [{"roles": ["x"]}]}, r"principals\.0\.id: Field required"),
        ({"principals": [{"id": ""}]}, r"principals\.0\.id: String should have at least 1"),
        ({"principals": [{"id": 7}]}, r"principals\.0\.id: Input should be a valid string"),
        ({"principals": [{"id": "a", "scopes": "orders:read"}]}, r"principals\.0\.scopes"),
        ({"principals": [{"id": "a", "scopes": [1]}]}, r"principals\.0\.scopes\.0"),
        ({"principals": [{"id": "a", "scope": ["x"]}]}, r"principals\.0\.scope: Extra inputs"),
        ({"principals": {"id": "a"}}, r"principals: Input should be a valid list"),
        ({}, r"principals: Field required"),
        ([], r"\(top level\): Input should be a valid dictionary"),
    ],
)
def test_bad_shapes_name_file_and_problem(tmp_path: Path, data: object, problem: str) -> None:
    path = write_json(tmp_path, data)
    with pytest.raises(ConfigError, match=problem) as info:
        load_principals(path)
    assert str(path) in str(info.value)


def test_blank_id_is_refused(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"principals": [{"id": "  "}]})
    with pytest.raises(ConfigError, match=r"principals\.0\.id is blank"):
        load_principals(path)


def test_duplicate_id_is_refused(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"principals": [{"id": "c1"}, {"id": "c2"}, {"id": "c1"}]})
    with pytest.raises(ConfigError, match=r"duplicate id 'c1' \(principals\.2\)"):
        load_principals(path)


def test_invalid_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"p\.json: not valid JSON"):
        load_principals(path)


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[[principals]\nid=", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"p\.toml: not valid TOML"):
        load_principals(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.json: cannot be read"):
        load_principals(tmp_path / "nope.json")


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_principals(path)


@pytest.mark.parametrize("name", ["principals.yaml", "principals"])
def test_unknown_format_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown format .*use a \.json or \.toml file"):
        load_principals(path)
