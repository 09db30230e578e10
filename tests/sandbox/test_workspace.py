"""Workspace files in and out, handled inside the sandbox: names checked, links refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.sandbox.workspace import (
    WorkspaceLinkRefused,
    check_name,
    collect_files,
    write_files,
)


@pytest.mark.parametrize(
    "name", ["", "/etc/passwd", "../up.txt", "a/../b", "a//b", "./a", "x" * 201, "nul\0l"]
)
def test_only_plain_relative_names_are_accepted(name: str) -> None:
    with pytest.raises(ValueError, match="must be a relative path"):
        check_name(name)


def test_files_go_in_and_come_back(tmp_path: Path) -> None:
    write_files({"a.txt": "one", "data/b.csv": "x,y\n"}, root=str(tmp_path))
    (tmp_path / "out.txt").write_text("new")
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00")

    files, skipped = collect_files(
        root=str(tmp_path), max_files=10, max_bytes=1000, unchanged={"a.txt": "one"}
    )

    assert files == {"data/b.csv": "x,y\n", "out.txt": "new"}
    assert skipped == {"blob.bin": "not UTF-8 text"}


def test_caps_on_count_and_size(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"f{i}.txt").write_text("z" * 10)

    files, skipped = collect_files(root=str(tmp_path), max_files=2, max_bytes=15)

    assert files == {"f0.txt": "z" * 10}
    assert skipped["f1.txt"].endswith("over what a result may carry")
    assert skipped["f2.txt"] == "more than 2 files" or "over what" in skipped["f2.txt"]


def test_a_link_in_the_workspace_is_refused_not_read(tmp_path: Path) -> None:
    secret = tmp_path.parent / f"{tmp_path.name}-secret"
    secret.write_text("do not read")
    (tmp_path / "innocent.txt").symlink_to(secret)

    with pytest.raises(WorkspaceLinkRefused, match=r"'innocent\.txt' is a symbolic link"):
        collect_files(root=str(tmp_path), max_files=10, max_bytes=1000)


def test_writing_through_a_planted_link_is_refused(tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "dir").symlink_to(outside)
    (tmp_path / "file.txt").symlink_to(outside / "target.txt")

    with pytest.raises(WorkspaceLinkRefused):
        write_files({"dir/x.txt": "no"}, root=str(tmp_path))
    with pytest.raises(WorkspaceLinkRefused):
        write_files({"file.txt": "no"}, root=str(tmp_path))
    assert list(outside.iterdir()) == []
