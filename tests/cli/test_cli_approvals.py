"""Approval end to end through the CLI, across processes, on durable execution (SQLite).

A support lead's refund above the cap is queued (``bastion run --detach``); a worker runs it until
it pauses for approval, then stops (the process exits). Another process approves it with an
approver's key; a restarted worker resumes the run, which makes the refund exactly once and
completes. A second use of the same approval, a non-approver and an unknown id are refused with
clear errors. Waits on the subprocesses are polls with a bound (real time: TID251 waived).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.cli.main import main
from bastion.clock import SystemClock
from bastion.demo.support.app import DATABASE_NAME, SCRIPT_PATH
from bastion.memory.default import SqlMemory
from bastion.messages import RunStatus
from bastion.settings import Settings

MESSAGE = "Refund 250.00 on order A1007, the espresso machine arrived broken"


class Cli:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = dict(os.environ)
        self.env.update(
            {
                "BASTION_DATA_DIR": str(data_dir),
                "BASTION_MODEL__NAME": f"scripted:{SCRIPT_PATH}",
                "BASTION_DURABLE__POLLING_INTERVAL_S": "0.05",
                "BASTION_DURABLE__HEARTBEAT_S": "0.5",
            }
        )
        self.env.pop("BASTION_API_KEY", None)
        self.workers: list[subprocess.Popen[str]] = []

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bastion.cli.main", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def key(self, principal: str, *extra: str) -> str:
        done = self("keys", "create", principal, "--no-expiry", "--json", *extra)
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["key"])

    def start_worker(self) -> subprocess.Popen[str]:
        worker = subprocess.Popen(
            [sys.executable, "-m", "bastion.cli.main", "worker", "--id", "approvals-w1"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.workers.append(worker)
        return worker

    def wait_ready(self, worker: subprocess.Popen[str]) -> None:
        assert worker.stderr is not None
        for line in worker.stderr:  # ends when the worker exits
            if " ready" in line:
                return
        raise AssertionError("the worker exited before it was ready")

    def stop_worker(self, worker: subprocess.Popen[str]) -> int:
        worker.terminate()
        try:
            return worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            return worker.wait()

    def status(self, run_id: str) -> RunStatus | None:
        async def go() -> RunStatus | None:
            settings = Settings(data_dir=self.data_dir)
            memory = SqlMemory.from_url(settings.database_url, clock=SystemClock())
            await memory.start()
            try:
                record = await memory.get_run(run_id)
                return None if record is None else record.status
            finally:
                await memory.close()

        return asyncio.run(go())

    def wait_for(self, run_id: str, wanted: RunStatus, worker: subprocess.Popen[str]) -> None:
        give_up = time.monotonic() + 90  # noqa: TID251
        while time.monotonic() < give_up:  # noqa: TID251
            if self.status(run_id) is wanted:
                return
            if worker.poll() is not None:
                assert worker.stderr is not None
                raise AssertionError(f"worker exited early:\n{worker.stderr.read()[-3000:]}")
            time.sleep(0.2)  # noqa: TID251
        raise AssertionError(f"run {run_id} never reached {wanted.value}: {self.status(run_id)}")

    def stays(self, run_id: str, wanted: RunStatus, *, seconds: float) -> None:
        until = time.monotonic() + seconds  # noqa: TID251
        while time.monotonic() < until:  # noqa: TID251
            assert self.status(run_id) is wanted
            time.sleep(0.2)  # noqa: TID251

    def refunds(self) -> list[tuple[str, int]]:
        with sqlite3.connect(self.data_dir / DATABASE_NAME) as conn:
            return list(conn.execute("SELECT order_id, amount_cents FROM refunds ORDER BY rowid"))


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path)
    yield runner
    for worker in runner.workers:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if worker.stderr:
            worker.stderr.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_refund_above_the_cap_pauses_is_approved_from_another_process_and_completes(cli: Cli):
    lead_key = cli.key("lead")
    manager_key = cli.key("manager", "--role", "approver")

    # The worker runs the request until it pauses for approval; then it stops: the process exits.
    worker = cli.start_worker()
    cli.wait_ready(worker)
    queued = cli("run", MESSAGE, "--api-key", lead_key, "--detach", "--json")
    assert queued.returncode == 0, queued.stderr
    run_id = json.loads(queued.stdout)["run_id"]
    cli.wait_for(run_id, RunStatus.AWAITING_APPROVAL, worker)
    assert cli.stop_worker(worker) == 0
    # A second restart while it waits: the run is recovered and waits on, untouched.
    worker = cli.start_worker()
    cli.wait_ready(worker)
    cli.stays(run_id, RunStatus.AWAITING_APPROVAL, seconds=2.0)
    assert cli.stop_worker(worker) == 0
    before = len(cli.refunds())
    assert ("A1007", 25000) not in cli.refunds()  # nothing refunded while waiting

    listed = cli("approvals", "list", "--json", "--api-key", manager_key)
    assert listed.returncode == 0, listed.stderr
    (pending,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert pending["run_id"] == run_id
    assert pending["tool"] == "issue_refund"
    assert pending["requested_by"] == "lead"
    approval_id = pending["approval_id"]

    # Refused clearly: no key, a key without the approver role, an unknown id.
    no_key = cli("approvals", "approve", approval_id)
    assert no_key.returncode == 2
    assert "API key is required" in no_key.stderr
    not_approver = cli("approvals", "approve", approval_id, "--api-key", lead_key)
    assert not_approver.returncode == 2
    assert "may not approve" in not_approver.stderr  # lead asked for it (and is no approver)
    unknown = cli("approvals", "approve", "ap_unknown", "--api-key", manager_key)
    assert unknown.returncode == 2
    assert "no approval 'ap_unknown'" in unknown.stderr
    assert "Traceback" not in no_key.stderr + not_approver.stderr + unknown.stderr

    approved = cli("approvals", "approve", approval_id, "--api-key", manager_key, "--note", "ok")
    assert approved.returncode == 0, approved.stderr
    assert f"{approval_id} approved by manager" in approved.stdout

    # A restarted worker (same id) recovers the run, which resumes at the paused step.
    worker = cli.start_worker()
    cli.wait_for(run_id, RunStatus.COMPLETED, worker)
    cli.stop_worker(worker)
    assert cli.refunds()[before:] == [("A1007", 25000)]  # exactly once

    reused = cli("approvals", "approve", approval_id, "--api-key", manager_key)
    assert reused.returncode == 2
    assert "already" in reused.stderr
    shown = cli("runs", "show", run_id, "--json")
    events = json.loads(shown.stdout)["events"]
    states = [e["state"] for e in events if e["kind"] == "approval"]
    assert states[0] == "requested"
    assert states[-1] == "granted"


# -- refusals, in process through main() (fast) ---------------------------------------------------


@pytest.fixture
def in_process(cli_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`cli_data`, with the demo's scripted model."""
    monkeypatch.setenv("BASTION_MODEL__NAME", f"scripted:{SCRIPT_PATH}")
    return cli_data


def _key(capsys, *args: str) -> str:
    assert main(["keys", "create", *args, "--no-expiry", "--json"]) == 0
    return str(json.loads(capsys.readouterr().out)["key"])


@pytest.mark.usefixtures("in_process")
def test_deciding_needs_an_api_key(capsys):
    assert main(["approvals", "approve", "ap_x"]) == 2
    err = capsys.readouterr().err
    assert "API key is required" in err
    assert "--role approver" in err


@pytest.mark.usefixtures("in_process")
def test_an_unknown_key_is_refused_clearly(capsys):
    assert main(["approvals", "list", "--api-key", "bst_" + "a" * 12 + "_" + "b" * 43]) == 2
    assert "not authenticated" in capsys.readouterr().err


@pytest.mark.usefixtures("in_process")
def test_listing_needs_the_approver_role(capsys):
    lead = _key(capsys, "lead")
    assert main(["approvals", "list", "--api-key", lead]) == 2
    assert "lacks the 'approver' role" in capsys.readouterr().err


@pytest.mark.usefixtures("in_process")
def test_an_approver_sees_an_empty_queue_and_unknown_ids_are_refused(capsys):
    manager = _key(capsys, "manager", "--role", "approver")
    assert main(["approvals", "list", "--api-key", manager]) == 0
    assert "No approvals are waiting." in capsys.readouterr().out
    assert main(["approvals", "list", "--json", "--api-key", manager]) == 0
    assert capsys.readouterr().out == ""
    assert main(["approvals", "deny", "ap_nope", "--reason", "no", "--api-key", manager]) == 2
    assert "no approval 'ap_nope'" in capsys.readouterr().err


@pytest.mark.usefixtures("in_process")
def test_a_denial_needs_a_reason(capsys):
    assert main(["approvals", "deny", "ap_x", "--reason", " ", "--api-key", "k"]) == 2
    assert "--reason must say why" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bastion_run_exits_when_the_run_pauses_and_runs_resume_finishes_it(cli: Cli):
    lead_key = cli.key("lead")
    manager_key = cli.key("manager", "--role", "approver")

    paused = cli("run", MESSAGE, "--api-key", lead_key, "--json")
    assert paused.returncode == 3, paused.stderr  # paused: the process exits, the run waits
    (line,) = [json.loads(x) for x in paused.stdout.splitlines() if x.startswith("{")]
    assert line["status"] == "awaiting_approval"
    run_id, approval_id = line["run_id"], line["approval_id"]
    assert cli.status(run_id) is RunStatus.AWAITING_APPROVAL
    assert ("A1007", 25000) not in cli.refunds()

    approved = cli("approvals", "approve", approval_id, "--api-key", manager_key)
    assert approved.returncode == 0, approved.stderr

    resumed = cli("runs", "resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    (done,) = [json.loads(x) for x in resumed.stdout.splitlines() if x.startswith("{")]
    assert done["status"] == "completed"
    assert cli.refunds().count(("A1007", 25000)) == 1  # exactly once
    assert cli.status(run_id) is RunStatus.COMPLETED

    tampered_or_reused = cli("approvals", "approve", approval_id, "--api-key", manager_key)
    assert tampered_or_reused.returncode == 2
    assert "already used" in tampered_or_reused.stderr


def test_a_tampered_approval_is_refused_across_processes_and_the_refund_never_runs(cli: Cli):
    lead_key = cli.key("lead")
    manager_key = cli.key("manager", "--role", "approver")
    paused = cli("run", MESSAGE, "--api-key", lead_key, "--json")
    assert paused.returncode == 3, paused.stderr
    (line,) = [json.loads(x) for x in paused.stdout.splitlines() if x.startswith("{")]
    run_id, approval_id = line["run_id"], line["approval_id"]

    # Someone with write access to the database rebinds the approval to another call (a bigger
    # refund, say: any other arguments), and has it approved.
    with sqlite3.connect(cli.data_dir / "bastion.db") as conn:
        changed = conn.execute(
            "UPDATE approvals SET args_hash = ? WHERE approval_id = ?", ("0" * 64, approval_id)
        ).rowcount
    assert changed == 1
    approved = cli("approvals", "approve", approval_id, "--api-key", manager_key)
    assert approved.returncode == 0, approved.stderr

    resumed = cli("runs", "resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr  # the run ends (replanned without the refund)
    (done,) = [json.loads(x) for x in resumed.stdout.splitlines() if x.startswith("{")]
    assert "refunded" not in done["message"].lower()
    assert all(s["tool_name"] != "issue_refund" or s["status"] != "success" for s in done["steps"])
    assert ("A1007", 25000) not in cli.refunds()  # the refund never ran
    shown = json.loads(cli("runs", "show", run_id, "--json").stdout)
    states = [e["state"] for e in shown["events"] if e["kind"] == "approval"]
    assert states == ["requested", "refused"]
    audited = cli("audit", "show", "--json")
    actions = [json.loads(x) for x in audited.stdout.splitlines() if x.strip()]
    assert any(a["action"] == "approval_use" and a["decision"] == "deny" for a in actions)


def test_without_durable_execution_a_paused_run_is_cancelled_with_a_message(capsys, in_process):
    assert main(["run", MESSAGE, "--user", "lead", "--json"]) == 2
    err = capsys.readouterr().err
    assert "needs a human approval" in err
    assert "BASTION_DURABLE__ENABLED" in err
    with sqlite3.connect(in_process / DATABASE_NAME) as conn:
        assert ("A1007", 25000) not in list(
            conn.execute("SELECT order_id, amount_cents FROM refunds")
        )
    with sqlite3.connect(in_process / "bastion.db") as conn:
        assert [s for (s,) in conn.execute("SELECT status FROM runs")] == ["cancelled"]
