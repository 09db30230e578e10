"""``bastion serve`` as users start it: a real process on a free port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from bastion.cli.main import main
from bastion.cli.serve import app_name

APPS = Path(__file__).parent / "apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_app_name_is_the_module_name():
    assert app_name("bastion.demo.support:build") == "support"
    assert app_name("scripted_app:build") == "scripted_app"


@pytest.mark.slow
def test_bastion_serve_answers_health_and_refuses_keyless_requests(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(APPS),
        "BASTION_DURABLE__ENABLED": "false",
        "BASTION_GATE__REQUIRE_API_KEY": "true",
    }
    command = [
        sys.executable,
        "-m",
        "bastion.cli.main",
        "serve",
        "--app",
        "scripted_app:build",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path),
    ]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):  # bounded wait for a real process: up to 30 s
            try:
                health = httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                threading.Event().wait(0.1)
        else:
            raise AssertionError("bastion serve did not answer within 30 s")
        assert health.json() == {"status": "ok"}
        refused = httpx.get(f"{url}/v1/runs")
        assert refused.status_code == 401
        models = httpx.get(f"{url}/readyz").json()
        assert models["checks"]["model"]["detail"].startswith("scripted:http")
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line["message"] == "Application startup complete." for line in lines)
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)


def test_bastion_serve_with_a_bad_app_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["serve", "--app", "no_such_module:build", "--data-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot import app module 'no_such_module'" in err
    assert len(err.strip().splitlines()) == 1
