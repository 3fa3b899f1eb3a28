"""The HTTP service without a worker: auth, validation and health."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from dependencies import get_temporal
from domain.status import FollowUpStatus
from integrations.errors import Rejected
from integrations.reamaze import _conversation_path
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
    assert response.json() == {
        "status": "unhealthy",
        "database": "ok",
        "temporal": "unavailable",
    }


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


@pytest.mark.parametrize("value", [status.value for status in FollowUpStatus])
def test_every_status_a_followup_ends_in_is_a_filter(
    api: tuple[httpx.Client, Store], value: str
) -> None:
    client, store = api
    user = {"Authorization": f"Bearer {store.create_token(Role.user)}"}
    response = client.get("/v1/followups", params={"status": value}, headers=user)
    assert response.status_code == 200, response.text
    assert response.json() == []


def test_a_bogus_status_filter_is_a_422_naming_status(api: tuple[httpx.Client, Store]) -> None:
    client, store = api
    user = {"Authorization": f"Bearer {store.create_token(Role.user)}"}
    both = client.get(
        "/v1/followups", params=[("status", "suppressed"), ("status", "x")], headers=user
    )
    assert both.status_code == 422
    assert [error["loc"] for error in both.json()["detail"]] == [["query", "status", 1]]


@pytest.mark.parametrize(
    "slug",
    [
        "..",
        "../x",
        "a/../b",
        "a/b",
        "%2e%2e",
        "%2E%2E%2Fadmin",
        ".hidden",
        "a.b",
        "-x",
        "a b",
        "\u00e9t\u00e9",
        "a\\b",
        "",
    ],
)
def test_a_conversation_slug_outside_reamazes_alphabet_is_refused(
    api: tuple[httpx.Client, Store], slug: str
) -> None:
    """The slug goes into Re:amaze's URL path: nothing may climb out of /conversations/.
    (Temporal stands in as reachable: an unreachable one answers 503 before the body is read.)"""
    _, store = api
    app = create_app(Settings(_env_file=None), store=store)
    app.dependency_overrides[get_temporal] = lambda: None  # never reached: the body is refused
    admin = {"Authorization": f"Bearer {store.create_token(Role.admin)}"}
    with (
        serve(app) as server,
        httpx.Client(base_url=server.url, timeout=15) as client,
    ):
        response = client.post("/v1/followups", json={"conversation": slug}, headers=admin)
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "conversation"]]


def test_a_slug_outside_reamazes_alphabet_never_reaches_its_url() -> None:
    """The client refuses it too, as a rejection a retry would not change."""
    for slug in ("..", "a/../b", "%2e%2e", ""):
        with pytest.raises(Rejected, match="not a Re:amaze conversation slug"):
            _conversation_path(slug)
    assert _conversation_path("where-is-my-order_3") == "/conversations/where-is-my-order_3"
