"""``GET /v1/analytics/messages`` over real HTTP, on SQLite and on PostgreSQL: messages and
credits made through the store's own send, status and settlement methods, then every figure
the route answers compared with a count made by hand."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update

from domain.credits import EntryKind
from domain.scheduled_followups import FollowupSettings, ScheduleStatus, SettleRequest
from domain.status import OutboxStatus
from store.analytics import SENT, GroupBy
from store.credits import add_entry
from store.models import OutboxMessage, ScheduledFollowup
from store.repo import Store
from store.scheduled_followups import NewSchedule
from tests.api_rig import Api

URL = "/v1/analytics/messages"
DAY_A = datetime(2025, 3, 10, tzinfo=UTC)
DAY_B = DAY_A + timedelta(days=1)
PERIOD = {"from": "2025-03-10", "to": "2025-03-12"}
PROVIDER = "twilio"
RECIPIENT = "+15550001234"


@dataclass
class Shop:
    """The one contact every message goes to."""

    store: Store
    contact_id: int

    @classmethod
    def open(cls, store: Store) -> Shop:
        contact_id = store.upsert_contact("test", uuid.uuid4().hex, phone=RECIPIENT)
        return cls(store, contact_id)

    def price(self, price: str) -> FollowupSettings:
        settings = FollowupSettings(
            credit_price=Decimal(price), currency="EUR", min_interval_hours=0
        )
        return self.store.save_followup_settings(settings)

    def message(
        self,
        status: OutboxStatus,
        *,
        channel: str,
        template: str | None,
        at: datetime,
        claimed_at: datetime | None = None,
        key: str | None = None,
    ) -> str:
        """A message taken to ``status`` the way the send path and the providers take it,
        then dated ``at`` (``sent_at`` when it was sent, else ``created_at``)."""
        key = key or f"test:{uuid.uuid4().hex}"
        store = self.store
        if status == OutboxStatus.held:
            store.hold_outbox(
                key,
                workflow_id=f"wf-{key}",
                channel=channel,
                recipient=RECIPIENT,
                body="hello",
                message_class="transactional",
                not_before=at,
                reason="quiet hours",
                template_name=template,
            )
        else:
            store.claim_outbox(
                key,
                workflow_id=f"wf-{key}",
                channel=channel,
                recipient=RECIPIENT,
                body="hello",
                message_class="transactional",
                contact_id=self.contact_id,
                template_name=template,
            )
        provider_id = f"SM{uuid.uuid4().hex}"
        if status in (OutboxStatus.sent, OutboxStatus.delivered, OutboxStatus.read):
            store.mark_outbox(key, OutboxStatus.sent, provider_message_id=provider_id)
        if status in (OutboxStatus.delivered, OutboxStatus.read):
            store.record_status(PROVIDER, provider_id, status.value, occurred_at=at)
        if status in (OutboxStatus.sandboxed, OutboxStatus.suppressed, OutboxStatus.unknown):
            store.mark_outbox(key, status)
        sent = status in SENT
        self.date(key, created_at=claimed_at or at, sent_at=at if sent else None)
        return key

    def paid_message(
        self, status: OutboxStatus, cost: int, *, channel: str, template: str, at: datetime
    ) -> int:
        """A scheduled follow-up whose message was sent (then ``delivered`` or ``read``, as
        the provider reports) and its credits captured at today's price. Its id."""
        settings = self.store.followup_settings()
        view, _ = self.store.schedule_followup(
            NewSchedule(
                contact_id=self.contact_id,
                template_id=None,
                template_name=template,
                channel=channel,
                scheduled_at=datetime.now(UTC) + timedelta(hours=1),
                cost=0,
            ),
            settings,
        )
        # Reserved by hand: a reservation's balance check (``ledger_balance``) groups by an
        # expression PostgreSQL refuses, as ``add_credits`` does. The capture is the store's.
        with self.store.sessions.begin() as session:
            session.execute(
                update(ScheduledFollowup)
                .where(ScheduledFollowup.id == view.id)
                .values(credits_reserved=cost)
            )
        self.message(status, channel=channel, template=template, at=at, key=view.message_key)
        settled = self.store.settle_schedule(
            SettleRequest(view.id, view.workflow_id, view.message_key, ScheduleStatus.failed)
        )
        assert settled.credits_charged == cost
        return view.id

    def fail(self, schedule_id: int) -> None:
        """The provider reports the paid message failed after all: its credits come back,
        in the refund entry ``ScheduleStore.schedule_statuses`` writes."""
        view = self.store.get_schedule(schedule_id)
        assert view is not None
        row = self.store.get_outbox(view.message_key)
        assert row is not None and row.provider_message_id is not None
        self.store.record_status(
            PROVIDER, row.provider_message_id, "failed", occurred_at=DAY_B, error_code="30003"
        )
        with self.store.sessions.begin() as session:
            add_entry(
                session,
                contact_id=self.contact_id,
                kind=EntryKind.adjust,
                amount=view.credits_charged,
                reason=f"refund: follow-up {schedule_id} was not delivered",
                key=f"{view.workflow_id}:refund",
                reference=view.workflow_id,
                schedule_id=schedule_id,
                message_key=view.message_key,
            )

    def date(self, key: str, *, created_at: datetime, sent_at: datetime | None) -> None:
        with self.store.sessions.begin() as session:
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.idempotency_key == key)
                .values(created_at=created_at, sent_at=sent_at)
            )


def two_days_of_messages(store: Store) -> None:
    """Numbered as in the counts below: day A is 2025-03-10, day B 2025-03-11 (UTC)."""
    shop = Shop.open(store)
    sent, delivered, read = OutboxStatus.sent, OutboxStatus.delivered, OutboxStatus.read
    shop.price("0.50")
    shop.paid_message(delivered, 5, channel="whatsapp", template="welcome", at=DAY_A)  # 3
    shop.paid_message(read, 5, channel="whatsapp", template="welcome", at=DAY_A)  # 5: no delivered
    failing = shop.paid_message(  # 8: reported failed below
        sent, 5, channel="whatsapp", template="promo", at=DAY_B + timedelta(hours=2)
    )
    shop.price("2.00")  # the captures above keep their 0.50
    shop.paid_message(delivered, 3, channel="email", template="receipt", at=DAY_B)  # 4
    shop.fail(failing)  # refunded at its capture's 0.50, not at today's 2.00
    shop.message(sent, channel="whatsapp", template="welcome", at=DAY_A + timedelta(hours=9))  # 1
    shop.message(  # 2: claimed on day A, sent on day B: counts on day B
        sent,
        channel="sms",
        template=None,
        at=DAY_B + timedelta(hours=1),
        claimed_at=DAY_A + timedelta(hours=23),
    )
    shop.message(  # 6: late on day A in UTC, day B in much of Asia
        OutboxStatus.sandboxed, channel="sms", template="receipt", at=DAY_B - timedelta(minutes=30)
    )
    shop.message(OutboxStatus.sandboxed, channel="email", template=None, at=DAY_B)  # 7
    shop.message(OutboxStatus.suppressed, channel="sms", template="promo", at=DAY_A)  # 9
    shop.message(OutboxStatus.unknown, channel="sms", template=None, at=DAY_B)  # 10
    shop.message(OutboxStatus.pending, channel="whatsapp", template="welcome", at=DAY_B)  # 11
    shop.message(OutboxStatus.held, channel="sms", template="welcome", at=DAY_B)  # 12
    # outside [from, to): paid, but neither its message nor its credits count
    shop.paid_message(
        sent, 5, channel="whatsapp", template="welcome", at=DAY_A - timedelta(seconds=1)
    )
    shop.message(sent, channel="sms", template="welcome", at=DAY_B + timedelta(days=1))


def figures(**given: Any) -> dict[str, Any]:
    counts = ("sent", "delivered", "read", "failed", "suppressed", "sandboxed", "unknown")
    every: dict[str, Any] = dict.fromkeys((*counts, "pending", "credits_charged"), 0)
    every.update(delivery_rate=0.0, read_rate=0.0, revenue="0.00")
    return every | given


# 7 sent (1 2 3 4 5 6 7), of which 2 sandboxed (6 7): rates are over the 5 others.
# 3 delivered (3 4 5), 1 read (5). Credits: 5 + 5 at 0.50, 3 at 2.00; 5 at 0.50 refunded (8).
TOTALS = figures(
    sent=7,
    delivered=3,
    read=1,
    failed=1,
    suppressed=1,
    sandboxed=2,
    unknown=1,
    pending=2,
    delivery_rate=0.6,
    read_rate=0.2,
    credits_charged=13,
    revenue="11.00",
)
PAID_WELCOMES = {"credits_charged": 10, "revenue": "5.00"}
GROUPS = {
    GroupBy.day: [
        {  # 1 3 5 6 9
            "key": "2025-03-10",
            **figures(sent=4, delivered=2, read=1, suppressed=1, sandboxed=1),
            **{"delivery_rate": 0.6667, "read_rate": 0.3333, **PAID_WELCOMES},
        },
        {  # 2 4 7 8 10 11 12
            "key": "2025-03-11",
            **figures(sent=3, delivered=1, failed=1, sandboxed=1, unknown=1, pending=2),
            **{"delivery_rate": 0.5, "credits_charged": 3, "revenue": "6.00"},
        },
    ],
    GroupBy.template: [
        {  # 1 3 5 11 12
            "key": "welcome",
            **figures(sent=3, delivered=2, read=1, pending=2),
            **{"delivery_rate": 0.6667, "read_rate": 0.3333, **PAID_WELCOMES},
        },
        {  # 4 6
            "key": "receipt",
            **figures(sent=2, delivered=1, sandboxed=1, delivery_rate=1.0),
            **{"credits_charged": 3, "revenue": "6.00"},
        },
        {"key": None, **figures(sent=2, sandboxed=1, unknown=1)},  # 2 7 10
        {"key": "promo", **figures(failed=1, suppressed=1)},  # 8 9: refunded, nothing sent
    ],
    GroupBy.channel: [
        {  # 1 3 5 8 11
            "key": "whatsapp",
            **figures(sent=3, delivered=2, read=1, failed=1, pending=1),
            **{"delivery_rate": 0.6667, "read_rate": 0.3333, **PAID_WELCOMES},
        },
        {  # 4 7
            "key": "email",
            **figures(sent=2, delivered=1, sandboxed=1, delivery_rate=1.0),
            **{"credits_charged": 3, "revenue": "6.00"},
        },
        {"key": "sms", **figures(sent=2, sandboxed=1, suppressed=1, unknown=1, pending=1)},
    ],
}
TOP_TEMPLATES = [
    {"template": "welcome", "sent": 3, "delivered": 2, "read": 1, "read_rate": 0.3333},
    {"template": "receipt", "sent": 2, "delivered": 1, "read": 0, "read_rate": 0.0},
]


@pytest.mark.parametrize("group_by", list(GroupBy))
def test_every_figure_matches_a_count_by_hand(api: Api, group_by: GroupBy) -> None:
    two_days_of_messages(api.store)
    response = api.client.get(URL, params={**PERIOD, "group_by": group_by}, headers=api.admin)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "from": "2025-03-10T00:00:00Z",
        "to": "2025-03-12T00:00:00Z",
        "group_by": group_by.value,
        "currency": "EUR",
        "totals": TOTALS,
        "groups": GROUPS[group_by],
        "top_templates": TOP_TEMPLATES,
    }


def test_days_are_utc_days_whatever_zone_the_database_session_is_in(any_db_url: str) -> None:
    tokyo = any_db_url
    if any_db_url.startswith("postgresql"):
        tokyo += ("&" if "?" in any_db_url else "?") + "options=-c%20timezone%3DAsia/Tokyo"
    store = Store.from_url(tokyo)
    try:
        shop = Shop.open(store)
        late = DAY_B - timedelta(minutes=30)
        shop.message(OutboxStatus.sent, channel="sms", template=None, at=late)
        found = store.message_analytics(DAY_A, DAY_B + timedelta(days=1), GroupBy.day)
    finally:
        store.close()
    assert [(group.key, group.figures.sent) for group in found.groups] == [("2025-03-10", 1)]


def test_the_period_is_the_last_30_days_by_default(api: Api) -> None:
    shop = Shop.open(api.store)
    now = datetime.now(UTC)
    for days_ago in (1, 29, 31):
        shop.message(
            OutboxStatus.sent,
            channel="sms",
            template=None,
            at=now - timedelta(days=days_ago),
        )
    response = api.client.get(URL, headers=api.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["totals"]["sent"] == 2
    start, end = (datetime.fromisoformat(body[name]) for name in ("from", "to"))
    assert end - start == timedelta(days=30)
    assert abs(end - now) < timedelta(minutes=1)
    assert [group["sent"] for group in body["groups"]] == [1, 1]


def test_times_with_an_offset_are_answered_in_utc(api: Api) -> None:
    params = {"from": "2025-03-10T02:00:00+02:00", "to": "2025-03-11T00:00:00Z"}
    response = api.client.get(URL, params=params, headers=api.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["from"], body["to"]) == ("2025-03-10T00:00:00Z", "2025-03-11T00:00:00Z")
    assert body["groups"] == [] and body["top_templates"] == []
    assert body["totals"] == figures()


def test_switched_off_analytics_are_a_409_saying_where_to_switch_them_on(api: Api) -> None:
    api.store.save_followup_settings(FollowupSettings(enable_analytics=False))
    response = api.client.get(URL, headers=api.admin)
    assert response.status_code == 409
    assert response.json()["detail"] == (
        "analytics are switched off: enable_analytics is false in /v1/followup-settings"
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2025-03-10T00:00:00"}, "from"),  # no offset
        ({"to": "2025-03-12T00:00:00"}, "to"),
        ({"from": "2025-02-30"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2025-03-12", "to": "2025-03-12"}, "to"),  # from >= to
        ({"from": "2999-01-01"}, "from"),  # after now, the default to
        ({"from": "2024-01-01", "to": "2025-01-02"}, "from"),  # 367 days
        ({"group_by": "week"}, "group_by"),
        ({"to": "0001-01-01T00:00:00Z"}, "to"),  # nothing before it to count
        ({"from": "0001-01-01T00:30:00+01:00"}, "from"),  # before year 1 in UTC
    ],
)
def test_a_bad_query_is_a_422_naming_the_field(
    api: Api, params: dict[str, str], field: str
) -> None:
    response = api.client.get(URL, params=params, headers=api.admin)
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["query", field]


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2024-01-01", "to": "2025-01-01"},  # 366 days
        {"to": "0001-01-02T00:00:00Z"},  # 30 days before it would be before year 1
        {"from": "9999-12-01", "to": "9999-12-31T23:59:59Z"},
    ],
)
def test_every_period_within_the_limits_is_answered(api: Api, params: dict[str, str]) -> None:
    assert api.client.get(URL, params=params, headers=api.admin).status_code == 200


def test_analytics_need_an_admin_token(api: Api) -> None:
    assert api.client.get(URL, headers=api.user).status_code == 403
    assert api.client.get(URL).status_code == 401
