"""Inbound messages in the store, on SQLite and PostgreSQL: each kept once, STOP and START
applied with the message, and the routing lease that lets exactly one process route it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from store.inbound import MAX_ROUTE_ATTEMPTS, InboundResult, OptChange
from store.models import InboundMessage
from store.repo import Store
from tests.routing_lease import age_lease

PHONE = "+15557654321"


def record(
    store: Store, wamid: str, body: str = "hi", opt: OptChange | None = None
) -> InboundResult:
    return store.record_inbound(
        "whatsapp",
        wamid,
        PHONE,
        body=body,
        received_at=datetime.now(UTC),
        route_channel="whatsapp",
        opt=opt,
    )


def test_a_new_message_comes_with_its_routing_lease(any_store: Store) -> None:
    first = record(any_store, "wamid.1")
    assert first.new and first.route
    retried = record(any_store, "wamid.1")
    assert (retried.new, retried.route) == (False, False), "the first router still holds it"
    assert retried.inbound_id == first.inbound_id
    assert any_store.count_inbound() == 1


def test_sms_messages_are_kept_but_not_routed(any_store: Store) -> None:
    result = any_store.record_inbound(
        "sms", "SM1", PHONE, body="hello", received_at=datetime.now(UTC)
    )
    assert result.new and not result.route
    age_lease(any_store)
    assert any_store.take_unrouted(max_age=timedelta(days=1)) == []


def test_a_retry_after_the_lease_ran_out_routes_the_message_again(any_store: Store) -> None:
    first = record(any_store, "wamid.2")
    age_lease(any_store)
    retried = record(any_store, "wamid.2")
    assert (retried.new, retried.route) == (False, True)
    # Once routed, neither a retry nor the sweep takes it again.
    any_store.mark_routed(first.inbound_id)
    age_lease(any_store)
    assert not record(any_store, "wamid.2").route
    assert any_store.take_unrouted(max_age=timedelta(days=1)) == []


def test_the_sweep_takes_each_unrouted_message_once_oldest_first(any_store: Store) -> None:
    record(any_store, "wamid.a", "first")
    record(any_store, "wamid.b", "second")
    assert any_store.take_unrouted(max_age=timedelta(days=1)) == [], "leases still held"
    age_lease(any_store)
    taken = any_store.take_unrouted(max_age=timedelta(days=1))
    assert [(m.provider_message_id, m.body, m.route_channel) for m in taken] == [
        ("wamid.a", "first", "whatsapp"),
        ("wamid.b", "second", "whatsapp"),
    ]
    assert any_store.take_unrouted(max_age=timedelta(days=1)) == [], "now leased by the sweep"


def test_messages_older_than_the_max_age_are_not_swept(any_store: Store) -> None:
    any_store.record_inbound(
        "whatsapp",
        "wamid.old",
        PHONE,
        body="hi",
        received_at=datetime.now(UTC) - timedelta(hours=30),
        route_channel="whatsapp",
    )
    age_lease(any_store)
    assert any_store.take_unrouted(max_age=timedelta(hours=24)) == []


def test_routing_is_given_up_after_the_attempt_limit(any_store: Store) -> None:
    record(any_store, "wamid.doomed")
    for _ in range(MAX_ROUTE_ATTEMPTS - 1):
        age_lease(any_store)
        assert len(any_store.take_unrouted(max_age=timedelta(days=1))) == 1
    age_lease(any_store)
    assert any_store.take_unrouted(max_age=timedelta(days=1)) == []
    assert not record(any_store, "wamid.doomed").route


def test_concurrent_sweeps_never_take_the_same_message(any_store: Store) -> None:
    for i in range(20):
        record(any_store, f"wamid.c{i}")
    age_lease(any_store)
    taken: list[list[str]] = []
    barrier = threading.Barrier(4)

    def sweep() -> None:
        barrier.wait()
        rows = any_store.take_unrouted(max_age=timedelta(days=1))
        taken.append([row.provider_message_id for row in rows])

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [wamid for rows in taken for wamid in rows]
    assert sorted(every) == sorted(f"wamid.c{i}" for i in range(20))


def test_stop_is_stored_with_its_suppression_and_start_lifts_it(any_store: Store) -> None:
    record(any_store, "wamid.stop", "STOP", opt="out")
    found = any_store.suppression_for("whatsapp", PHONE, "transactional")
    assert found is not None and (found.scope, found.source) == ("all", "keyword")
    assert found.reason == "replied 'STOP'"
    # A retried STOP changes nothing; a second STOP message leaves one suppression.
    assert not record(any_store, "wamid.stop", "STOP", opt="out").new
    assert record(any_store, "wamid.stop2", "stop", opt="out").new
    assert len(any_store.list_suppressions(address=PHONE)) == 1

    record(any_store, "wamid.start", "START", opt="in")
    assert any_store.suppression_for("whatsapp", PHONE, "transactional") is None


def test_a_retried_stop_does_not_undo_a_later_start(any_store: Store) -> None:
    record(any_store, "wamid.s1", "STOP", opt="out")
    record(any_store, "wamid.s2", "START", opt="in")
    record(any_store, "wamid.s1", "STOP", opt="out")  # Meta redelivers the old STOP
    assert any_store.suppression_for("whatsapp", PHONE, "transactional") is None


def test_first_messages_from_a_new_number_at_once_make_one_contact(any_store: Store) -> None:
    barrier = threading.Barrier(6)
    results: list[int] = []

    def arrive(i: int) -> None:
        barrier.wait()
        results.append(record(any_store, f"wamid.n{i}", "STOP", opt="out").contact_id)

    threads = [threading.Thread(target=arrive, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and len(set(results)) == 1
    with any_store.sessions() as session:
        stored = list(session.scalars(select(InboundMessage.provider_message_id)))
    assert len(stored) == 6
    assert len(any_store.list_suppressions(address=PHONE)) == 1
