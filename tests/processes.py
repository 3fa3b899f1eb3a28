"""Nudge processes for end-to-end tests: the real `nudge worker` as a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
SECRET_KEY = "end-to-end-test-secret-key-0123456789"
"""``nudge worker`` refuses to start without NUDGE_SECRET_KEY; a test may give its own."""


class WorkerProcess:
    """``nudge worker`` with the given environment; ``kill()`` is a hard SIGKILL, as a crash."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = {"NUDGE_SECRET_KEY": SECRET_KEY, **os.environ, **env}
        self.cwd = cwd
        self.log = cwd / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "nudge"), "worker"], env=self.env, cwd=self.cwd, stdout=log, stderr=log
            )
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
