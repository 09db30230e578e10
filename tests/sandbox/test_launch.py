"""The tiers' command lines: what each isolates, and what the os tier lets the tool see."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bastion.sandbox import bwrap, launch
from bastion.sandbox.bwrap import BwrapLauncher, _ancestors, _collapse, interpreter_paths
from bastion.sandbox.launch import UnshareLauncher, child_argv, child_sys_path
from bastion.settings import SandboxLimits, SandboxSettings


def test_the_process_tier_unshares_pid_mount_and_network() -> None:
    launcher = UnshareLauncher(settings=SandboxSettings(), unshare="/usr/bin/unshare")

    command = launcher.command(["python", "child.py", "3"])

    assert command == [
        "/usr/bin/unshare",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--net",
        "--",
        "python",
        "child.py",
        "3",
    ]
    assert launcher.network is False
    assert launcher.visible_roots() is None
    assert "/tmp" in launcher.hidden_roots()


def test_the_process_tier_may_be_given_the_network() -> None:
    launcher = UnshareLauncher(
        settings=SandboxSettings(process_network=True), unshare="/usr/bin/unshare"
    )

    assert "--net" not in launcher.command(["python"])
    assert launcher.network is True


@pytest.mark.parametrize(("euid", "drop"), [(0, [4242, 4343]), (1000, None)])
def test_root_drops_to_the_sandbox_user(
    monkeypatch: pytest.MonkeyPatch, euid: int, drop: list[int] | None
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    settings = SandboxSettings(
        sandbox_uid=4242, sandbox_gid=4343, limits=SandboxLimits(workspace_mb=8)
    )

    config = UnshareLauncher(settings=settings, unshare="unshare").child_config()

    assert config == {
        "private_tmp_bytes": 8 * 1024 * 1024,
        "drop_to": drop,
        "expose_interpreter": drop is not None,
    }


def test_the_child_runs_isolated_without_bytecode() -> None:
    argv = child_argv(7)

    assert argv[0] == os.path.realpath(sys.executable)
    assert argv[1:3] == ["-I", "-B"]
    assert argv[3].endswith("bastion/sandbox/child.py")
    assert argv[4] == "7"


def test_the_child_gets_the_existing_import_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "path", [str(tmp_path), "/no/such/dir", str(tmp_path)])

    paths = child_sys_path()

    assert paths[0] == str(tmp_path)
    assert "/no/such/dir" not in paths
    assert paths.count(str(tmp_path)) == 1
    assert paths[-1] == str(Path(launch.__file__).resolve().parents[2])


def test_the_os_tier_binds_only_what_the_interpreter_needs() -> None:
    launcher = BwrapLauncher(settings=SandboxSettings(), bwrap="/usr/bin/bwrap")

    command = launcher.command(["python", "child.py", "3"])
    binds = [command[i + 1] for i, arg in enumerate(command) if arg == "--ro-bind"]

    for flag in ("--die-with-parent", "--new-session"):
        assert flag in command
    assert not {"/", "/etc", "/home", "/root"} & set(binds)
    assert "/usr/lib" in binds
    assert binds == launcher.binds()
    for path in binds:  # every directory on the way to a bind is enterable by the sandbox user
        for ancestor in _ancestors(path):
            if ancestor == "/tmp":
                continue  # the private tmpfs itself (a checkout under /tmp binds inside it)
            at = command.index(ancestor)
            assert command[at - 3 : at] == ["--perms", "0755", "--dir"]
    size = command.index("--size")
    assert command[size + 1 : size + 4] == [str(64 * 1024 * 1024), "--tmpfs", "/tmp"]
    # The private /tmp comes before the binds, so code living under the host's /tmp stays visible.
    assert size < command.index("--ro-bind")
    assert command[command.index("--remount-ro") + 1] == "/dev"
    assert command[-4:] == ["--", "python", "child.py", "3"]
    assert launcher.hidden_roots() == ("/tmp",)
    visible = launcher.visible_roots()
    assert visible is not None
    assert "/tmp" not in visible


def test_as_root_no_user_namespace_maps_the_tool_to_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    settings = SandboxSettings(sandbox_uid=4242, sandbox_gid=4343)
    launcher = BwrapLauncher(settings=settings, bwrap="b")

    command = launcher.command([])

    assert "--unshare-user" not in command
    assert "--unshare-all" not in command
    for flag in ("--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"):
        assert flag in command
    caps = [command[i + 1] for i, arg in enumerate(command) if arg == "--cap-add"]
    assert command[command.index("--cap-drop") + 1] == "ALL"
    assert caps == ["CAP_SETUID", "CAP_SETGID", "CAP_CHOWN"]
    assert launcher.child_config() == {
        "private_tmp_bytes": 0,
        "drop_to": [4242, 4343],
        "expose_interpreter": False,
    }


def test_without_root_bubblewrap_makes_a_user_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    launcher = BwrapLauncher(settings=SandboxSettings(), bwrap="b")

    command = launcher.command([])

    assert command[1:4] == ["--unshare-all", "--unshare-user", "--disable-userns"]
    assert "--cap-add" not in command
    assert launcher.child_config()["drop_to"] is None


def test_a_system_python_binds_its_own_files_not_all_of_usr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "base_prefix", "/usr")

    paths = interpreter_paths()

    assert "/usr" not in paths
    assert paths[0] == os.path.realpath(sys.executable)


def test_nested_and_root_paths_collapse() -> None:
    assert _collapse(["/a/b", "/a", "/", "/c", "/a/bc", "/c", "/ab"]) == ["/a", "/c", "/ab"]


def test_ancestors_of_a_bind() -> None:
    assert _ancestors("/root/.pyenv/versions/3.11.7") == [
        "/root",
        "/root/.pyenv",
        "/root/.pyenv/versions",
    ]
    assert _ancestors("/usr") == []
    assert bwrap.find_bwrap() in (None, "/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap")
