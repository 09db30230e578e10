"""Files in and out of a sandboxed call's workspace, handled from *inside* the sandbox.

The workspace is the tool's working directory: a directory in the sandbox's private, size-capped
``/tmp`` (a tmpfs the runtime never opens). Files go in as data in the call's args and come back
as data in its result, read by the tool process itself; so the runtime never follows a path the
tool could have planted a symbolic link at, and a link found here is refused outright rather than
read (`WorkspaceLinkRefused`, a `PermissionError`: the call ends ``denied``).

Standard library only: this runs in the sandbox child, which does not import Bastion's runtime.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

#: Longest relative path a workspace file may have.
MAX_NAME_CHARS = 200


class WorkspaceLinkRefused(PermissionError):
    """The workspace holds a symbolic link: links are never followed nor returned."""


def check_name(name: str) -> str:
    """`name` if it is a plain relative path inside the workspace.

    Raises:
        ValueError: absolute, empty, too long, or with ``..`` or empty parts.
    """
    parts = name.split("/")
    if (
        not name
        or len(name) > MAX_NAME_CHARS
        or name.startswith("/")
        or any(part in ("", ".", "..") for part in parts)
        or "\0" in name
    ):
        raise ValueError(
            f"workspace file name {name[:80]!r} must be a relative path such as 'data/items.csv'"
        )
    return name


def write_files(files: Mapping[str, str], *, root: str = ".") -> None:
    """Write text `files` (name → content) under `root`, never through an existing link.

    Raises:
        ValueError: a name is not a plain relative path.
        WorkspaceLinkRefused: a path component is a symbolic link.
    """
    for name, content in files.items():
        check_name(name)
        directory = root
        for part in name.split("/")[:-1]:
            directory = os.path.join(directory, part)
            if os.path.islink(directory):
                raise WorkspaceLinkRefused(f"workspace entry {directory!r} is a symbolic link")
            os.makedirs(directory, exist_ok=True)
        path = os.path.join(root, name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            if os.path.islink(path):
                raise WorkspaceLinkRefused(f"workspace entry {name!r} is a symbolic link") from exc
            raise
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)


def collect_files(
    *,
    root: str = ".",
    max_files: int,
    max_bytes: int,
    unchanged: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """The text files under `root`, as data, refusing any symbolic link.

    Args:
        root: The workspace.
        max_files: Files returned at most; the rest are listed as skipped.
        max_bytes: Bytes of content returned at most, all files together.
        unchanged: Inputs to leave out when their content is still the same.

    Returns:
        ``(files, skipped)``: name → text, and name → why it was not returned (binary, too large,
        too many files).

    Raises:
        WorkspaceLinkRefused: a symbolic link is anywhere in the workspace.
    """
    files: dict[str, str] = {}
    skipped: dict[str, str] = {}
    budget = max_bytes
    for name in sorted(_walk(root)):
        path = os.path.join(root, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            if os.path.islink(path):
                raise WorkspaceLinkRefused(f"workspace entry {name!r} is a symbolic link") from exc
            raise
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                skipped[name] = "not a regular file"
                continue
            if len(files) >= max_files:
                skipped[name] = f"more than {max_files} files"
                continue
            if info.st_size > budget:
                skipped[name] = f"{info.st_size} bytes: over what a result may carry"
                continue
            data = handle.read(budget + 1)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            skipped[name] = "not UTF-8 text"
            continue
        if unchanged is not None and unchanged.get(name) == text:
            continue
        files[name] = text
        budget -= len(data)
    return files, skipped


def _walk(root: str, prefix: str = "", depth: int = 0) -> list[str]:
    names: list[str] = []
    with os.scandir(os.path.join(root, prefix) if prefix else root) as entries:
        for entry in entries:
            name = f"{prefix}/{entry.name}" if prefix else entry.name
            if entry.is_symlink():
                raise WorkspaceLinkRefused(
                    f"workspace entry {name!r} is a symbolic link; links are never followed"
                )
            if entry.is_dir(follow_symlinks=False):
                if depth < 8:
                    names.extend(_walk(root, name, depth + 1))
            else:
                names.append(name)
    return names
