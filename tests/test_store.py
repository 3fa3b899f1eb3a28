"""The store's contracts, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import inspect

from domain.status import OutboxStatus
from store.db import upgrade
from store.delivery import FrequencyCap, FrequencyCapped
from store.repo import FollowUpRecord, OutboxRow, Role, Store


def test_migrations_create_the_tables_and_run_twice(any_db_url: str, any_store: Store) -> None:
    upgrade(any_db_url)  # a second run is a no-op, as every start of the worker does it
    tables = set(inspect(any_store.engine).get_table_names())
    assert {"contacts", "followups", "outbox", "api_tokens", "alembic_version"} <= tables


def test_outbox_claim_is_decided_once_by_the_key(any_store: Store) -> None:
    first = any_store.claim_outbox(
        "k1",
        workflow_id="wf",
        channel="reamaze",
        recipient="c1",
        body="hi",
        message_class="marketing",
    )
    assert first.status == OutboxStatus.pending
    any_store.mark_outbox("k1", OutboxStatus.sending)
    any_store.mark_outbox("k1", OutboxStatus.sent, provider_message_id="p1")
    again = any_store.claim_outbox(
        "k1",
        workflow_id="wf",
        channel="reamaze",
        recipient="c1",
        body="other",
        message_class="marketing",
    )
    assert again.status == OutboxStatus.sent
    assert again.body == "hi", "a second claim must not overwrite the first message"
    assert again.provider_message_id == "p1"
    assert again.attempts == 1
    assert again.sent_at is not None and again.sent_at.tzinfo is not None


def test_concurrent_claims_make_one_row(any_store: Store) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def claim() -> None:
        try:
            row = any_store.claim_outbox(
                "race",
                workflow_id="wf",
                channel="reamaze",
                recipient="c",
                body="b",
                message_class="marketing",
            )
            results.append(row.idempotency_key)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert results == ["race"] * 8
    assert len(any_store.list_outbox(workflow_id="wf")) == 1


def test_mark_unknown_key_raises(any_store: Store) -> None:
    with pytest.raises(KeyError):
        any_store.mark_outbox("missing", OutboxStatus.sent)


def _record(
    conversation: str, run: str, status: str, minutes: int, tag_removed: bool
) -> FollowUpRecord:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return FollowUpRecord(
        workflow_id=f"followup:reamaze:{conversation}",
        run_id=run,
        helpdesk="reamaze",
        conversation=conversation,
        status=status,
        started_at=start,
        finished_at=start + timedelta(minutes=minutes),
        steps=[{"step": 1, "sent_at": start.isoformat(), "fallback_used": True}],
        fallback_used=True,
        tag_removed=tag_removed,
    )


def test_followup_outcomes_upsert_filter_and_latest(any_store: Store) -> None:
    any_store.record_followup(_record("a", "r1", "completed", 1, True))
    any_store.record_followup(_record("a", "r1", "completed", 1, True))  # a retried recording
    any_store.record_followup(_record("a", "r2", "purchase_detected", 5, False))
    any_store.record_followup(_record("b", "r3", "cancelled", 3, True))
    assert len(any_store.list_followups()) == 3
    assert [r.conversation for r in any_store.list_followups(status=["cancelled"])] == ["b"]
    latest = any_store.latest_followups("reamaze", ["a", "b", "c"])
    assert set(latest) == {"a", "b"}
    assert latest["a"].run_id == "r2" and latest["a"].tag_removed is False
    assert latest["a"].steps[0]["fallback_used"] is True


def test_tokens_are_hashed_and_checked(any_store: Store) -> None:
    token = any_store.create_token(Role.admin, "ops")
    info = any_store.verify_token(token)
    assert info is not None and info.role == Role.admin and info.name == "ops"
    assert any_store.verify_token(token + "x") is None
    with any_store.engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT token_hash FROM api_tokens").scalar_one()
    assert token not in stored and len(stored) == 64


def test_contacts_upsert_by_source_and_external_id(any_store: Store) -> None:
    first = any_store.upsert_contact(
        "reamaze", "ann@example.com", name="Ann", email="ann@example.com"
    )
    second = any_store.upsert_contact(
        "reamaze", "ann@example.com", name=None, email="ann@example.com"
    )
    assert first == second
    other = any_store.upsert_contact("whatsapp", "ann@example.com")
    assert other != first


def _claim(store: Store, key: str, **fields: Any) -> OutboxRow:
    values: dict[str, Any] = {
        "workflow_id": "wf",
        "channel": "sms",
        "recipient": "+15551230000",
        "body": "b",
        "message_class": "marketing",
    }
    values.update(fields)
    return store.claim_outbox(key, **values)


def test_taking_a_pending_row_is_a_compare_and_set(any_store: Store) -> None:
    """Of attempts racing for one row, exactly one moves it from pending; the rest get None."""
    _claim(any_store, "cas")
    won: list[OutboxRow | None] = []
    threads = [
        threading.Thread(
            target=lambda: won.append(any_store.take_outbox("cas", OutboxStatus.sending))
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [winner] = [row for row in won if row is not None]
    assert winner.status == OutboxStatus.sending and winner.attempts == 1
    assert len(won) == 8
    assert any_store.take_outbox("cas", OutboxStatus.unknown) is None, "not pending any more"
    unknown = any_store.take_outbox("cas", OutboxStatus.unknown, expected=OutboxStatus.sending)
    assert unknown is not None and unknown.status == OutboxStatus.unknown
    assert any_store.take_outbox("missing", OutboxStatus.sending) is None


def test_capped_claims_for_one_contact_are_decided_one_at_a_time(any_store: Store) -> None:
    """The count and the claim are one step per contact: of five claims racing for a cap of
    two, two get rows and three are told when to ask again, however the threads interleave
    (the rule sleeps while it holds the lock, to give them every chance to)."""
    contact = any_store.upsert_contact("shop", "c-1")
    stranger = any_store.upsert_contact("shop", "c-2")
    now = datetime.now(UTC)
    day = timedelta(hours=24)

    def two_a_day(times: list[datetime]) -> datetime | None:
        time.sleep(0.2)
        return times[-2] + day if len(times) >= 2 else None

    outcomes: list[str] = []

    def claim(key: str) -> None:
        cap = FrequencyCap(contact, now - day, two_a_day)
        try:
            _claim(any_store, key, contact_id=contact, cap=cap)
            outcomes.append("claimed")
        except FrequencyCapped as capped:
            assert capped.not_before > now + timedelta(hours=23)
            outcomes.append("capped")

    threads = [threading.Thread(target=claim, args=(f"offer-{n}",)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["capped"] * 3 + ["claimed"] * 2
    assert len(any_store.list_outbox(contact_id=contact)) == 2
    other = FrequencyCap(stranger, now - day, two_a_day)
    assert _claim(any_store, "other", contact_id=stranger, cap=other).status == "pending", (
        "another contact's cap is their own"
    )
    [first, *_] = any_store.list_outbox(contact_id=contact)
    any_store.mark_outbox(first.idempotency_key, OutboxStatus.sent, provider_message_id="SM1")
    full = FrequencyCap(contact, now - day, two_a_day)
    again = _claim(any_store, first.idempotency_key, contact_id=contact, cap=full)
    assert again.status == OutboxStatus.sent, "a row past pending is returned, not capped"


def test_marketing_times_count_claimed_and_unknown_sends(any_store: Store) -> None:
    contact = any_store.upsert_contact("shop", "c-1")
    since = datetime.now(UTC) - timedelta(minutes=1)
    for key, status in (
        ("sent", OutboxStatus.sent),
        ("in-flight", OutboxStatus.sending),
        ("lost", OutboxStatus.unknown),
        ("refused", OutboxStatus.failed),
        ("opted-out", OutboxStatus.suppressed),
        ("waiting", None),
    ):
        _claim(any_store, key, contact_id=contact)
        if status is not None:
            any_store.mark_outbox(key, status)
    _claim(any_store, "receipt", contact_id=contact, message_class="transactional")
    rows = {row.idempotency_key: row for row in any_store.list_outbox(contact_id=contact)}
    sent_at = rows["sent"].sent_at
    assert sent_at is not None
    expected = sorted(
        [sent_at] + [rows[key].created_at for key in ("in-flight", "lost", "waiting")]
    )
    assert marketing_sent_since(any_store, contact, since) == expected
    assert len(marketing_sent_since(any_store, contact, since, excluding="waiting")) == 3
    assert marketing_sent_since(any_store, contact, datetime.now(UTC) + timedelta(minutes=1)) == []


def marketing_sent_since(
    store: Store, contact_id: int, since: datetime, *, excluding: str | None = None
) -> list[datetime]:
    """What the policy counts against the frequency cap, as it reads it."""
    facts = store.policy_facts(
        [], "marketing", contact_id=contact_id, marketing_since=since, excluding=excluding
    )
    return facts.marketing_times


def test_statuses_that_beat_the_send_are_applied_when_it_is_marked_sent(any_store: Store) -> None:
    """A webhook can report on a message before ``mark_outbox`` stored its provider id: the
    events wait in the store and the furthest of them is applied at the mark."""
    at = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    _claim(any_store, "early")
    any_store.take_outbox("early", OutboxStatus.sending)
    for status, minute in (("read", 2), ("delivered", 1)):
        early = any_store.record_status(
            "twilio", "SM1", status, occurred_at=at.replace(minute=minute)
        )
        assert early.new and not early.advanced and early.workflow_id is None
    row = any_store.mark_outbox("early", OutboxStatus.sent, provider_message_id="SM1")
    assert (row.status, row.status_at) == (OutboxStatus.read, at.replace(minute=2))
    assert row.sent_at is not None, "it was sent, whatever came after"
    late = any_store.record_status("twilio", "SM1", "delivered", occurred_at=at)
    assert not late.new and not late.advanced, "a retried webhook is a duplicate"

    _claim(any_store, "plain")
    plain = any_store.mark_outbox("plain", OutboxStatus.sent, provider_message_id="SM2")
    assert plain.status == OutboxStatus.sent and plain.error is None, "no events, no change"
