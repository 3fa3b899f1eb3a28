"""The HTTP service without a worker: auth, validation and health."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from service import create_app
from settings import Settings, TemporalSettings
from store.repo import Role, Store
from tests.fakes.server import free_port, serve


@pytest.fixture
def api(store: Store, sqlite_url: str) -> Iterator[tuple[httpx.Client, Store]]:
    nowhere = TemporalSettings(address=f"127.0.0.1:{free_port()}")
    settings = Settings(_env_file=None, database_url=sqlite_url, temporal=nowhere)
    with (
        serve(create_app(settings, store=store)) as server,
        httpx.Client(base_url=server.url, timeout=15) as client,
    ):
        yield client, store


def test_health_names_what_is_down(api: tuple[httpx.Client, Store]) -> None:
    client, _ = api
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok" and body["temporal"].startswith("error")


def test_tokens_and_roles(api: tuple[httpx.Client, Store]) -> None:
    client, store = api
    assert client.get("/v1/followups").status_code == 401
    assert client.get("/v1/followups", headers={"Authorization": "Bearer nope"}).status_code == 401
    user = {"Authorization": f"Bearer {store.create_token(Role.user)}"}
    assert client.get("/v1/followups", headers=user).json() == []
    assert client.post("/v1/followups/followup:reamaze:x/cancel", headers=user).status_code == 403
    bad = client.get("/v1/followups", params={"status": "finished"}, headers=user)
    assert bad.status_code == 422 and "status" in bad.text


def test_openapi_docs_are_served(api: tuple[httpx.Client, Store]) -> None:
    client, _ = api
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/healthz", "/v1/followups", "/v1/followups/{workflow_id}/cancel"} <= set(paths)
