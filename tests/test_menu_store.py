"""The menu store's contracts, on SQLite and on PostgreSQL alike: definitions, sessions written
twice by retried activities, business events once per key, and one fallback per period."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from alembic import command
from sqlalchemy import inspect

from domain.menu_definition import MenuDefinition
from store.db import alembic_config, upgrade
from store.repo import Store

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def menu(name: str, *, priority: int = 0, active: bool = True, **extra: Any) -> MenuDefinition:
    return MenuDefinition.model_validate(
        {
            "name": name,
            "trigger_keywords": ["menu", "hi"],
            "priority": priority,
            "start": "initial",
            "expiry": "2h",
            "active": active,
            "steps": {
                "initial": {
                    "message": {
                        "type": "button",
                        "body": {"text": "How can we help?"},
                        "action": {
                            "buttons": [
                                {"type": "reply", "reply": {"id": "order", "title": "Order"}},
                                {"type": "reply", "reply": {"id": "human", "title": "Human"}},
                            ]
                        },
                    },
                    "next": {"order": "ask_size", "human": "handoff"},
                },
                "ask_size": {
                    "message": "How many?",
                    "save_as": "size",
                    "validate": "number",
                    "error": "A number, please.",
                    "next": "done",
                },
                "done": {"message": "Thanks, {size} it is.", "end": True, "event": "ordered"},
                "handoff": {"message": "Someone will answer.", "end": True, "handoff": True},
            },
            **extra,
        }
    )


def test_migration_creates_the_menu_tables_and_goes_down_and_up(any_db_url: str) -> None:
    store = Store.from_url(any_db_url)
    try:
        tables = set(inspect(store.engine).get_table_names())
        assert {"menus", "menu_sessions", "business_events", "fallback_replies"} <= tables
        command.downgrade(alembic_config(any_db_url), "0002")
        assert "menus" not in set(inspect(store.engine).get_table_names())
        upgrade(any_db_url)
        store.save_menu(menu("main"))
        assert store.menu_names() == {"main"}
    finally:
        store.close()


# -- definitions ---------------------------------------------------------------------------


def test_save_get_list_delete_menus(any_store: Store) -> None:
    store = any_store
    assert store.get_menu("main") is None
    assert store.list_menus() == [] and store.menu_names() == set()

    main = menu("main", priority=5)
    assert store.save_menu(main) is True
    assert store.get_menu("main") == main, "a definition comes back exactly as saved"
    assert store.get_menu("main").expiry == timedelta(hours=2)  # type: ignore[union-attr]
    assert store.get_menu("main").steps["ask_size"].validate_ == "number"  # type: ignore[union-attr]

    changed = menu("main", priority=1, expiry_message="We closed this chat.")
    assert store.save_menu(changed) is False, "a second save replaces"
    assert store.get_menu("main") == changed

    store.save_menu(menu("b_second", priority=1))
    store.save_menu(menu("a_first", priority=1))
    store.save_menu(menu("top", priority=9))
    store.save_menu(menu("off", priority=20, active=False))
    assert [m.name for m in store.list_menus()] == ["off", "top", "a_first", "b_second", "main"]
    assert [m.name for m in store.list_menus(active_only=True)] == [
        "top",
        "a_first",
        "b_second",
        "main",
    ]
    assert store.menu_names() == {"main", "a_first", "b_second", "top", "off"}

    store.save_menu(menu("off", priority=20, active=True))
    assert "off" in {m.name for m in store.list_menus(active_only=True)}, "active follows saves"

    assert store.delete_menu("top") is True
    assert store.delete_menu("top") is False
    assert store.get_menu("top") is None
    assert "top" not in store.menu_names()


def test_concurrent_first_saves_create_once(any_store: Store) -> None:
    created: list[bool] = []
    errors: list[BaseException] = []

    def save(priority: int) -> None:
        try:
            created.append(any_store.save_menu(menu("race", priority=priority)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(created) == [False] * 5 + [True]
    assert any_store.menu_names() == {"race"}


# -- sessions ------------------------------------------------------------------------------

TRANSCRIPT = [
    {"at": "2026-11-24T09:00:00+00:00", "direction": "in", "text": "menu", "step": "initial"},
    {"at": "2026-11-24T09:00:01+00:00", "direction": "out", "text": "How can?", "step": "initial"},
]


def start(store: Store, session_id: str, menu_name: str = "main", at: datetime = T0) -> None:
    workflow_id = session_id.rpartition(":")[0]
    store.start_menu_session(
        session_id,
        workflow_id=workflow_id,
        menu=menu_name,
        channel="whatsapp",
        address=workflow_id.rpartition(":")[2],
        started_at=at,
    )


def end(store: Store, session_id: str, status: str, last_step: str, at: datetime) -> None:
    store.end_menu_session(
        session_id,
        status=status,
        last_step=last_step,
        context={"size": "3"},
        transcript=TRANSCRIPT,
        ended_at=at,
    )


def test_sessions_are_recorded_once_and_ended_once(any_store: Store) -> None:
    store = any_store
    sid = "menu:whatsapp:+15550001111:run-1"
    start(store, sid)
    start(store, sid, at=T0 + timedelta(minutes=5))  # a retried activity
    [active] = store.list_menu_sessions("main")
    assert active.session_id == sid and active.workflow_id == "menu:whatsapp:+15550001111"
    assert active.channel == "whatsapp" and active.address == "+15550001111"
    assert active.status == "active" and active.started_at == T0
    assert active.started_at.tzinfo is not None
    assert active.ended_at is None and active.last_step is None
    assert active.context == {} and active.transcript == []

    end(store, sid, "completed", "done", T0 + timedelta(minutes=3))
    end(store, sid, "completed", "done", T0 + timedelta(minutes=3))  # retried
    end(store, sid, "expired", "ask_size", T0 + timedelta(hours=3))  # a first outcome stays
    [ended] = store.list_menu_sessions("main")
    assert ended.id == active.id
    assert ended.status == "completed" and ended.last_step == "done"
    assert ended.context == {"size": "3"} and ended.transcript == TRANSCRIPT
    assert ended.ended_at == T0 + timedelta(minutes=3) and ended.ended_at.tzinfo is not None


def test_ending_a_session_never_started_makes_its_row(any_store: Store) -> None:
    store = any_store
    sid = "menu:whatsapp:+15550002222:run-9"
    end(store, sid, "cancelled", "initial", T0 + timedelta(minutes=1))
    start(store, sid)  # a late start changes nothing
    [row] = store.list_menu_sessions("")
    assert row.session_id == sid and row.workflow_id == "menu:whatsapp:+15550002222"
    assert row.channel == "whatsapp" and row.address == "+15550002222"
    assert row.status == "cancelled" and row.last_step == "initial"
    assert row.started_at == T0, "from the transcript's first entry"
    assert row.ended_at == T0 + timedelta(minutes=1)


def test_list_sessions_newest_first_by_status_and_limit(any_store: Store) -> None:
    store = any_store
    for n in range(5):
        start(store, f"menu:whatsapp:+1555000000{n}:r", at=T0 + timedelta(minutes=n))
    start(store, "menu:whatsapp:+15559999999:r", "other", at=T0 + timedelta(hours=1))
    end(store, "menu:whatsapp:+15550000001:r", "expired", "ask_size", T0 + timedelta(hours=2))
    end(store, "menu:whatsapp:+15550000003:r", "expired", "ask_size", T0 + timedelta(hours=2))

    def addresses(**kwargs: Any) -> list[str]:
        return [row.address for row in store.list_menu_sessions("main", **kwargs)]

    assert addresses() == [f"+1555000000{n}" for n in (4, 3, 2, 1, 0)]
    assert addresses(limit=2) == ["+15550000004", "+15550000003"]
    assert addresses(status="expired") == ["+15550000003", "+15550000001"]
    assert addresses(status="active") == ["+15550000004", "+15550000002", "+15550000000"]
    assert addresses(status="handed_off") == []
    assert store.list_menu_sessions("nobody") == []


def test_stats_count_outcomes_and_where_customers_drop_off(any_store: Store) -> None:
    store = any_store
    assert store.menu_stats("main").started == 0
    assert store.menu_stats("main").drop_off == {}
    outcomes = [
        ("completed", "done"),
        ("completed", "done"),
        ("expired", "ask_size"),
        ("expired", "ask_size"),
        ("expired", "initial"),
        ("handed_off", "handoff"),
        ("cancelled", "initial"),
        ("moved", "initial"),
        (None, None),
        (None, None),
    ]
    for n, (status, step) in enumerate(outcomes):
        sid = f"menu:whatsapp:+1555000{n:04d}:r"
        start(store, sid)
        if status is not None and step is not None:
            end(store, sid, status, step, T0 + timedelta(hours=1))
    start(store, "menu:whatsapp:+15559999999:r", "other")
    end(store, "menu:whatsapp:+15559999999:r", "expired", "ask_size", T0 + timedelta(hours=1))

    stats = store.menu_stats("main")
    assert (stats.started, stats.active, stats.completed) == (10, 2, 2)
    assert (stats.expired, stats.handed_off, stats.cancelled, stats.moved) == (3, 1, 1, 1)
    assert stats.drop_off == {"ask_size": 2, "initial": 1}
    assert store.menu_stats("other").drop_off == {"ask_size": 1}


# -- business events -----------------------------------------------------------------------


def test_events_are_recorded_once_per_key(any_store: Store) -> None:
    def record(key: str, name: str = "ordered") -> bool:
        return any_store.record_event(
            key,
            name=name,
            source="menu:main",
            channel="whatsapp",
            address="+15550001111",
            payload={"menu": "main", "context": {"size": "3"}},
            created_at=T0,
        )

    assert record("menu:whatsapp:+15550001111:run-1:ordered") is True
    assert record("menu:whatsapp:+15550001111:run-1:ordered") is False
    assert record("menu:whatsapp:+15550001111:run-1:ordered", "other") is False
    assert record("menu:whatsapp:+15550001111:run-2:ordered") is True


# -- fallback auto-reply -------------------------------------------------------------------


def test_one_fallback_per_contact_per_period(any_store: Store) -> None:
    day = timedelta(hours=24)

    def claim(at: datetime, address: str = "+15550001111", channel: str = "whatsapp") -> bool:
        return any_store.claim_fallback(channel, address, now=at, period=day)

    assert claim(T0) is True
    assert claim(T0) is False
    assert claim(T0 + timedelta(hours=23, minutes=59)) is False
    assert claim(T0, address="+15550002222") is True, "per contact"
    assert claim(T0, channel="sms") is True, "per channel"
    assert claim(T0 + day) is True, "a period after the last one"
    assert claim(T0 + day + timedelta(hours=1)) is False, "counted from the last one sent"
    paris = T0.astimezone(timezone(timedelta(hours=1)))
    assert claim(paris + 2 * day) is True, "any time zone in, UTC kept"


def claim_together(store: Store, now: datetime, threads: int = 8) -> list[bool]:
    results: list[bool] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def claim() -> None:
        try:
            barrier.wait()
            results.append(
                store.claim_fallback(
                    "whatsapp", "+15550001111", now=now, period=timedelta(hours=24)
                )
            )
        except BaseException as exc:
            errors.append(exc)

    running = [threading.Thread(target=claim) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    assert not errors, errors
    return results


def test_concurrent_fallback_claims_give_exactly_one(any_store: Store) -> None:
    first = claim_together(any_store, T0)  # races to insert the contact's row
    assert sorted(first) == [False] * 7 + [True]
    later = claim_together(any_store, T0 + timedelta(days=2))  # races on the conditional update
    assert sorted(later) == [False] * 7 + [True]
    assert claim_together(any_store, T0 + timedelta(days=2, hours=1)) == [False] * 8
