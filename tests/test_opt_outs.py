"""What a contact's START/YES/UNSTOP may lift, on SQLite and PostgreSQL: only the opt-outs
the contact made on that channel (a STOP) or their provider's block of it (Twilio 21610),
never an operator's suppression or an unsubscribe from marketing mail; and a "yes" from a
contact who is not opted out is an answer, not an opt-in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import create_engine, insert, select

from domain.menu_definition import MenuDefinition
from domain.policy import Keyword, OptOutSource
from starter.inbound import Inbound, handle_inbound
from store.db import alembic_config, upgrade
from store.inbound import InboundResult, OptChange
from store.models import Suppression
from store.repo import Store
from tests.menu_rig import PHONE as RIG_PHONE
from tests.menu_rig import Rig, text
from tests.menus import shop_menu

PHONE = "+15557650001"
EMAIL = "ann@example.com"


def say(
    store: Store, words: str, *, channel: str = "sms", opt: OptChange | None = None
) -> InboundResult:
    """A message from the contact, as the webhook stores it (``opt`` is what its keyword
    asks for: ``handle_inbound`` reads it from the words)."""
    return store.record_inbound(
        channel,
        f"id-{uuid.uuid4().hex}",
        EMAIL if channel == "email" else PHONE,
        body=words,
        received_at=datetime.now(UTC),
        opt=opt,
    )


def sources(store: Store, channel: str, address: str = PHONE) -> set[str]:
    return {row.source for row in store.list_suppressions(channel=channel, address=address)}


def test_an_operators_suppression_survives_start(any_store: Store) -> None:
    any_store.suppress(
        "sms", PHONE, scope="all", reason="asked by phone", source=OptOutSource.operator
    )
    assert say(any_store, "START", opt="in").opted is None, "nothing of the contact's to lift"
    assert sources(any_store, "sms") == {"operator"}

    # The contact's own STOP is kept beside the operator's, and START lifts only it.
    assert say(any_store, "STOP", opt="out").opted == "out"
    assert sources(any_store, "sms") == {"operator", "keyword"}
    assert say(any_store, "start", opt="in").opted == "in"
    assert sources(any_store, "sms") == {"operator"}
    assert any_store.suppression_for("sms", PHONE, "transactional") is not None


def test_an_unsubscribe_from_marketing_mail_survives_yes(any_store: Store) -> None:
    any_store.suppress(
        "email", EMAIL, scope="marketing", reason="unsubscribe link",
        source=OptOutSource.unsubscribe_link,
    )  # fmt: skip
    assert say(any_store, "YES", channel="email", opt="in").opted is None
    assert any_store.suppression_for("email", EMAIL, "marketing") is not None


def test_stop_is_lifted_by_start_on_its_own_channel_only(any_store: Store) -> None:
    say(any_store, "STOP", opt="out")
    assert say(any_store, "START", channel="whatsapp", opt="in").opted is None
    assert sources(any_store, "sms") == {"keyword"}, "a WhatsApp START leaves the SMS STOP"
    assert say(any_store, "UNSTOP", opt="in").opted == "in"
    assert any_store.list_suppressions(address=PHONE) == []


def test_a_provider_block_is_lifted_by_start(any_store: Store) -> None:
    any_store.suppress(
        "sms", PHONE, scope="all", reason="Twilio 21610: recipient opted out",
        source=OptOutSource.provider_block,
    )  # fmt: skip
    assert say(any_store, "START", opt="in").opted == "in"
    assert any_store.suppression_for("sms", PHONE, "transactional") is None


async def test_yes_is_an_opt_in_only_from_a_contact_who_is_opted_out(any_store: Store) -> None:
    async def inbound(words: str) -> Inbound:
        found = await handle_inbound(
            any_store, "whatsapp", f"wamid.{uuid.uuid4().hex}", PHONE,
            text=words, received_at=datetime.now(UTC), route_channel="whatsapp",
        )  # fmt: skip
        assert found is not None
        return found

    assert (await inbound("yes")).keyword is None, "an answer, not an opt-in"
    assert (await inbound("STOP")).keyword == Keyword.stop
    assert (await inbound("Yes!")).keyword == Keyword.start
    assert any_store.list_suppressions(address=PHONE) == []
    assert (await inbound("yes")).keyword is None


def test_opt_outs_stored_before_their_source_mattered_keep_what_it_says(any_db_url: str) -> None:
    """Migration 0006: what the rows say for certain stays liftable (a STOP, Twilio's block);
    a row of unknown origin becomes an operator's, which only an operator lifts."""
    from alembic import command

    command.downgrade(alembic_config(any_db_url), "0005")
    rows = [
        ("sms", "+15550000001", "all", "replied 'STOP'", "keyword"),
        ("sms", "+15550000002", "all", "Twilio 21610: recipient opted out", "provider"),
        ("sms", "+15550000003", "all", "added by an operator", "api"),
        ("email", EMAIL, "marketing", "unsubscribe link", "unsubscribe_link"),
        ("sms", "+15550000004", "all", "imported", "keyword"),
        ("sms", "+15550000005", "all", "imported", "crm"),
    ]
    engine = create_engine(any_db_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(Suppression),
                [
                    dict(
                        zip(("channel", "address", "scope", "reason", "source"), row, strict=True),
                        created_at=datetime.now(UTC),
                    )
                    for row in rows
                ],
            )
        upgrade(any_db_url)
        with engine.connect() as connection:
            found = dict(connection.execute(select(Suppression.address, Suppression.source)).all())
    finally:
        engine.dispose()
    assert found == {
        "+15550000001": "keyword",
        "+15550000002": "provider_block",
        "+15550000003": "operator",
        EMAIL: "unsubscribe_link",
        "+15550000004": "operator",
        "+15550000005": "operator",
    }


# -- "yes" in a menu conversation ----------------------------------------------------------


def reminder_menu() -> MenuDefinition:
    """A menu whose question a customer may well answer "yes"."""
    return shop_menu(
        name="reminders",
        trigger_keywords=["hi"],
        start="ask",
        steps={
            "ask": {
                "message": "Shall we remind you the day before?",
                "save_as": "reminder",
                "next": "done",
            },
            "done": {"message": "Noted: {reminder}.", "end": True},
        },
    )


async def test_yes_from_a_contact_not_opted_out_answers_the_question(rig: Rig) -> None:
    rig.store.save_menu(reminder_menu())
    assert await rig.say("hi") == "trigger:reminders"
    assert text((await rig.replies(1))[0]) == "Shall we remind you the day before?"

    assert await rig.say("yes") == "conversation"
    assert text((await rig.replies(2))[1]) == "Noted: yes."
    result = await rig.result()
    assert (result.status, result.context) == ("completed", {"reminder": "yes"})
    assert rig.store.list_suppressions(address=RIG_PHONE) == []


async def test_yes_as_an_answer_does_not_lift_an_operators_suppression(rig: Rig) -> None:
    rig.store.save_menu(reminder_menu())
    assert await rig.say("hi") == "trigger:reminders"
    await rig.replies(1)
    rig.store.suppress(
        "whatsapp", RIG_PHONE, scope="all", reason="asked us by phone to stop",
        source=OptOutSource.operator,
    )  # fmt: skip

    assert await rig.say("yes") == "conversation"
    result = await rig.result()
    assert result.context == {"reminder": "yes"}
    assert len(rig.graph.sent) == 1, "the answer's reply was suppressed"
    assert sources(rig.store, "whatsapp", RIG_PHONE) == {"operator"}


async def test_yes_from_a_contact_who_said_stop_opts_them_back_in(rig: Rig) -> None:
    rig.store.save_menu(reminder_menu())
    assert await rig.say("hi") == "trigger:reminders"
    await rig.replies(1)
    assert await rig.say("STOP") == "opt_out"
    assert (await rig.result()).status == "cancelled"
    assert rig.store.suppression_for("whatsapp", RIG_PHONE, "transactional") is not None

    # The opt-in lifts the STOP; the word itself goes on like any other: no conversation
    # runs and "yes" triggers no menu, so nothing is sent (there is no fallback text).
    assert await rig.say("YES") == "ignored"
    assert rig.store.suppression_for("whatsapp", RIG_PHONE, "transactional") is None
    assert await rig.say("hi") == "trigger:reminders"
    assert text((await rig.replies(2))[1]) == "Shall we remind you the day before?"
