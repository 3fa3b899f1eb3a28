"""Contact tokens, "who sees what": a token for one contact, which a platform embedding Nudge
hands to its end user. It sees none of the operator's routes (404, as if they did not exist),
and the operator's tokens keep what they had (a user token still gets 403 on writes)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import HTTPException
from typer.testing import CliRunner, Result

import cli
from dependencies import own_contact_id, visible_contact
from settings import get_settings
from store.events import NoContact
from store.repo import Role, TokenInfo
from tests.api_rig import Api

Nudge = Callable[..., Result]


@pytest.fixture
def nudge(any_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Nudge]:
    """``nudge ...`` in this process, against the test's database, away from any ``.env``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NUDGE_SECRET_KEY", raising=False)
    monkeypatch.setenv("NUDGE_DATABASE_URL", any_db_url)

    def run(*args: str) -> Result:
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(cli.app, list(args))
        finally:
            get_settings.cache_clear()

    yield run


def said(result: Result) -> str:
    """What the CLI printed, with rich's error box and its line wrapping taken out."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", result.output).split())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_ids(api: Api) -> list[int]:
    return [token.id for token in api.store.list_tokens()]


def new_contact(api: Api, phone: str = "+15551230101") -> int:
    created = api.client.post("/v1/contacts", json={"phone": phone}, headers=api.admin)
    assert created.status_code == 201, created.text
    contact_id: int = created.json()["id"]
    return contact_id


@pytest.fixture
def contact_id(api: Api) -> int:
    return new_contact(api)


@pytest.fixture
def contact(api: Api, contact_id: int) -> dict[str, str]:
    return bearer(api.store.create_token(Role.contact, "app", contact_id=contact_id))


# --- what a contact token may not do -----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/contacts", None),
        ("GET", "/v1/contacts/{own}", None),
        ("GET", "/v1/templates", None),
        ("GET", "/v1/outbox", None),
        ("POST", "/v1/messages", {"channel": "sms", "to": "+15551230101", "text": "hi"}),
        ("POST", "/v1/contacts", {"phone": "+15551230199"}),
        ("POST", "/v1/contacts/{own}/tokens", {}),
        ("POST", "/codec/decode", {"payloads": []}),
    ],
)
def test_a_contact_token_finds_none_of_the_operators_routes(
    api: Api, contact: dict[str, str], contact_id: int, method: str, path: str, body: Any
) -> None:
    nowhere = api.client.get("/v1/no-such-route", headers=contact)
    assert nowhere.status_code == 404
    answer = api.client.request(method, path.format(own=contact_id), json=body, headers=contact)
    assert answer.status_code == 404, answer.text
    assert answer.json() == nowhere.json(), "the body of a path with no route: nothing to probe"


def test_a_contact_tokens_404_does_not_depend_on_the_id_asked_for(
    api: Api, contact: dict[str, str], contact_id: int
) -> None:
    other = new_contact(api, "+15551230102")
    answers = [
        api.client.get(f"/v1/contacts/{which}", headers=contact)
        for which in (contact_id, other, 424242)
    ]
    assert {answer.status_code for answer in answers} == {404}
    assert len({answer.text for answer in answers}) == 1


def test_an_expired_contact_token_gets_401(api: Api, contact_id: int) -> None:
    token = api.store.create_token(
        Role.contact, expires_at=datetime.now(UTC) - timedelta(seconds=1), contact_id=contact_id
    )
    answer = api.client.get("/v1/contacts", headers=bearer(token))
    assert answer.status_code == 401 and "expired" in answer.json()["detail"]


def test_the_operators_tokens_keep_what_they_had(api: Api, contact_id: int) -> None:
    assert api.client.get("/v1/contacts", headers=api.user).status_code == 200
    assert api.client.get(f"/v1/contacts/{contact_id}", headers=api.user).status_code == 200
    message = {"channel": "sms", "to": "+15551230101", "text": "hi"}
    refused = api.client.post("/v1/messages", json=message, headers=api.user)
    assert refused.status_code == 403 and "admin token" in refused.json()["detail"]
    refused = api.client.post(f"/v1/contacts/{contact_id}/tokens", json={}, headers=api.user)
    assert refused.status_code == 403


# --- who sees which contact --------------------------------------------------------------


def test_a_contact_token_sees_its_own_contact_only() -> None:
    own = TokenInfo(id=1, name="app", role=Role.contact, contact_id=7)
    assert own_contact_id(own) == 7
    visible_contact(own, 7)
    with pytest.raises(HTTPException) as refused:
        visible_contact(own, 8)
    assert refused.value.status_code == 404
    assert refused.value.detail == "contact_id: no contact 8", "a route's words for a missing one"


@pytest.mark.parametrize("role", [Role.admin, Role.user])
def test_the_operators_tokens_see_every_contact(role: Role) -> None:
    token = TokenInfo(id=1, name="ops", role=role)
    assert own_contact_id(token) is None
    visible_contact(token, 8)


# --- POST /v1/contacts/{id}/tokens -------------------------------------------------------


def test_an_admin_makes_a_contact_token_through_the_api(api: Api, contact_id: int) -> None:
    answer = api.client.post(
        f"/v1/contacts/{contact_id}/tokens",
        json={"name": "mobile app", "expires_in": "30d"},
        headers=api.admin,
    )
    assert answer.status_code == 201, answer.text
    made = answer.json()
    assert made["role"] == "contact" and made["contact_id"] == contact_id
    assert made["name"] == "mobile app" and made["token"].startswith("ndg_")
    expires_at = datetime.fromisoformat(made["expires_at"])
    assert abs(expires_at - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)

    info = api.store.verify_token(made["token"])
    assert info is not None and info.role == Role.contact and info.contact_id == contact_id
    [record] = [found for found in api.store.list_tokens() if found.id == made["id"]]
    assert record.contact_id == contact_id and record.name == "mobile app"
    assert api.client.get("/v1/contacts", headers=bearer(made["token"])).status_code == 404


def test_a_contact_token_without_a_name_or_expiry(api: Api, contact_id: int) -> None:
    answer = api.client.post(f"/v1/contacts/{contact_id}/tokens", json={}, headers=api.admin)
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == f"contact {contact_id}"
    assert answer.json()["expires_at"] is None


def test_a_contact_token_can_end_at_a_given_time(api: Api, contact_id: int) -> None:
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    answer = api.client.post(
        f"/v1/contacts/{contact_id}/tokens",
        json={"expires_at": when.astimezone().isoformat()},
        headers=api.admin,
    )
    assert answer.status_code == 201, answer.text
    assert datetime.fromisoformat(answer.json()["expires_at"]) == when


def test_a_token_for_a_contact_that_does_not_exist_is_a_404(api: Api) -> None:
    before = token_ids(api)
    answer = api.client.post("/v1/contacts/424242/tokens", json={}, headers=api.admin)
    assert answer.status_code == 404
    assert answer.json()["detail"] == "contact_id: no contact 424242"
    assert token_ids(api) == before


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"expires_in": "0s"}, "expires_in", "longer than 0s"),
        ({"expires_in": "soon"}, "expires_in", "30m, 24h or 3d"),
        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at", ""),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at", "already passed"),
        (
            {"expires_in": "1d", "expires_at": "2030-01-01T00:00:00Z"},
            "expires_at",
            "not both",
        ),
        ({"name": "n" * 121}, "name", "120"),
        ({"role": "admin"}, "role", ""),
    ],
)
def test_a_bad_contact_token_request_is_a_422_naming_the_field(
    api: Api, contact_id: int, body: dict[str, Any], field: str, message: str
) -> None:
    before = token_ids(api)
    answer = api.client.post(f"/v1/contacts/{contact_id}/tokens", json=body, headers=api.admin)
    assert answer.status_code == 422, answer.text
    assert field in answer.text and message in answer.text
    assert token_ids(api) == before, "no token is made"


# --- the store and the CLI ---------------------------------------------------------------


def test_the_store_ties_contact_tokens_and_only_them_to_a_contact(
    api: Api, contact_id: int
) -> None:
    with pytest.raises(ValueError, match="names its contact"):
        api.store.create_token(Role.contact)
    with pytest.raises(ValueError, match="only a contact token"):
        api.store.create_token(Role.admin, contact_id=contact_id)
    with pytest.raises(NoContact, match="no contact 424242"):
        api.store.create_token(Role.contact, contact_id=424242)


def test_nudge_token_create_makes_a_contact_token(nudge: Nudge, api: Api, contact_id: int) -> None:
    created = nudge(
        "token", "create", "--role", "contact", "--contact-id", str(contact_id), "--name", "app"
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    info = api.store.verify_token(token)
    assert info is not None and info.role == Role.contact and info.contact_id == contact_id

    listed = nudge("token", "list")
    [row] = [line for line in listed.stdout.splitlines() if " app " in line]
    assert f" contact:{contact_id} " in row, "the list says whose token it is"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "contact"], "--role contact needs the contact's id"),
        (["--role", "user", "--contact-id", "1"], "only a --role contact token names a contact"),
        (["--role", "admin", "--contact-id", "1"], "not --role admin"),
        (["--role", "contact", "--contact-id", "424242"], "no contact 424242"),
    ],
)
def test_a_contact_id_goes_with_role_contact_only(
    nudge: Nudge, api: Api, args: list[str], message: str
) -> None:
    before = token_ids(api)
    result = nudge("token", "create", *args)
    assert result.exit_code == 2, result.output
    assert "--contact-id" in said(result) and message in said(result)
    assert token_ids(api) == before, "no token is made"
