"""``/healthz`` says what is down and nothing more: anyone may call it, and an exception's
text can carry a host, a file path or a connection string. The error goes to the log."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service import create_app
from settings import Settings, TemporalSettings
from store.db import upgrade
from store.repo import Role, Store
from tests.fakes.server import free_port, serve


def _health(settings: Settings, store: Store) -> httpx.Response:
    with (
        serve(create_app(settings, store=store)) as server,
        httpx.Client(base_url=server.url, timeout=15) as client,
    ):
        return client.get("/healthz")


@pytest.fixture
def gone_database(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    """A migrated SQLite database whose directory was removed while the service ran."""
    folder = tmp_path / "secret-folder"
    folder.mkdir()
    url = f"sqlite:///{folder / 'nudge.db'}"
    upgrade(url)
    store = Store.from_url(url)
    store.ping()
    store.engine.dispose()  # no pooled connection keeps the deleted file open
    shutil.rmtree(folder)
    yield url, store
    store.close()


def test_a_lost_database_and_temporal_answer_503_without_their_errors(
    gone_database: tuple[str, Store], caplog: pytest.LogCaptureFixture
) -> None:
    url, store = gone_database
    nowhere = f"127.0.0.1:{free_port()}"
    settings = Settings(
        _env_file=None, database_url=url, temporal=TemporalSettings(address=nowhere)
    )
    with caplog.at_level(logging.WARNING, logger="service"):
        response = _health(settings, store)

    assert response.status_code == 503
    assert response.json() == {
        "status": "unhealthy",
        "database": "unavailable",
        "temporal": "unavailable",
    }
    for secret in ("secret-folder", nowhere, "Error", "sqlite"):
        assert secret not in response.text
    logged = caplog.text
    assert "the database does not answer" in logged and "OperationalError" in logged
    assert "Temporal does not answer" in logged and nowhere.split(":")[1] in logged


def test_a_connection_string_never_reaches_the_body(caplog: pytest.LogCaptureFixture) -> None:
    """A PostgreSQL URL with a password, on a port nothing listens on."""
    url = f"postgresql+psycopg://nudge:hunter2@127.0.0.1:{free_port()}/nudge?connect_timeout=3"
    unreachable = Store.from_url(url)
    settings = Settings(_env_file=None, database_url=url)
    try:
        with caplog.at_level(logging.WARNING, logger="service"):
            response = _health(settings, unreachable)
    finally:
        unreachable.close()
    assert response.status_code == 503
    assert response.json()["database"] == "unavailable"
    assert "hunter2" not in response.text and "postgresql" not in response.text
    assert "the database does not answer" in caplog.text


def test_a_start_while_temporal_is_down_is_a_503_without_its_address(
    store: Store, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = Settings(
        _env_file=None,
        database_url=sqlite_url,
        temporal=TemporalSettings(address=f"127.0.0.1:{port}"),
    )
    admin = {"Authorization": f"Bearer {store.create_token(Role.admin)}"}
    with (
        caplog.at_level(logging.WARNING),
        serve(create_app(settings, store=store)) as server,
        httpx.Client(base_url=server.url, timeout=15, headers=admin) as client,
    ):
        answer = client.post("/v1/followups", json={"conversation": "abc-123"})
    assert answer.status_code == 503
    assert "Temporal is not reachable" in answer.json()["detail"]
    assert str(port) not in answer.text and "127.0.0.1" not in answer.text
    assert answer.headers["retry-after"] == "5"
    assert any(str(port) in record.getMessage() for record in caplog.records)
