"""Pids cgroups: finding a writable hierarchy, capping, killing everything, cleaning up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.sandbox import cgroups
from bastion.sandbox.cgroups import (
    Cgroup,
    CgroupTree,
    CgroupUnavailable,
    PidsHierarchy,
    find_pids_hierarchy,
)
from bastion.testing.clock import FakeClock

from .conftest import require_tier


def mountinfo(*mounts: tuple[str, str, str]) -> str:
    return "\n".join(
        f"30 25 0:26 / {point} rw,nosuid - {fstype} {fstype} {options}"
        for point, fstype, options in mounts
    )


def test_a_v1_pids_hierarchy_is_found_under_our_own_cgroup(tmp_path: Path) -> None:
    (tmp_path / "user" / "app").mkdir(parents=True)
    info = mountinfo(
        (str(tmp_path), "cgroup", "rw,pids"), ("/sys/fs/cgroup/cpu", "cgroup", "rw,cpu")
    )

    found = find_pids_hierarchy(info, "9:cpu:/\n8:pids:/user/app\n")

    assert found == PidsHierarchy(version=1, base=tmp_path / "user" / "app")
    assert found.describe() == f"cgroup v1 pids at {tmp_path / 'user' / 'app'}"


def test_a_v2_hierarchy_needs_the_pids_controller(tmp_path: Path) -> None:
    info = mountinfo((str(tmp_path), "cgroup2", "rw"))
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    with pytest.raises(CgroupUnavailable, match="no cgroup hierarchy with the pids controller"):
        find_pids_hierarchy(info, "0::/\n")

    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    assert find_pids_hierarchy(info, "0::/\n") == PidsHierarchy(version=2, base=tmp_path)


def test_an_unwritable_hierarchy_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    info = mountinfo((str(tmp_path), "cgroup", "rw,pids"))

    with pytest.raises(CgroupUnavailable, match="not writable"):
        find_pids_hierarchy(info, "8:pids:/\n")


@pytest.fixture
def hierarchy() -> PidsHierarchy:
    require_tier("process")
    return find_pids_hierarchy()


#: Joins the cgroup named by argv[1], forks five sleepers, prints "started refused", then waits.
FORKER = """
import os, sys, time
with open(sys.argv[1], "w") as procs:
    procs.write("0")
started = refused = 0
for _ in range(5):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    started += 1
print(started, refused, flush=True)
time.sleep(60)
"""


def test_a_cgroup_caps_kills_and_goes(hierarchy: PidsHierarchy) -> None:
    tree = CgroupTree(hierarchy)
    try:
        group = tree.create(max_pids=3)
        assert (group.path / "pids.max").read_text().strip() == "3"
        # A process joins the cgroup, then tries to start five sleepers: the cap stops it.
        proc = subprocess.Popen(
            [sys.executable, "-c", FORKER, str(group.procs_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            started, refused = map(int, proc.stdout.readline().split())  # it says when done
            assert (started, refused) == (2, 3)  # itself and two sleepers: the cap of 3
            assert len(group.pids()) == 3
            assert group.kill_all() == 3
            proc.wait(timeout=5)
            assert group.cap_hits() >= 3
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        while group.pids():
            group.kill_all()
        assert group.remove()
        assert not group.path.exists()
        assert group.remove()  # gone already: fine
    finally:
        tree.remove()
    assert not tree.root.exists()


async def test_destroy_gives_up_on_a_cgroup_that_will_not_empty(
    hierarchy: PidsHierarchy, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = CgroupTree(hierarchy)
    try:
        group = tree.create(max_pids=4)
        monkeypatch.setattr(Cgroup, "pids", lambda self: [999_999_999])
        monkeypatch.setattr(Cgroup, "kill_all", lambda self: 0)
        clock = FakeClock()

        assert await group.destroy(clock) is False
        assert clock.sleeps  # it waited on the clock, not on the wall
        monkeypatch.undo()
        assert await group.destroy(FakeClock()) is True
    finally:
        tree.remove()


def test_trees_of_dead_runtimes_are_removed(hierarchy: PidsHierarchy) -> None:
    dead = subprocess.Popen(["/bin/true"])
    dead.wait()
    stale = hierarchy.base / f"bastion-{dead.pid}-abcd1234"
    (stale / "w1").mkdir(parents=True)
    alive = hierarchy.base / f"bastion-{os.getpid()}-abcd1234"
    alive.mkdir()
    try:
        cgroups.remove_stale(hierarchy)

        assert not stale.exists()
        assert alive.exists()
    finally:
        for path in (stale / "w1", stale, alive):
            if path.exists():
                path.rmdir()


def test_probe_proves_the_hierarchy_usable(hierarchy: PidsHierarchy, tmp_path: Path) -> None:
    cgroups.probe(hierarchy)
    with pytest.raises(CgroupUnavailable, match="cannot create a cgroup"):
        cgroups.probe(PidsHierarchy(version=1, base=tmp_path / "missing"))
