"""Bodies over NUDGE_HTTP__MAX_BODY are refused with 413 before they are read.

The server is real (uvicorn on 127.0.0.1) and the requests are written on a raw socket, so a
declared 64 MiB body that never arrives proves the limit is applied to the header: a server
that tried to read the body first would wait for bytes that are never sent.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from service import create_app
from settings import HttpSettings, Settings, TemporalSettings
from store.repo import Role, Store
from tests.fakes.server import RunningServer, free_port, serve

LIMIT = 64 * 1024


@pytest.fixture
def server(store: Store, sqlite_url: str) -> Iterator[RunningServer]:
    settings = Settings(
        _env_file=None,
        database_url=sqlite_url,
        temporal=TemporalSettings(address=f"127.0.0.1:{free_port()}"),
        http=HttpSettings(max_body=LIMIT),
    )
    with serve(create_app(settings, store=store)) as running:
        yield running


def _exchange(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request head (and maybe part of a body); return the status and response body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        received = b""
        while b"\r\n\r\n" not in received or not _complete(received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def test_a_declared_64_mib_webhook_body_is_refused_without_being_read(
    server: RunningServer,
) -> None:
    head = (
        "POST /webhooks/whatsapp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {64 * 1024 * 1024}\r\n"
    )
    status, body = _exchange(server.port, head, b'{"object": "whatsapp_business_account"')
    assert status == 413
    assert "NUDGE_HTTP__MAX_BODY" in json.loads(body)["detail"]


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(server: RunningServer) -> None:
    chunk = b"x" * 16384
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(LIMIT // len(chunk) + 2))
    head = (
        "POST /webhooks/twilio/inbound HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n"
    )
    status, _ = _exchange(server.port, head, chunks + b"0\r\n\r\n")
    assert status == 413


def test_an_api_body_over_the_limit_is_413_and_one_under_it_is_judged_on_its_merits(
    server: RunningServer, store: Store
) -> None:
    admin = {"Authorization": f"Bearer {store.create_token(Role.admin)}"}
    with httpx.Client(base_url=server.url, timeout=10, headers=admin) as client:
        too_big = {"channel": "sms", "address": "+15550001111", "reason": "x" * LIMIT}
        refused = client.post("/v1/suppressions", json=too_big)
        assert refused.status_code == 413
        assert "NUDGE_HTTP__MAX_BODY" in refused.json()["detail"]
        fits = {"channel": "nowhere", "address": "+15550001111", "reason": "x" * 100}
        answer = client.post("/v1/suppressions", json=fits)
        assert answer.status_code == 422
        assert any(error["loc"][-1] == "channel" for error in answer.json()["detail"])
