"""Loading principals (who may act, with which roles and scopes) from a JSON or TOML file.

The file is the app builder's configuration, so every mistake in it is a `ConfigError` raised at
start, naming the file and the problem; nothing is guessed or skipped. The shape is::

    {"principals": [{"id": "c1", "roles": ["customer"], "scopes": ["orders:read"],
                     "display_name": "Ada"}]}

or the same in TOML (``[[principals]]`` tables). Only ``id`` is required. Types are checked
strictly (a scope list of numbers, or a bare string where a list belongs, is refused rather than
coerced), and unknown keys are refused so that a misspelt ``scope`` does not silently grant nothing.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion.errors import ConfigError
from bastion.messages import Principal


class _PrincipalEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1)
    roles: list[str] = Field(default_factory=list)
    scopes: list[str] = Field(default_factory=list)
    display_name: str | None = None


class _PrincipalsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    principals: list[_PrincipalEntry]


def load_principals(path: Path) -> list[Principal]:
    """Read the principals declared in `path` (``.json`` or ``.toml``), in file order.

    Raises:
        ConfigError: the file is missing or unreadable, is not valid JSON/TOML, has an unknown
            suffix, does not have the expected shape, or declares the same id twice.
    """
    raw = _parse(path, _read(path))
    try:
        parsed = _PrincipalsFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"principals file {path}: {problems}") from exc
    principals: list[Principal] = []
    seen: set[str] = set()
    for index, entry in enumerate(parsed.principals):
        if not entry.id.strip():
            raise ConfigError(f"principals file {path}: principals.{index}.id is blank")
        if entry.id in seen:
            raise ConfigError(
                f"principals file {path}: duplicate id {entry.id!r} (principals.{index}); "
                "each principal must have its own id"
            )
        seen.add(entry.id)
        principals.append(
            Principal(
                id=entry.id,
                roles=frozenset(entry.roles),
                scopes=frozenset(entry.scopes),
                display_name=entry.display_name,
            )
        )
    return principals


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"principals file {path}: cannot be read: {exc}") from exc


def _parse(path: Path, text: str) -> Any:
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            return tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"principals file {path}: not valid {suffix[1:].upper()}: {exc}") from exc
    raise ConfigError(
        f"principals file {path}: unknown format {suffix or '(no suffix)'!r}; "
        "use a .json or .toml file"
    )
