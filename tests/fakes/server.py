"""Run a fake provider as a real HTTP server on 127.0.0.1 in a background thread.

Fakes are small FastAPI apps that speak the provider's documented request and response
formats; this harness gives each one its own free port so tests never share state.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

_EPHEMERAL_START = 32768
"""Linux hands out local ports for outgoing connections from here up; a port we pick there
can be taken by any client socket before our server binds it, so we pick below."""


def free_port() -> int:
    for _ in range(200):
        port = random.randint(15000, _EPHEMERAL_START - 1)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class RunningServer:
    def __init__(self, app: FastAPI, port: int) -> None:
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake server on {self.url} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@contextmanager
def serve(app: FastAPI) -> Iterator[RunningServer]:
    server = RunningServer(app, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


class HoldAfterAccept:
    """For fakes: accept and record a request, then answer late - a response lost in flight.

    ``accepted`` is set each time a request is recorded, so a test can kill the client at
    exactly that moment. The hold is an ``asyncio.sleep`` in the handler: it ends when the
    server stops, and other requests are served meanwhile.
    """

    def __init__(self) -> None:
        self.accepted = threading.Event()
        self._hold_lock = threading.Lock()
        self._hold_next = 0.0

    def hold_next(self, seconds: float) -> None:
        with self._hold_lock:
            self._hold_next = seconds

    async def accepted_then_maybe_hold(self) -> None:
        self.accepted.set()
        with self._hold_lock:
            seconds, self._hold_next = self._hold_next, 0.0
        if seconds:
            await asyncio.sleep(seconds)
