"""API tokens from the operator's side: ``nudge token create | list | revoke``, expiry, the
development token ``nudge dev`` keeps, and ``last_used_at`` written at most once a minute."""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from typer.testing import CliRunner, Result

import cli
from settings import Settings, get_settings
from store.repo import LAST_USED_RESOLUTION, Role, Store
from tests.api_rig import Api

SECRET_KEY = "tokens-test-secret-key-0123456789abcdef"
Nudge = Callable[..., Result]


@pytest.fixture
def nudge(any_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Nudge]:
    """``nudge ...`` in this process, against the test's database, away from any ``.env``."""
    monkeypatch.chdir(tmp_path)
    for name in ("NUDGE_SECRET_KEY", "NUDGE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NUDGE_DATABASE_URL", any_db_url)

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
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


# --- the CLI ---------------------------------------------------------------------------------


def test_create_list_and_revoke_by_id_through_the_cli(nudge: Nudge, api: Api) -> None:
    created = nudge("token", "create", "--role", "user", "--name", "reporting")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("ndg_")
    assert api.client.get("/v1/outbox", headers=bearer(token)).status_code == 200

    listed = nudge("token", "list")
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "ROLE", "CREATED", "LAST", "USED", "EXPIRES", "REVOKED"]
    [row] = [line for line in rows if "reporting" in line]
    assert " user " in row and token not in listed.stdout, "the secret is never shown"
    token_id = row.split()[0]
    assert "UTC" in row, "created and last used are shown"

    revoked = nudge("token", "revoke", token_id)
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked token {token_id} 'reporting' (user)" in revoked.stdout
    answer = api.client.get("/v1/outbox", headers=bearer(token))
    assert answer.status_code == 401 and "revoked" in answer.json()["detail"]
    again = nudge("token", "revoke", token_id)
    assert again.exit_code == 0 and "revoked (already)" in again.stdout
    [row] = [line for line in nudge("token", "list").stdout.splitlines() if "reporting" in line]
    assert not row.rstrip().endswith("-"), "the revoked column holds a time"


def test_revoke_by_name_and_what_happens_when_names_clash(nudge: Nudge, api: Api) -> None:
    first = nudge("token", "create", "--role", "admin", "--name", "ci").stdout.strip()
    second = nudge("token", "create", "--role", "admin", "--name", "ci").stdout.strip()
    clash = nudge("token", "revoke", "ci")
    assert clash.exit_code == 1 and "2 active tokens are named 'ci'" in clash.stderr
    assert "--all" in clash.stderr
    assert api.client.get("/v1/outbox", headers=bearer(first)).status_code == 200, "nothing revoked"
    both = nudge("token", "revoke", "ci", "--all")
    assert both.exit_code == 0 and both.stdout.count("revoked token") == 2
    for token in (first, second):
        assert api.client.get("/v1/outbox", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize("reference", ["4242", "no-such-token"])
def test_revoking_what_does_not_exist_says_so(nudge: Nudge, reference: str) -> None:
    result = nudge("token", "revoke", reference)
    assert result.exit_code == 1
    assert f"no token has the id or (active) name {reference!r}" in result.stderr
    assert "nudge token list" in result.stderr


def test_an_expiring_token_works_until_it_expires(nudge: Nudge, api: Api) -> None:
    created = nudge("token", "create", "--role", "user", "--name", "temp", "--expires", "30d")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert "expires " in created.stderr
    assert api.client.get("/v1/outbox", headers=bearer(token)).status_code == 200
    [record] = [found for found in api.store.list_tokens() if found.name == "temp"]
    assert record.expires_at is not None
    expected = datetime.now(UTC) + timedelta(days=30)
    assert abs(record.expires_at - expected) < timedelta(minutes=1)
    [row] = [line for line in nudge("token", "list").stdout.splitlines() if "temp" in line]
    assert record.expires_at.strftime("%Y-%m-%d %H:%M UTC") in row
    assert api.store.verify_token(token, now=record.expires_at - timedelta(seconds=1))
    assert api.store.verify_token(token, now=record.expires_at) is None


def test_an_expired_token_gets_401_and_is_marked_in_the_list(nudge: Nudge, api: Api) -> None:
    token = api.store.create_token(
        Role.admin, "old", expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    answer = api.client.get("/v1/outbox", headers=bearer(token))
    assert answer.status_code == 401 and "expired" in answer.json()["detail"]
    [row] = [line for line in nudge("token", "list").stdout.splitlines() if " old " in line]
    assert "(expired)" in row


@pytest.mark.parametrize(
    ("value", "message"),
    [("soon", "write it like 90s, 30m, 24h or 3d"), ("0s", "longer than 0s"), ("-3d", "3d")],
)
def test_a_bad_expiry_is_a_usage_error(nudge: Nudge, api: Api, value: str, message: str) -> None:
    before = api.store.list_tokens()
    result = nudge("token", "create", "--role", "user", "--expires", value)
    assert result.exit_code == 2, result.output
    assert "--expires" in said(result) and message in said(result)
    assert api.store.list_tokens() == before, "no token is made"


def test_a_name_too_long_for_the_table_is_a_usage_error(nudge: Nudge) -> None:
    result = nudge("token", "create", "--role", "user", "--name", "n" * 121)
    assert result.exit_code == 2 and "--name" in said(result) and "120" in said(result)


def test_the_list_of_no_tokens_says_how_to_make_one(nudge: Nudge) -> None:
    result = nudge("token", "list")
    assert result.exit_code == 0 and "nudge token create" in result.stdout


# --- last_used_at ------------------------------------------------------------------------


@pytest.fixture
def token_writes(api: Api) -> Iterator[list[str]]:
    """Every UPDATE of ``api_tokens`` the store sends."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_TOKENS"):
            seen.append(statement)

    event.listen(api.store.engine, "before_cursor_execute", record)
    yield seen
    event.remove(api.store.engine, "before_cursor_execute", record)


def test_many_requests_within_a_minute_write_last_used_once(
    api: Api, token_writes: list[str]
) -> None:
    token = api.store.create_token(Role.user, "busy")
    for _ in range(8):
        assert api.client.get("/v1/outbox", headers=bearer(token)).status_code == 200
    assert len(token_writes) == 1, token_writes
    [record] = [found for found in api.store.list_tokens() if found.name == "busy"]
    assert record.last_used_at is not None
    first_use = record.last_used_at

    within = first_use + LAST_USED_RESOLUTION - timedelta(seconds=1)
    assert api.store.verify_token(token, now=within) is not None
    assert len(token_writes) == 1, "still within the minute"
    later = first_use + LAST_USED_RESOLUTION + timedelta(seconds=1)
    assert api.store.verify_token(token, now=later) is not None
    assert len(token_writes) == 2
    [record] = [found for found in api.store.list_tokens() if found.name == "busy"]
    assert record.last_used_at == later


# --- nudge dev's token and key ---------------------------------------------------------------


def test_nudge_dev_reuses_its_token_until_it_stops_verifying(
    any_store: Store, tmp_path: Path
) -> None:
    token, reused = cli._dev_token(any_store, tmp_path)
    assert not reused
    kept = tmp_path / cli.DEV_TOKEN
    assert kept.read_text().strip() == token
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert cli._dev_token(any_store, tmp_path) == (token, True)
    assert len(any_store.list_tokens()) == 1, "no new token per start"

    [record] = any_store.list_tokens()
    any_store.revoke_token(record.id)
    fresh, reused = cli._dev_token(any_store, tmp_path)
    assert not reused and fresh != token
    assert kept.read_text().strip() == fresh
    info = any_store.verify_token(fresh)
    assert info is not None and info.role == Role.admin and info.name == "nudge dev"


def test_nudge_dev_replaces_a_token_another_database_does_not_know(
    any_store: Store, tmp_path: Path
) -> None:
    (tmp_path / cli.DEV_TOKEN).write_text("ndg_from-a-deleted-database\n")
    token, reused = cli._dev_token(any_store, tmp_path)
    assert not reused and token != "ndg_from-a-deleted-database"


def test_nudge_dev_keeps_one_secret_key_unless_one_is_set(tmp_path: Path) -> None:
    settings = Settings(_env_file=None)
    first = cli._with_dev_secret_key(settings, tmp_path)
    key_file = tmp_path / cli.DEV_SECRET_KEY
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first.secret_key.get_secret_value()) >= 32
    again = cli._with_dev_secret_key(settings, tmp_path)
    assert again.secret_key.get_secret_value() == first.secret_key.get_secret_value()
    assert settings.secret_key.get_secret_value() == "", "the caller's settings are not changed"
    given = Settings(_env_file=None, secret_key=SECRET_KEY)
    assert cli._with_dev_secret_key(given, tmp_path).secret_key.get_secret_value() == SECRET_KEY


# --- the secret key at start-up ----------------------------------------------------------


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_worker_and_serve_refuse_to_start_without_the_secret_key(
    nudge: Nudge, command: str
) -> None:
    result = nudge(command)
    assert result.exit_code == 2, result.output
    assert "NUDGE_SECRET_KEY" in result.stderr
    assert "secrets.token_urlsafe(32)" in result.stderr


def test_a_short_secret_key_stops_the_start_with_a_clear_error(nudge: Nudge) -> None:
    result = nudge("worker", env={"NUDGE_SECRET_KEY": "too-short"})
    assert result.exit_code == 2
    assert "NUDGE_SECRET_KEY" in result.stderr and "at least 32" in result.stderr
    assert "too-short" not in result.stderr, "the key itself is not echoed"
