"""Message analytics, added up from the outbox and the credit ledger: a mixin of ``Store``.

There is no counters table to keep in step: every figure is an aggregate of the rows that
say what happened (the outbox row's furthest status, the ledger's captures and refunds), so
a figure can always be checked against them and never drifts from them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Date, case, cast, func, literal_column, select

from domain.credits import EntryKind
from domain.status import OutboxStatus
from store.models import CreditEntry, OutboxMessage

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

SENT = frozenset(
    {OutboxStatus.sent, OutboxStatus.delivered, OutboxStatus.read, OutboxStatus.sandboxed}
)
DELIVERED = frozenset({OutboxStatus.delivered, OutboxStatus.read})
"""A ``read`` message was delivered, whether or not ``delivered`` was ever reported."""
PENDING = frozenset({OutboxStatus.held, OutboxStatus.pending, OutboxStatus.sending})
PRICE_SCALE = 10_000
"""``unit_price`` is ``Numeric(18, 4)``: in ten-thousandths a price is a whole number, so
revenue adds up exactly on SQLite too, whose numbers are floats."""
CENTS = Decimal("0.01")
TOP_TEMPLATES = 5


class GroupBy(StrEnum):
    day = "day"
    """The UTC day the message was sent (or claimed, if it never was)."""
    template = "template"
    channel = "channel"


@dataclass
class Figures:
    """What became of a set of messages, and what they earned."""

    sent: int = 0
    delivered: int = 0
    read: int = 0
    failed: int = 0
    suppressed: int = 0
    sandboxed: int = 0
    unknown: int = 0
    pending: int = 0
    credits_charged: int = 0
    revenue_units: int = 0
    """Revenue in ten-thousandths of the currency (``PRICE_SCALE``)."""

    @property
    def delivery_rate(self) -> float:
        return _rate(self.delivered, self.sent - self.sandboxed)

    @property
    def read_rate(self) -> float:
        return _rate(self.read, self.sent - self.sandboxed)

    @property
    def revenue(self) -> Decimal:
        return (Decimal(self.revenue_units) / PRICE_SCALE).quantize(CENTS)

    def count(self, status: OutboxStatus, messages: int) -> None:
        self.sent += messages if status in SENT else 0
        self.delivered += messages if status in DELIVERED else 0
        self.read += messages if status == OutboxStatus.read else 0
        self.sandboxed += messages if status == OutboxStatus.sandboxed else 0
        self.failed += messages if status == OutboxStatus.failed else 0
        self.suppressed += messages if status == OutboxStatus.suppressed else 0
        self.unknown += messages if status == OutboxStatus.unknown else 0
        self.pending += messages if status in PENDING else 0

    def add(self, other: Figures) -> None:
        for each in fields(self):
            setattr(self, each.name, getattr(self, each.name) + getattr(other, each.name))


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole > 0 else 0.0


@dataclass(frozen=True)
class Group:
    key: str | None
    figures: Figures


@dataclass(frozen=True)
class MessageAnalytics:
    totals: Figures
    groups: list[Group]
    top_templates: list[Group] = field(default_factory=list)
    """Up to ``TOP_TEMPLATES`` templates by messages sent (none sent: not listed)."""


class AnalyticsStore:
    sessions: sessionmaker[Session]

    def message_analytics(
        self, start: datetime, end: datetime, group_by: GroupBy
    ) -> MessageAnalytics:
        """The messages whose ``coalesce(sent_at, created_at)`` is in ``[start, end)``,
        added up per ``group_by`` key; ``groups`` by day in order, else most sent first."""
        with self.sessions() as session:
            groups = _grouped(session, start, end, _key(session, group_by))
            by_template = (
                groups
                if group_by == GroupBy.template
                else _grouped(session, start, end, OutboxMessage.template_name)
            )
        totals = Figures()
        for group in groups:
            totals.add(group.figures)
        if group_by == GroupBy.day:
            groups.sort(key=lambda group: group.key or "")
        else:
            groups.sort(key=_most_sent)
        top = sorted(
            (group for group in by_template if group.key is not None and group.figures.sent),
            key=_most_sent,
        )
        return MessageAnalytics(totals=totals, groups=groups, top_templates=top[:TOP_TEMPLATES])


def _most_sent(group: Group) -> tuple[int, bool, str]:
    return (-group.figures.sent, group.key is None, group.key or "")


def _moment() -> Any:
    return func.coalesce(OutboxMessage.sent_at, OutboxMessage.created_at)


def _key(session: Session, group_by: GroupBy) -> Any:
    if group_by == GroupBy.template:
        return OutboxMessage.template_name
    if group_by == GroupBy.channel:
        return OutboxMessage.channel
    if session.get_bind().dialect.name == "postgresql":
        # The session's TimeZone setting must not move a message to another day. A literal,
        # not a bound parameter: GROUP BY must repeat the SELECT's expression exactly.
        return cast(_moment().op("AT TIME ZONE")(literal_column("'UTC'")), Date)
    return func.date(_moment())  # SQLite keeps UTC as text, which date() reads


def _grouped(session: Session, start: datetime, end: datetime, key: Any) -> list[Group]:
    """One row per key and status, the period's credits joined on by message key."""
    in_period = (_moment() >= start) & (_moment() < end)
    credits = _credits_per_message(select(OutboxMessage.idempotency_key).where(in_period))
    rows = session.execute(
        select(
            key.label("key"),
            OutboxMessage.status,
            func.count(),
            func.coalesce(func.sum(credits.c.credits), 0),
            cast(func.coalesce(func.sum(credits.c.revenue_units), 0), BigInteger),
        )
        .select_from(OutboxMessage)
        .outerjoin(credits, credits.c.message_key == OutboxMessage.idempotency_key)
        .where(in_period)
        .group_by(key, OutboxMessage.status)
    )
    return _fold(rows)


def _credits_per_message(keys: Any) -> Any:
    """Per message: credits captured less refunds, and their value at each capture's price
    (a refund gives back what its capture took, at that capture's price)."""
    capture = CreditEntry.kind == EntryKind.capture.value
    refund = (
        (CreditEntry.kind == EntryKind.adjust.value)
        & CreditEntry.schedule_id.is_not(None)
        & (CreditEntry.amount > 0)
    )
    price = func.round(CreditEntry.unit_price * PRICE_SCALE)
    captured = func.sum(case((capture, CreditEntry.amount), else_=0))
    refunded = func.sum(case((refund, CreditEntry.amount), else_=0))
    captured_value = func.sum(case((capture, CreditEntry.amount * price), else_=0))
    capture_price = func.coalesce(func.max(case((capture, price))), 0)
    return (
        select(
            CreditEntry.message_key,
            (captured - refunded).label("credits"),
            (captured_value - refunded * capture_price).label("revenue_units"),
        )
        .where(CreditEntry.message_key.in_(keys), capture | refund)
        .group_by(CreditEntry.message_key)
        .subquery()
    )


def _fold(rows: Iterable[Any]) -> list[Group]:
    found: dict[str | None, Figures] = {}
    for key, status, messages, credits, units in rows:
        name = key.isoformat() if isinstance(key, date) else key
        figures = found.setdefault(name, Figures())
        figures.count(OutboxStatus(status), int(messages))
        figures.credits_charged += int(credits)
        figures.revenue_units += int(units)
    return [Group(key, figures) for key, figures in found.items()]
