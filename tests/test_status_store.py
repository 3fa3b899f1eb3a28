"""Delivery statuses in the store, on SQLite and PostgreSQL: a status is kept and applied in
one transaction, so a failure half-way leaves the provider's retry something to apply; and
statuses racing each other (and the send path's own mark) never move a message backwards."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select

from domain.status import OutboxStatus, furthest
from store.models import DeliveryEvent
from store.repo import Store


class ConnectionLost(Exception):
    """Stands in for the database going away in the middle of a transaction."""


@contextmanager
def failing_outbox_update(store: Store) -> Iterator[None]:
    """The next UPDATE of the outbox fails, as if the connection dropped just before it."""
    armed = [True]

    def fail(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if armed[0] and statement.lstrip().upper().startswith("UPDATE OUTBOX"):
            armed[0] = False
            raise ConnectionLost(statement)

    event.listen(store.engine, "before_cursor_execute", fail)
    try:
        yield
    finally:
        event.remove(store.engine, "before_cursor_execute", fail)


def sent_message(store: Store, sid: str | None = None) -> str:
    """An outbox row as the send path leaves it: claimed and, given ``sid``, marked sent."""
    key = f"test:{uuid.uuid4().hex}"
    store.claim_outbox(
        key,
        workflow_id=f"wf-{key}",
        channel="sms",
        recipient="+15550101010",
        body="Your order has shipped",
        message_class="transactional",
    )
    if sid is not None:
        store.mark_outbox(key, OutboxStatus.sent, provider_message_id=sid)
    return key


def events(store: Store, sid: str) -> list[str]:
    with store.sessions() as session:
        return list(
            session.scalars(
                select(DeliveryEvent.status).where(DeliveryEvent.provider_message_id == sid)
            )
        )


def status_of(store: Store, key: str) -> str:
    row = store.get_outbox(key)
    assert row is not None
    return row.status


def test_a_status_that_failed_half_way_is_applied_by_the_providers_retry(
    any_store: Store,
) -> None:
    sid = f"SM{uuid.uuid4().hex}"
    key = sent_message(any_store, sid)
    at = datetime.now(UTC)
    with failing_outbox_update(any_store), pytest.raises(ConnectionLost):
        any_store.record_status("twilio", sid, "delivered", occurred_at=at)
    assert events(any_store, sid) == [], "the event went with the failed update"
    assert status_of(any_store, key) == OutboxStatus.sent

    retried = any_store.record_status("twilio", sid, "delivered", occurred_at=at)
    assert (retried.new, retried.advanced) == (True, True)
    assert (retried.idempotency_key, retried.workflow_id) == (key, f"wf-{key}"), "signalled"
    assert status_of(any_store, key) == OutboxStatus.delivered
    again = any_store.record_status("twilio", sid, "delivered", occurred_at=at)
    assert (again.new, again.advanced) == (False, False)


RACES = 40
RACERS = ("mark_sent", "sent", "delivered", "read", "failed")


def test_racing_statuses_end_at_the_furthest(any_store: Store) -> None:
    """Each round, the send path marks the message sent (and applies what was reported
    before it) while the provider's statuses arrive at once on other connections; whatever
    the order, the row ends at the furthest status and nothing fails."""
    rounds: list[tuple[str, list[str]]] = []
    errors: list[BaseException] = []
    for race in range(RACES):
        sid = f"SM{uuid.uuid4().hex}"
        key = sent_message(any_store)
        reported = list(RACERS[1 : 2 + race % (len(RACERS) - 1)])
        barrier = threading.Barrier(1 + len(reported))

        def run(racer: str, sid: str = sid, key: str = key, barrier: Any = barrier) -> None:
            barrier.wait()
            try:
                if racer == "mark_sent":
                    any_store.mark_outbox(key, OutboxStatus.sent, provider_message_id=sid)
                else:
                    any_store.record_status("twilio", sid, racer, occurred_at=datetime.now(UTC))
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=run, args=(r,)) for r in ["mark_sent", *reported]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rounds.append((key, reported))
    assert errors == []
    ended = [(status_of(any_store, key), furthest(["sent", *seen])) for key, seen in rounds]
    assert [got for got, _ in ended] == [want for _, want in ended]
