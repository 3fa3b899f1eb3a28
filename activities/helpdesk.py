"""Helpdesk activities: find tagged conversations, read one, clean up, record the outcome.

One class with the Re:amaze client and the store injected (built once in ``worker.py``), so
tests build the same class against a fake Re:amaze server and a real database. Replies are
not posted here: they take the one send path (``DeliveryActivities.deliver``) on the
``reamaze`` channel, like every other message.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.failures import as_application_error
from activities.writer import TranscriptLine
from domain.channels import ChannelName
from integrations.errors import NotFound, ProviderError
from integrations.reamaze import ReamazeClient, ReamazeMessage
from store.repo import FollowUpRecord, Store

log = logging.getLogger(__name__)

HELPDESK = ChannelName.reamaze.value
ORIGIN_PREFIX = "nudge:"
"""Every message we post carries an ``origin_id`` starting with this: it is how we tell our
own follow-ups from the staff's, and how a retried send finds the message it already posted."""


@dataclass
class FindTaggedInput:
    tag: str


@dataclass
class TaggedConversation:
    slug: str
    subject: str = ""


@dataclass
class ReadConversationInput:
    conversation: str
    trigger_tag: str


@dataclass
class ConversationSnapshot:
    tag_present: bool
    purchase_seen: bool
    purchase_evidence: str | None
    transcript: list[TranscriptLine] = field(default_factory=list)
    contact_id: int | None = None


@dataclass
class RemoveTagInput:
    conversation: str
    tag: str


@dataclass
class StepOutcome:
    step: int
    due_at: datetime
    fired_at: datetime | None = None
    sent_at: datetime | None = None
    send_status: str | None = None
    fallback_used: bool = False
    fallback_reason: str | None = None
    outbox_key: str | None = None


@dataclass
class RecordOutcomeInput:
    workflow_id: str
    run_id: str
    conversation: str
    status: str
    started_at: datetime
    finished_at: datetime
    steps: list[StepOutcome] = field(default_factory=list)
    tag_removed: bool = False
    failure_reason: str | None = None
    contact_id: int | None = None


def message_role(message: ReamazeMessage, login_email: str) -> str:
    """``nudge`` (ours), ``staff``, ``system`` (integrations, bots) or ``customer``."""
    if (message.origin_id or "").startswith(ORIGIN_PREFIX):
        return "nudge"
    user = message.user
    email = (user.email or "").lower() if user else ""
    if user is None or not email:
        return "system"
    if user.bot:
        return "system"
    if user.staff or email == login_email.lower():
        return "staff"
    return "customer"


def find_purchase(
    messages: list[ReamazeMessage], roles: list[str], indicators: list[str]
) -> str | None:
    """The first customer or system message that shows a purchase (never staff or ours)."""
    lowered = [i.lower() for i in indicators if i.strip()]
    for message, role in zip(messages, roles, strict=True):
        if role not in ("customer", "system"):
            continue
        body = message.body.lower()
        for indicator in lowered:
            if indicator in body:
                return message.body[:200]
    return None


class HelpdeskActivities:
    def __init__(
        self,
        client: ReamazeClient | None,
        store: Store,
        *,
        login_email: str = "",
        purchase_indicators: list[str],
        history_messages: int = 15,
    ) -> None:
        """``login_email``: the API user, whose posts are the staff's; ``history_messages``:
        how many of the latest messages the writer sees."""
        self.client = client
        self.store = store
        self.login_email = login_email
        self.purchase_indicators = purchase_indicators
        self.history_messages = history_messages

    def _require_client(self) -> ReamazeClient:
        if self.client is None:
            raise ApplicationError(
                "Re:amaze is not configured (NUDGE_REAMAZE__BRAND, __LOGIN_EMAIL, __API_TOKEN)",
                type="NotConfigured",
                non_retryable=True,
            )
        return self.client

    @activity.defn
    async def find_tagged_conversations(self, request: FindTaggedInput) -> list[TaggedConversation]:
        """Every conversation carrying the tag, minus leftovers of finished sequences.

        A finished sequence whose tag we could not remove (or were told not to remove) leaves
        the tag in place; that tag is not a new request from an agent, so it must not start
        a second sequence. A tag we did remove and an agent added again is a new request.
        """
        client = self._require_client()
        try:
            conversations = await client.list_conversations(tag=request.tag)
        except ProviderError as error:
            raise as_application_error(error) from error
        slugs = [c.slug for c in conversations]
        latest = await asyncio.to_thread(self.store.latest_followups, HELPDESK, slugs)
        return [
            TaggedConversation(slug=c.slug, subject=c.subject or "")
            for c in conversations
            if c.slug not in latest or latest[c.slug].tag_removed
        ]

    @activity.defn
    async def read_conversation(self, request: ReadConversationInput) -> ConversationSnapshot:
        client = self._require_client()
        try:
            conversation = await client.get_conversation(request.conversation)
            messages = await client.list_messages(request.conversation)
        except NotFound as error:
            # An ending the workflow expects (``conversation_gone``): BENIGN keeps the worker
            # from logging it as a failure with a traceback.
            raise ApplicationError(
                str(error),
                type="ConversationGone",
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,
            ) from error
        except ProviderError as error:
            raise as_application_error(error) from error
        roles = [message_role(m, self.login_email) for m in messages]
        evidence = find_purchase(messages, roles, self.purchase_indicators)
        tag = request.trigger_tag.lower()
        contact_id = None
        author = conversation.author
        if author is not None and author.email:
            contact_id = await asyncio.to_thread(
                self.store.upsert_contact,
                HELPDESK,
                author.email.lower(),
                name=author.name,
                email=author.email,
            )
        recent = list(zip(messages, roles, strict=True))[-self.history_messages :]
        return ConversationSnapshot(
            tag_present=any(t.lower() == tag for t in conversation.tag_list),
            purchase_seen=evidence is not None,
            purchase_evidence=evidence,
            transcript=[TranscriptLine(role=r, text=m.body) for m, r in recent if m.body.strip()],
            contact_id=contact_id,
        )

    @activity.defn
    async def remove_trigger_tag(self, request: RemoveTagInput) -> bool:
        """True when the tag is gone afterwards (also when an agent had removed it already)."""
        client = self._require_client()
        try:
            conversation = await client.get_conversation(request.conversation)
            tag = request.tag.lower()
            kept = [t for t in conversation.tag_list if t.lower() != tag]
            if len(kept) != len(conversation.tag_list):
                await client.update_tags(request.conversation, kept)
        except NotFound:
            return False
        except ProviderError as error:
            raise as_application_error(error) from error
        return True

    @activity.defn
    async def record_outcome(self, request: RecordOutcomeInput) -> int:
        """Write the outcome row; a send the workflow never heard back about (it was
        cancelled mid-call) is filled in from the outbox, which knows."""
        steps = []
        for step in request.steps:
            if step.outbox_key and step.sent_at is None:
                row = await asyncio.to_thread(self.store.get_outbox, step.outbox_key)
                if row is not None:
                    step.sent_at, step.send_status = row.sent_at, row.status
            steps.append(
                {
                    "step": step.step,
                    "due_at": step.due_at.isoformat(),
                    "fired_at": step.fired_at.isoformat() if step.fired_at else None,
                    "sent_at": step.sent_at.isoformat() if step.sent_at else None,
                    "send_status": step.send_status,
                    "fallback_used": step.fallback_used,
                    "fallback_reason": step.fallback_reason,
                }
            )
        record = FollowUpRecord(
            workflow_id=request.workflow_id,
            run_id=request.run_id,
            helpdesk=HELPDESK,
            conversation=request.conversation,
            status=request.status,
            started_at=request.started_at,
            finished_at=request.finished_at,
            steps=steps,
            fallback_used=any(s.fallback_used for s in request.steps),
            tag_removed=request.tag_removed,
            failure_reason=request.failure_reason,
            contact_id=request.contact_id,
        )
        return await asyncio.to_thread(self.store.record_followup, record)
