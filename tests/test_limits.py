"""Every bounded value fits where it is stored: the longest value validation allows is
stored and read back (on PostgreSQL, which enforces column lengths), one character more is
refused by validation naming the field, and every ``String`` column is a ``domain.limits``
constant, so validation and columns cannot drift apart again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import String, create_engine, inspect, select
from temporalio.testing import WorkflowEnvironment

from domain import limits, whatsapp
from domain.menu_checks import problems
from domain.menu_definition import MenuDefinition
from domain.policy import OptOutSource
from service import create_app
from settings import Settings, TemporalSettings
from starter.inbound import handle_inbound
from store.models import Base, InboundMessage
from store.repo import FollowUpRecord, Role, Store
from tests.api_rig import Api
from tests.fakes.server import serve

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)

COLUMNS = {
    "contacts": {
        "source": "CHANNEL",
        "external_id": "ADDRESS",
        "name": "CONTACT_NAME",
        "email": "ADDRESS",
        "phone": "ADDRESS",
        "timezone": "TIMEZONE",
        "locale": "LOCALE",
        "status": "LEAD_STATUS",
        "lead_source": "LEAD_SOURCE",
    },
    "followups": {
        "workflow_id": "WORKFLOW_ID",
        "run_id": "RUN_ID",
        "helpdesk": "CHANNEL",
        "conversation": "WORKFLOW_ID",
        "status": "FOLLOWUP_STATUS",
    },
    "outbox": {
        "idempotency_key": "IDEMPOTENCY_KEY",
        "workflow_id": "WORKFLOW_ID",
        "channel": "CHANNEL",
        "recipient": "ADDRESS",
        "message_class": "STATUS",
        "status": "STATUS",
        "provider_message_id": "PROVIDER_MESSAGE_ID",
        "held_reason": "HOLD_REASON",
        "template_name": "MESSAGE_TEMPLATE_NAME",
    },
    "api_tokens": {"name": "TOKEN_NAME", "role": "STATUS", "token_hash": "TOKEN_HASH"},
    "contact_channels": {"channel": "CHANNEL", "address": "ADDRESS"},
    "device_tokens": {"token": "DEVICE_TOKEN", "platform": "STATUS"},
    "suppressions": {
        "channel": "CHANNEL",
        "address": "ADDRESS",
        "scope": "STATUS",
        "reason": "SUPPRESSION_REASON",
        "source": "CHANNEL",
    },
    "inbound_messages": {
        "channel": "CHANNEL",
        "provider_message_id": "PROVIDER_MESSAGE_ID",
        "address": "ADDRESS",
        "kind": "MESSAGE_KIND",
        "reply_id": "REPLY_ID",
        "route_channel": "CHANNEL",
    },
    "delivery_events": {
        "provider": "CHANNEL",
        "provider_message_id": "PROVIDER_MESSAGE_ID",
        "status": "STATUS",
        "error_code": "ERROR_CODE",
    },
    "menus": {"name": "MENU_NAME"},
    "menu_sessions": {
        "session_id": "SESSION_ID",
        "workflow_id": "WORKFLOW_ID",
        "menu": "MENU_NAME",
        "channel": "CHANNEL",
        "address": "ADDRESS",
        "status": "STATUS",
        "last_step": "STEP_NAME",
    },
    "business_events": {
        "idempotency_key": "IDEMPOTENCY_KEY",
        "name": "EVENT_NAME",
        "source": "EVENT_SOURCE",
        "channel": "CHANNEL",
        "address": "ADDRESS",
    },
    "fallback_replies": {"channel": "CHANNEL", "address": "ADDRESS"},
    "templates": {
        "name": "MESSAGE_TEMPLATE_NAME",
        "channel": "CHANNEL",
        "subject": "SUBJECT",
        "default_locale": "LOCALE",
        "template_type": "TEMPLATE_TYPE",
        "send_after": "DURATION_TEXT",
    },
    "credit_entries": {
        "kind": "CREDIT_KIND",
        "reason": "CREDIT_REASON",
        "reference": "CREDIT_REFERENCE",
        "idempotency_key": "IDEMPOTENCY_KEY",
        "message_key": "IDEMPOTENCY_KEY",
        "currency": "CURRENCY",
    },
    "scheduled_followups": {
        "idempotency_key": "IDEMPOTENCY_KEY",
        "template_name": "MESSAGE_TEMPLATE_NAME",
        "channel": "CHANNEL",
        "session_id": "SERVICE_SESSION_ID",
        "status": "SCHEDULE_STATUS",
        "message_key": "IDEMPOTENCY_KEY",
    },
    "service_sessions": {"session_id": "SERVICE_SESSION_ID", "service_type": "SERVICE_TYPE"},
    "stored_settings": {"key": "SETTING_KEY"},
    "automations": {"name": "AUTOMATION_NAME", "type": "AUTOMATION_TYPE", "trigger": "EVENT_NAME"},
    "automation_runs": {
        "workflow_id": "WORKFLOW_ID",
        "automation_name": "AUTOMATION_NAME",
        "occurrence": "RUN_OCCURRENCE",
        "status": "STATUS",
        "channel": "CHANNEL",
    },
    "bookings": {
        "timezone": "TIMEZONE",
        "service": "BOOKING_SERVICE",
        "location": "BOOKING_LOCATION",
        "status": "STATUS",
    },
}
"""Which limit each ``String`` column holds: a new column must say which, here."""


def _string_columns() -> dict[tuple[str, str], int]:
    return {
        (table.name, column.name): column.type.length
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, String) and column.type.length is not None
    }


def test_every_string_column_is_the_length_of_a_limit() -> None:
    found = _string_columns()
    named = {
        (t, c): getattr(limits, name) for t, cols in COLUMNS.items() for c, name in cols.items()
    }
    assert set(found) == set(named), "a String column without a limit in COLUMNS (or gone)"
    assert found == named


def test_the_migrated_postgresql_columns_are_as_long_as_the_models(postgres_url: str) -> None:
    """PostgreSQL only: SQLite does not enforce VARCHAR lengths (0007 leaves it as it is)."""
    engine = create_engine(postgres_url)
    try:
        inspector = inspect(engine)
        migrated = {
            (table, column["name"]): column["type"].length
            for table in inspector.get_table_names()
            if table != "alembic_version"
            for column in inspector.get_columns(table)
            if isinstance(column["type"], String) and column["type"].length is not None
        }
    finally:
        engine.dispose()
    assert migrated == _string_columns()


def test_ids_and_keys_we_build_fit_their_columns() -> None:
    assert limits.SESSION_ID >= limits.WORKFLOW_ID + 1 + limits.PROVIDER_MESSAGE_ID
    # an event's key is the session id and a step name; a fallback's, the channel, the
    # address (runs begun before keys named the contact) and the message id
    assert limits.IDEMPOTENCY_KEY >= limits.SESSION_ID + 1 + limits.STEP_NAME
    fallback = len("fallback:") + limits.CHANNEL + 1 + max(limits.ADDRESS, 10) + 1
    assert limits.IDEMPOTENCY_KEY >= fallback + limits.PROVIDER_MESSAGE_ID
    assert len("followup:reamaze:") + limits.CONVERSATION_SLUG <= limits.WORKFLOW_ID
    assert len("message:") + limits.MESSAGE_KEY <= limits.WORKFLOW_ID
    assert len("menu:") + limits.MENU_NAME <= limits.EVENT_SOURCE
    assert limits.REPLY_ID >= max(whatsapp.BUTTON_ID, whatsapp.ROW_ID)


# --- the longest values, stored and read back -----------------------------------------------


def _longest_menu(**changes: Any) -> dict[str, Any]:
    """A sound menu whose name, step names, button ids and event are as long as allowed."""
    ask = "a" * limits.STEP_NAME
    done = "d" * (limits.STEP_NAME - 1) + "e"
    button = "b" * limits.BUTTON_ID
    row = "r" * limits.ROW_ID
    raw: dict[str, Any] = {
        "name": "m" * limits.MENU_NAME,
        "trigger_keywords": ["k" * limits.TRIGGER_KEYWORD],
        "start": ask,
        "steps": {
            ask: {
                "message": {
                    "type": "button",
                    "body": {"text": "Pick one"},
                    "action": {
                        "buttons": [{"type": "reply", "reply": {"id": button, "title": "Yes"}}]
                    },
                },
                "next": {button: "list"},
            },
            "list": {
                "message": {
                    "type": "list",
                    "body": {"text": "Pick a row"},
                    "action": {
                        "button": "Rows",
                        "sections": [{"rows": [{"id": row, "title": "Row"}]}],
                    },
                },
                "next": {row: done},
            },
            done: {"message": "Thanks", "end": True, "event": "e" * limits.EVENT_NAME},
        },
    }
    raw.update(changes)
    return raw


def test_the_longest_menu_is_sound_and_stored(any_store: Store) -> None:
    definition = MenuDefinition.model_validate(_longest_menu())
    assert problems(definition) == []
    any_store.save_menu(definition)
    assert any_store.get_menu(definition.name) == definition


def test_the_longest_session_and_event_are_stored(any_store: Store) -> None:
    workflow_id = "w" * limits.WORKFLOW_ID
    session_id = f"{workflow_id}:{'p' * limits.PROVIDER_MESSAGE_ID}"
    assert len(session_id) == limits.SESSION_ID
    address = "x" * limits.ADDRESS
    menu = "m" * limits.MENU_NAME
    step = "s" * limits.STEP_NAME
    any_store.start_menu_session(
        session_id,
        workflow_id=workflow_id,
        menu=menu,
        channel="whatsapp_twilio",
        address=address,
        started_at=NOW,
    )
    any_store.end_menu_session(
        session_id, status="completed", last_step=step, context={}, transcript=[], ended_at=NOW
    )
    (stored,) = any_store.list_menu_sessions(menu)
    assert (stored.session_id, stored.address, stored.last_step) == (session_id, address, step)

    key = "i" * limits.IDEMPOTENCY_KEY
    assert any_store.record_event(
        key,
        name="e" * limits.EVENT_NAME,
        source=f"menu:{menu}",
        channel="whatsapp",
        address=address,
        payload={},
        created_at=NOW,
    )
    assert not any_store.record_event(
        key, name="e", source="menu:x", channel="whatsapp", address=address, payload={},
        created_at=NOW,
    )  # fmt: skip


def _inbound(store: Store) -> list[InboundMessage]:
    with store.sessions() as session:
        return list(session.scalars(select(InboundMessage)))


def test_an_inbound_reply_with_the_longest_button_id_is_recorded(any_store: Store) -> None:
    reply_id = "b" * limits.BUTTON_ID
    result = any_store.record_inbound(
        "whatsapp",
        "w" * limits.PROVIDER_MESSAGE_ID,
        "+" + "1" * (limits.ADDRESS - 1),
        body="Yes",
        received_at=NOW,
        kind="k" * limits.MESSAGE_KIND,
        reply_id=reply_id,
        name="n" * limits.CONTACT_NAME,
        route_channel="whatsapp",
    )
    assert result.new
    (stored,) = _inbound(any_store)
    assert stored.reply_id == reply_id
    contact = any_store.get_contact(result.contact_id)
    assert contact is not None and contact.name == "n" * limits.CONTACT_NAME


def test_provider_values_longer_than_their_columns_are_cut_not_refused(any_store: Store) -> None:
    """A template button's payload (or anything Meta sends) may be longer than any id of
    ours: it is kept cut, and the webhook answers, instead of failing for days."""
    found = asyncio.run(
        handle_inbound(
            any_store,
            "whatsapp",
            "w" * 300,
            "15551234567",
            text="Yes",
            received_at=NOW,
            kind="k" * 60,
            reply_id="p" * 1000,
            name="n" * 400,
            route_channel="whatsapp",
        )
    )
    assert found is not None
    (stored,) = _inbound(any_store)
    assert stored.reply_id == "p" * limits.REPLY_ID
    assert stored.provider_message_id == "w" * limits.PROVIDER_MESSAGE_ID
    assert stored.kind == "k" * limits.MESSAGE_KIND
    # no channel has an address this long: nobody to answer, nothing stored
    ignored = asyncio.run(
        handle_inbound(
            any_store, "email", "id-2", "x" * (limits.ADDRESS + 1), text="hi", received_at=NOW
        )
    )
    assert ignored is None and any_store.count_inbound() == 1


def test_the_longest_outbox_row_suppression_contact_and_outcome_are_stored(
    any_store: Store,
) -> None:
    address = "a" * (limits.ADDRESS - len("@example.com")) + "@example.com"
    row = any_store.claim_outbox(
        "k" * limits.IDEMPOTENCY_KEY,
        workflow_id="w" * limits.WORKFLOW_ID,
        channel="email",
        recipient=address,
        body="hi",
        message_class="transactional",
    )
    assert row.recipient == address and row.idempotency_key == "k" * limits.IDEMPOTENCY_KEY
    assert any_store.suppress(
        "email",
        address,
        scope="marketing",
        reason="r" * limits.SUPPRESSION_REASON,
        source=OptOutSource.operator,
    )
    assert [s.address for s in any_store.list_suppressions(address=address)] == [address]

    contact_id = any_store.upsert_contact("reamaze", address, email=address)
    contact = any_store.update_contact(
        contact_id,
        fields={
            "name": "n" * limits.CONTACT_NAME,
            "phone": "+" + "1" * (limits.ADDRESS - 1),
            "timezone": "America/Argentina/ComodRivadavia",
            "locale": "l" * limits.LOCALE,
        },
        channels={"sms": "+" + "2" * (limits.ADDRESS - 1)},
        device_tokens=["t" * limits.DEVICE_TOKEN],
    )
    assert contact is not None and contact.device_tokens == ["t" * limits.DEVICE_TOKEN]

    slug = "s" * limits.CONVERSATION_SLUG
    any_store.record_followup(
        FollowUpRecord(
            workflow_id=f"followup:reamaze:{slug}",
            run_id="r" * limits.RUN_ID,
            helpdesk="reamaze",
            conversation=slug,
            status="conversation_gone",
            started_at=NOW,
            finished_at=NOW,
        )
    )
    assert [f.conversation for f in any_store.list_followups(conversation=slug)] == [slug]


# --- one character more: refused by validation, naming the field ----------------------------


@pytest.mark.parametrize(
    ("changes", "path", "words"),
    [
        ({"name": "m" * (limits.MENU_NAME + 1)}, "name", "not a valid menu name"),
        (
            {"trigger_keywords": ["k" * (limits.TRIGGER_KEYWORD + 1)]},
            "trigger_keywords[0]",
            f"at most {limits.TRIGGER_KEYWORD}",
        ),
    ],
)
def test_a_menu_field_over_its_limit_is_a_problem_naming_it(
    changes: dict[str, Any], path: str, words: str
) -> None:
    found = problems(MenuDefinition.model_validate(_longest_menu(**changes)))
    assert [(p.path, words in p.message) for p in found] == [(path, True)]


def test_step_names_events_and_button_ids_over_their_limits_are_problems() -> None:
    raw = _longest_menu()
    steps = raw["steps"]
    ask = "a" * limits.STEP_NAME
    longer = ask + "a"
    steps[longer] = steps.pop(ask)
    raw["start"] = longer
    button = steps[longer]["message"]["action"]["buttons"][0]["reply"]
    button["id"] += "b"
    steps[longer]["next"] = {button["id"]: "list"}
    done = next(name for name in steps if name.startswith("d"))
    steps[done]["event"] += "e"
    found = {p.path: p.message for p in problems(MenuDefinition.model_validate(raw))}
    assert f"at most {limits.STEP_NAME}" in found[f"steps.{longer}"]
    assert "256" in found[f"steps.{longer}.message.action.buttons[0].reply.id"]
    assert f"at most {limits.EVENT_NAME}" in found[f"steps.{done}.event"]


TOO_LONG = [
    ("post", "/v1/messages", {"channel": "email", "to": "x" * 321, "subject": "s", "text": "t"},
     ["body", "to"]),
    ("post", "/v1/messages", {"channel": "email", "to": "a@b.c", "subject": "s" * 256, "text": "t"},
     ["body", "subject"]),
    ("post", "/v1/messages", {"channel": "email", "to": "a@b.c", "subject": "s", "text": "t",
                              "html": "h" * (limits.HTML + 1)}, ["body", "html"]),
    ("post", "/v1/messages", {"channel": "fcm", "to": "t", "data": {"k": "v" * 4097}},
     ["body", "data", "k"]),
    ("post", "/v1/messages", {"channel": "whatsapp", "to": "+1555", "text": "t", "key": "k" * 121},
     ["body", "key"]),
    ("post", "/v1/messages", {"channel": "whatsapp", "to": "+1555",
                              "template": {"name": "n" * 513}}, ["body", "template", "name"]),
    ("post", "/v1/suppressions", {"channel": "email", "address": "x" * 321}, ["body", "address"]),
    ("post", "/v1/suppressions", {"channel": "email", "address": "a@b.c", "reason": "r" * 256},
     ["body", "reason"]),
    ("put", "/v1/contacts/1", {"name": "n" * 256}, ["body", "name"]),
    ("put", "/v1/contacts/1", {"channels": {"sms": "1" * 321}}, ["body", "channels", "sms"]),
    ("put", "/v1/contacts/1", {"device_tokens": ["t"] * 21}, ["body", "device_tokens"]),
    ("put", "/v1/contacts/1", {"device_tokens": ["t" * 513]}, ["body", "device_tokens", 0]),
    ("post", "/v1/followups", {"conversation": "c" * 201}, ["body", "conversation"]),
    ("post", "/v1/followups", {"conversation": "c", "waits": ["1m"] * (limits.MAX_FOLLOWUP_STEPS + 1)},
     ["body", "waits"]),
    ("post", "/v1/menus", _longest_menu(name="m" * 65), ["body", "name"]),
    ("put", "/v1/menus/main", {**_longest_menu(), "name": None, "expiry_message": "x" * 4097},
     ["body", "expiry_message"]),
    ("post", "/v1/menus", _longest_menu(trigger_keywords=["k"] * 101), ["body", "trigger_keywords"]),
]  # fmt: skip


@pytest.fixture
def reachable_api(time_env: WorkflowEnvironment, store: Store, sqlite_url: str) -> Iterator[Api]:
    """The API with a Temporal server to reach: routes that start workflows ask for the
    client before their body is checked."""
    temporal = TemporalSettings(address=time_env.client.service_client.config.target_host)
    settings = Settings(_env_file=None, database_url=sqlite_url, temporal=temporal)
    with (
        serve(create_app(settings, store=store)) as server,
        httpx.Client(base_url=server.url, timeout=15) as client,
    ):
        admin = {"Authorization": f"Bearer {store.create_token(Role.admin)}"}
        yield Api(client, store, admin=admin, user=admin)


@pytest.mark.parametrize(("method", "path", "body", "loc"), TOO_LONG)
def test_an_over_long_request_field_is_a_422_naming_it(
    reachable_api: Api, method: str, path: str, body: dict[str, Any], loc: list[str | int]
) -> None:
    api = reachable_api
    response = api.client.request(method, path, json=body, headers=api.admin)
    assert response.status_code == 422, response.text
    assert loc in [error["loc"][: len(loc)] for error in response.json()["detail"]], response.text


def test_a_menu_step_name_over_its_limit_is_a_422_naming_it(api: Api) -> None:
    raw = _longest_menu()
    raw["steps"]["s" * (limits.STEP_NAME + 1)] = {"message": "x", "end": True}
    response = api.client.post("/v1/menus", json=raw, headers=api.admin)
    assert response.status_code == 422
    locs = [error["loc"] for error in response.json()["detail"]]
    assert any(loc[:3] == ["body", "steps", "s" * (limits.STEP_NAME + 1)] for loc in locs), locs
