"""Starting a follow-up: what cannot succeed is refused at once, naming what to set; the waits
that took effect come back as they are written (``12h``, never ``PT12H``); and ``nudge dev``
says which capabilities are off, and why, when it starts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from cli import _off_line
from dependencies import get_temporal
from domain import limits
from domain.durations import describe_duration, format_duration, parse_duration
from service import create_app
from settings import (
    FollowupSettings,
    GeminiSettings,
    ReamazeSettings,
    Settings,
    SmtpSettings,
    TemporalSettings,
)
from store.repo import Role, Store

CONFIGURED = ReamazeSettings(brand="shop", login_email="bot@shop.test", api_token=SecretStr("t"))
UNCONFIGURED = ReamazeSettings()


@dataclass
class Api:
    http: httpx.AsyncClient
    temporal: Client
    admin: dict[str, str]


@pytest.fixture
def reamaze() -> ReamazeSettings:
    """Re:amaze as the test needs it; ``configured`` unless a test overrides the fixture."""
    return CONFIGURED


@pytest.fixture
async def api(
    dev_env: WorkflowEnvironment,
    store: Store,
    sqlite_url: str,
    task_queue: str,
    reamaze: ReamazeSettings,
) -> AsyncIterator[Api]:
    """The HTTP service in this test's event loop, with the real dev server as its Temporal
    (no worker: a started follow-up just waits, and ``dev_env`` terminates it afterwards)."""
    settings = Settings(
        _env_file=None,
        database_url=sqlite_url,
        temporal=TemporalSettings(task_queue=task_queue),
        reamaze=reamaze,
        followup=FollowupSettings(waits="30m,24h"),
    )
    app = create_app(settings, store=store)
    app.dependency_overrides[get_temporal] = lambda: dev_env.client
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://nudge.test", timeout=15
    ) as http:
        yield Api(
            http, dev_env.client, {"Authorization": f"Bearer {store.create_token(Role.admin)}"}
        )


async def not_started(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as error:
        return error.status == RPCStatusCode.NOT_FOUND
    return False


# --- Re:amaze not configured: refused now, not failed in 30 minutes -----------------------


@pytest.mark.parametrize("reamaze", [UNCONFIGURED])
async def test_a_start_without_reamaze_is_refused_naming_the_settings(api: Api) -> None:
    response = await api.http.post(
        "/v1/followups", json={"conversation": "where-is-my-order"}, headers=api.admin
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail == (
        "Re:amaze is not configured: set NUDGE_REAMAZE__BRAND, NUDGE_REAMAZE__LOGIN_EMAIL, "
        "NUDGE_REAMAZE__API_TOKEN (for the worker and the HTTP service); nothing was started"
    )
    assert await not_started(api.temporal, "followup:reamaze:where-is-my-order")


@pytest.mark.parametrize("reamaze", [ReamazeSettings(brand="shop", api_token=SecretStr("t"))])
async def test_only_the_missing_settings_are_named(api: Api) -> None:
    response = await api.http.post(
        "/v1/followups", json={"conversation": "where-is-my-order"}, headers=api.admin
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "set NUDGE_REAMAZE__LOGIN_EMAIL (" in detail
    assert "BRAND" not in detail and "API_TOKEN" not in detail


@pytest.mark.parametrize("reamaze", [UNCONFIGURED])
async def test_poll_now_without_reamaze_is_refused_naming_the_settings(api: Api) -> None:
    response = await api.http.post("/v1/helpdesk/poll", headers=api.admin)
    assert response.status_code == 422, response.text
    assert "NUDGE_REAMAZE__BRAND" in response.json()["detail"]


async def test_poll_now_before_the_worker_made_the_schedule_says_so(api: Api) -> None:
    response = await api.http.post("/v1/helpdesk/poll", headers=api.admin)
    assert response.status_code == 409, response.text
    assert "the worker creates it" in response.json()["detail"]


# --- waits: what took effect, written as the user writes them -------------------------------


async def test_the_waits_come_back_as_written(api: Api) -> None:
    response = await api.http.post(
        "/v1/followups",
        json={"conversation": "echo-waits", "waits": ["12h", "1d"]},
        headers=api.admin,
    )
    assert response.status_code == 201, response.text
    assert response.json()["waits"] == ["12h", "1d"]
    assert response.json()["workflow_id"] == "followup:reamaze:echo-waits"


async def test_left_out_waits_come_back_as_the_defaults_that_took_effect(api: Api) -> None:
    response = await api.http.post(
        "/v1/followups", json={"conversation": "default-waits"}, headers=api.admin
    )
    assert response.status_code == 201, response.text
    assert response.json()["waits"] == ["30m", "1d"]


async def test_no_waits_is_refused_not_replaced_by_the_defaults(api: Api) -> None:
    response = await api.http.post(
        "/v1/followups", json={"conversation": "no-waits", "waits": []}, headers=api.admin
    )
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "waits"]]
    assert "at least 1 item" in response.json()["detail"][0]["msg"]
    assert await not_started(api.temporal, "followup:reamaze:no-waits")


async def test_more_than_twenty_waits_are_refused(api: Api) -> None:
    too_many = ["1h"] * (limits.MAX_FOLLOWUP_STEPS + 1)
    response = await api.http.post(
        "/v1/followups", json={"conversation": "many-waits", "waits": too_many}, headers=api.admin
    )
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "waits"]]
    assert "at most 20 items" in response.json()["detail"][0]["msg"]

    twenty = await api.http.post(
        "/v1/followups",
        json={"conversation": "many-waits", "waits": too_many[:-1]},
        headers=api.admin,
    )
    assert twenty.status_code == 201, twenty.text
    assert twenty.json()["waits"] == ["1h"] * 20


async def test_a_wait_that_is_no_duration_is_refused_naming_it(api: Api) -> None:
    response = await api.http.post(
        "/v1/followups",
        json={"conversation": "bad-wait", "waits": ["30m", "PT12H", "99999999999999d"]},
        headers=api.admin,
    )
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert [error["loc"] for error in errors] == [["body", "waits", 1], ["body", "waits", 2]]
    assert "write it like 90s, 30m, 24h or 3d" in errors[0]["msg"]
    assert "too long for a duration" in errors[1]["msg"]


async def test_negative_huge_and_non_numbers_are_no_waits(api: Api) -> None:
    """Found by tests/test_api_schema.py: a JSON number of 1e89 seconds was a 500 (an
    OverflowError) and -2 seconds was accepted as a wait."""
    waits: list[object] = [-2.5, 1e89, -5, True, "3651d", 0, "3650d"]
    response = await api.http.post(
        "/v1/followups", json={"conversation": "odd-waits", "waits": waits}, headers=api.admin
    )
    assert response.status_code == 422, response.text
    errors = {error["loc"][-1]: error["msg"] for error in response.json()["detail"]}
    assert set(errors) == {0, 1, 2, 3, 4}
    assert "negative" in errors[0] and "negative" in errors[2]
    assert "at most 3650d" in errors[1] and "at most 3650d" in errors[4]
    assert "not a duration" in errors[3]


def test_durations_read_back_what_they_write() -> None:
    for text in ("90s", "30m", "12h", "1d", "3d", "1.5s"):
        assert format_duration(parse_duration(text)) == text
    assert format_duration(timedelta(hours=24)) == "1d"
    assert describe_duration(timedelta(days=1)) == "1 day"
    assert describe_duration(timedelta(hours=12)) == "12 hours"
    assert describe_duration(timedelta(seconds=1)) == "1 second"


# --- nudge dev says what is off -------------------------------------------------------------


def test_nudge_dev_says_which_capabilities_are_off_and_why() -> None:
    settings = Settings(_env_file=None, gemini=GeminiSettings(api_key=SecretStr("")))
    assert _off_line(settings) == (
        "helpdesk follow-ups (set NUDGE_REAMAZE__BRAND, __LOGIN_EMAIL, __API_TOKEN); "
        "LLM writing (no NUDGE_GEMINI__API_KEY or NUDGE_OPENAI__API_KEY: fallback texts are "
        "sent); e-mail, SMS, WhatsApp, WhatsApp through Twilio, push, Support Board in sandbox "
        "(recorded, not sent)"
    )


def test_what_is_configured_is_not_listed_as_off() -> None:
    settings = Settings(
        _env_file=None,
        reamaze=ReamazeSettings(brand="shop", login_email="bot@shop.test"),
        gemini=GeminiSettings(api_key=SecretStr("key")),
        smtp=SmtpSettings(host="smtp.shop.test", **{"from": "hello@shop.test"}),
    )
    off = _off_line(settings)
    assert off.startswith("helpdesk follow-ups (set NUDGE_REAMAZE__API_TOKEN); SMS, ")
    assert "LLM" not in off and "e-mail" not in off

    settings.reamaze = CONFIGURED
    off = _off_line(settings)
    assert off.startswith("SMS, WhatsApp") and "helpdesk" not in off
    assert "Re:amaze" not in off
