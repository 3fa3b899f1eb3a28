"""`nudge dev` (what `make run` runs): the whole stack comes up, answers, stops on Ctrl+C,
and a second run reuses `.nudge/` so workflows started before carry on."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.fakes.reamaze import FakeReamaze
from tests.fakes.server import free_port, serve
from tests.processes import BIN


class DevStack:
    def __init__(self, workdir: Path, temporal_port: int, ui_port: int, http_port: int) -> None:
        self.workdir = workdir
        self.http = f"http://127.0.0.1:{http_port}"
        self.ui = f"http://127.0.0.1:{ui_port}"
        self.env = {
            **os.environ,
            "NUDGE_TEMPORAL__ADDRESS": f"127.0.0.1:{temporal_port}",
            "NUDGE_TEMPORAL__UI_PORT": str(ui_port),
            "NUDGE_HTTP__PORT": str(http_port),
            "NUDGE_DATABASE_URL": f"sqlite:///{workdir / '.nudge' / 'nudge.db'}",
            "NUDGE_FOLLOWUP__WAITS": "1h",
        }
        self.process: subprocess.Popen[str] | None = None
        self.output = ""

    def start(self) -> str:
        """Start and return the admin token it prints (``new`` or ``reused`` from ``.nudge/``)."""
        self.process = subprocess.Popen(
            [str(BIN / "nudge"), "dev"],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 90
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                break
            self.output += line
            if match := re.search(r"Admin token \((?:new|reused), kept in [^)]*\): (\S+)", line):
                return match.group(1)
        raise AssertionError(f"nudge dev did not come up:\n{self.output}")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        assert self.process.stdout is not None
        self.output += self.process.stdout.read()
        return code


def wait_healthy(url: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            response = httpx.get(f"{url}/healthz", timeout=5)
            if response.status_code == 200 or time.monotonic() > deadline:
                return response
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def port_closed(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
    except httpx.TransportError:
        return True
    return False


def test_nudge_dev_runs_the_stack_and_keeps_state(tmp_path: Path) -> None:
    temporal_port, ui_port, http_port = free_port(), free_port(), free_port()
    with serve(FakeReamaze().app) as reamaze:
        _run_and_restart(tmp_path, temporal_port, ui_port, http_port, reamaze.url)


def _run_and_restart(
    tmp_path: Path, temporal_port: int, ui_port: int, http_port: int, reamaze_url: str
) -> None:
    stack = DevStack(tmp_path, temporal_port, ui_port, http_port)
    # Re:amaze configured (a fake): a follow-up can start; every other channel is sandboxed.
    stack.env.update(
        {
            "NUDGE_REAMAZE__BASE_URL": reamaze_url,
            "NUDGE_REAMAZE__LOGIN_EMAIL": "bot@shop.test",
            "NUDGE_REAMAZE__API_TOKEN": "token",
        }
    )
    token = stack.start()
    try:
        health = wait_healthy(stack.http)
        assert health.status_code == 200, health.text
        assert health.json() == {"status": "ok", "database": "ok", "temporal": "ok"}
        assert httpx.get(f"{stack.http}/docs", timeout=5).status_code == 200
        assert httpx.get(stack.ui, timeout=10, follow_redirects=True).status_code == 200
        assert httpx.get(f"{stack.http}/v1/followups", timeout=5).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{stack.http}/v1/followups", headers=auth, timeout=5).json() == []
        assert "  Off        " in stack.output and "in sandbox (recorded, not sent)" in stack.output
        assert "helpdesk follow-ups" not in stack.output, "Re:amaze is configured"
        started = httpx.post(
            f"{stack.http}/v1/followups", json={"conversation": "keep-me"}, headers=auth, timeout=10
        )
        assert started.status_code == 201, started.text
    finally:
        code = stack.stop()
    assert code == 0, stack.output
    assert "stopped" in stack.output
    assert port_closed(http_port) and port_closed(ui_port), "Ctrl+C stops every part"
    assert (tmp_path / ".nudge" / "temporal.db").exists()

    second = DevStack(tmp_path, temporal_port, ui_port, http_port)
    second.env = stack.env
    first_token, token = token, second.start()
    try:
        assert "Admin token (new" in stack.output and "Admin token (reused" in second.output
        assert token == first_token, "a restart reuses the token kept in .nudge/dev-token"
        assert wait_healthy(second.http).status_code == 200
        auth = {"Authorization": f"Bearer {token}"}
        running = httpx.get(f"{second.http}/v1/followups/running", headers=auth, timeout=10)
        assert running.status_code == 200, running.text
        assert "followup:reamaze:keep-me" in {r["workflow_id"] for r in running.json()}
    finally:
        assert second.stop() == 0, second.output
