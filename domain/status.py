"""The statuses an operator reads: of an outbox row, of a send, of a follow-up, of a menu session.

Each is an enum whose values are what the API returns and the Web UI's ``NudgeStatus`` shows.
"""

# No ``from __future__ import annotations``: these types cross the workflow boundary and
# pydantic resolves their annotations inside the workflow sandbox.

from enum import StrEnum


class OutboxStatus(StrEnum):
    """One outbound message, from the moment it is claimed to the provider's last word."""

    held = "held"
    """Quiet hours or the frequency cap said "not before ``not_before``": the sending
    workflow waits, and its next attempt claims this same row (a held row does not count
    toward the frequency cap)."""
    pending = "pending"
    sending = "sending"
    sent = "sent"
    delivered = "delivered"
    read = "read"
    failed = "failed"
    suppressed = "suppressed"
    sandboxed = "sandboxed"
    unknown = "unknown"
    """The worker stopped while the provider call was in flight and the provider cannot be
    asked: reported rather than risk sending twice."""


FINAL_OUTBOX = frozenset(
    {
        OutboxStatus.sent,
        OutboxStatus.delivered,
        OutboxStatus.read,
        OutboxStatus.failed,
        OutboxStatus.suppressed,
        OutboxStatus.sandboxed,
        OutboxStatus.unknown,
    }
)
"""Past these, a send is never attempted again."""

STATUS_RANK: dict[str, int] = {
    OutboxStatus.held: -1,
    OutboxStatus.pending: 0,
    OutboxStatus.sending: 1,
    OutboxStatus.unknown: 1,
    OutboxStatus.sandboxed: 2,
    OutboxStatus.sent: 2,
    OutboxStatus.delivered: 3,
    OutboxStatus.failed: 3,
    OutboxStatus.read: 4,
}
"""Statuses arrive out of order and may skip ``delivered``: the furthest one wins. ``held``
ranks below everything: the claim that ends a hold moves the row on to ``pending``."""

DELIVERY_FINAL = frozenset({OutboxStatus.delivered, OutboxStatus.failed, OutboxStatus.read})
"""The provider's final word about a sent message."""


def furthest(statuses: list[str]) -> str:
    """The status furthest along ``STATUS_RANK`` (the first of equals); unknown names rank 0."""
    return max(statuses, key=lambda status: STATUS_RANK.get(status, 0))


class SendStatus(StrEnum):
    """What the send path answers a workflow (``DeliveryOutcome.status``)."""

    sent = "sent"
    delivered = "delivered"
    read = "read"
    sandboxed = "sandboxed"
    """No credentials for the channel: recorded and logged, nothing left the machine."""
    suppressed = "suppressed"
    outside_whatsapp_window = "outside_whatsapp_window"
    failed = "failed"
    unknown = "unknown"
    wait = "wait"
    """Not now (quiet hours, the frequency cap): ask again at ``not_before``."""


SENT_STATUSES = frozenset(
    {SendStatus.sent, SendStatus.delivered, SendStatus.read, SendStatus.sandboxed}
)
"""The message left (or, sandboxed, would have left): the step it belongs to is done."""


class FollowUpStatus(StrEnum):
    """How a helpdesk follow-up sequence ended."""

    completed = "completed"
    purchase_detected = "purchase_detected"
    tag_removed = "tag_removed"
    conversation_gone = "conversation_gone"
    suppressed = "suppressed"
    """The customer unsubscribed from marketing messages (or opted out everywhere)."""
    cancelled = "cancelled"
    failed = "failed"


class MenuStatus(StrEnum):
    """A menu session's status; ``fallback`` and ``ignored`` end a run that started no menu."""

    active = "active"
    completed = "completed"
    expired = "expired"
    handed_off = "handed_off"
    cancelled = "cancelled"
    moved = "moved"
    """The customer went on to another menu (a session of its own)."""
    fallback = "fallback"
    """No menu was asked for: the run sent the fallback auto-reply."""
    ignored = "ignored"
    """No menu was asked for and no fallback reply was due."""


SESSION_STATUSES = (
    MenuStatus.active,
    MenuStatus.completed,
    MenuStatus.expired,
    MenuStatus.handed_off,
    MenuStatus.cancelled,
    MenuStatus.moved,
)
"""The statuses a stored menu session can have."""
