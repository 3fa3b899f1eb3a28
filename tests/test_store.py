"""The store's contracts, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect

from store.db import upgrade
from store.repo import FollowUpRecord, OutboxStatus, Role, Store


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
