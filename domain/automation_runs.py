"""Runs of automation rules: what one run is for, how it ended, and the names that make each
run happen once.

A run is for one rule, one contact and one occurrence: an event (``event-42``), the n-th
message of a quiet spell (``quiet-1767225600-1``), a booking at one start time
(``booking-7-1767261600``), a test by hand (``test-<hex>``). The occurrence is the end of the
run's workflow id, so a retried event, a watch that wakes twice or a replayed reminder
finds the run already there instead of running it again.
"""

# No ``from __future__ import annotations``: these types cross the workflow boundary and
# pydantic resolves their annotations inside the workflow sandbox.

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from domain.channels import ChannelName, MessageClass, Template


class RunStatus(StrEnum):
    waiting = "waiting"
    """Scheduled: its workflow sleeps until ``due_at``."""
    running = "running"
    """Due, and doing its action (a send held by quiet hours stays here)."""
    sent = "sent"
    """Its message went out (or to the sandbox)."""
    done = "done"
    """Its contact update or webhook call was made."""
    dry_run = "dry_run"
    """A test that rendered the message and asked the policy, sending nothing."""
    skipped = "skipped"
    """Not run, for the stated reason: the rule was disabled or deleted, its conditions no
    longer hold, the contact has no address on the rule's channel."""
    suppressed = "suppressed"
    """The send path refused it: the contact opted out, or is outside WhatsApp's window."""
    too_late = "too_late"
    """A booking reminder whose moment had passed when the booking was made or moved."""
    cancelled = "cancelled"
    """Ended by an operator (the API, the Web UI) before it ran."""
    failed = "failed"
    """It could not do what the rule says; the reason says why, and its workflow is red."""


FINAL_RUN = frozenset(RunStatus) - {RunStatus.waiting, RunStatus.running}
KIND = "automation_run"
"""``NudgeKind`` of a run's workflow."""


def rule_prefix(rule_id: int) -> str:
    """What the workflow id of every run of the rule begins with."""
    return f"automation:{rule_id}:"


def workflow_id_for(rule_id: int, contact_id: int, occurrence: str) -> str:
    return f"{rule_prefix(rule_id)}{contact_id}:{occurrence}"


def event_occurrence(event_id: int) -> str:
    return f"event-{event_id}"


QUIET = "quiet-"


def is_quiet_run(workflow_id: str) -> bool:
    """A ``no_contact_days`` rule's message: it does not end the quiet spell it nudges."""
    return workflow_id.startswith("automation:") and f":{QUIET}" in workflow_id


def quiet_occurrence(spell_start: datetime, number: int) -> str:
    """The ``number``-th message (from 1) of the quiet spell that began at ``spell_start``."""
    return f"{QUIET}{int(spell_start.timestamp())}-{number}"


def booking_occurrence(booking_id: int, starts_at: datetime) -> str:
    """A reminder of the booking as it starts at ``starts_at``: moved, it is reminded again."""
    return f"booking-{booking_id}-{int(starts_at.timestamp())}"


@dataclass
class RunRequest:
    """What starts an ``AutomationRun``."""

    rule_id: int
    contact_id: int
    occurrence: str
    due_at: datetime
    """When it acts: the event's time plus the rule's delay, a quiet spell's end, a booking
    minus the rule's lead time."""
    trigger: str
    event_data: dict[str, Any] = field(default_factory=dict)
    """The event's data, which conditions (``event.x``) and templates read."""
    event_id: int | None = None
    dry_run: bool = False
    """Render and ask the policy, send nothing (``POST /v1/automations/{id}/test``)."""
    now: bool = False
    """Act at once, whatever the delay (a test that sends, a trigger by hand)."""


@dataclass
class MessageDraft:
    """The message a run sends, as the rule renders it for this contact."""

    channel: ChannelName
    to: str
    message_class: MessageClass
    text: str = ""
    subject: str = ""
    template: Template | None = None
    """The approved template that says the same, for outside WhatsApp's window."""
    needs_writing: bool = False
    """The rule has no text: the LLM writes one from ``prompt`` (``fallback`` if it cannot)."""
    prompt: str = ""
    fallback: str = ""


@dataclass
class WebhookCall:
    """A webhook rule's call. The signing secret is not here: it is read from the rule by
    the activity that signs, so it never enters a workflow's history."""

    rule_id: int
    url: str
    body: dict[str, Any]
    delivery_id: str
    """The same on every retry of one call (``X-Nudge-Delivery``): the receiver drops repeats."""


@dataclass
class RunPlan:
    """What a due run does, decided from the rule and the contact as they are now."""

    go: bool
    status: RunStatus = RunStatus.running
    """When not ``go``: how it ends (``skipped`` or ``failed``)."""
    reason: str = ""
    action: str = "send"
    draft: MessageDraft | None = None
    contact_update: dict[str, Any] | None = None
    """``update_contact``: the rule's ``set``."""
    webhook: WebhookCall | None = None
    rule_name: str = ""


@dataclass
class RunOutcome:
    status: RunStatus
    reason: str = ""
    channel: str | None = None
    text: str = ""
    subject: str = ""
    verdict: str = ""
    """A dry run's policy answer: ``send``, ``wait`` (until when, why), ``suppressed``."""
    sent_at: datetime | None = None
    writer: str = ""
    """Who wrote the text: ``template``, ``rule``, the LLM's name, or ``fallback``."""


@dataclass
class RunRecord:
    """A run's row as its workflow writes it (``automation_runs``), at start and at the end."""

    workflow_id: str
    rule_id: int
    contact_id: int
    occurrence: str
    due_at: datetime
    status: RunStatus
    event_id: int | None = None
    channel: str | None = None
    message: str | None = None
    reason: str | None = None
    finished_at: datetime | None = None


@dataclass
class QuietRule:
    """A ``no_contact_days`` rule as a contact's watch times it."""

    rule_id: int
    after: timedelta
    repeat: int


@dataclass
class WatchPlan:
    """A contact's watch, read from the store: which quiet rules apply to the contact now,
    and when anyone last wrote to or messaged them."""

    exists: bool
    rules: list[QuietRule] = field(default_factory=list)
    last_contact: datetime | None = None


@dataclass
class ReminderRule:
    """A ``booking_reminder_hours`` rule: how long before the booking it reminds."""

    rule_id: int
    before: timedelta


class BookingStatus(StrEnum):
    booked = "booked"
    cancelled = "cancelled"
    completed = "completed"


@dataclass
class BookingPlan:
    """A booking's reminder, read from the store."""

    exists: bool
    contact_id: int = 0
    status: BookingStatus = BookingStatus.booked
    starts_at: datetime | None = None
    rules: list[ReminderRule] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    """What the reminder's template may say: ``service``, ``location``, ``starts_at``..."""
