"""Helpdesk activities: read a conversation, post a follow-up through the outbox, clean up.

One class with the Re:amaze client and the store injected (built once in ``worker.py``), so
tests build the same class against a fake Re:amaze server and a real database.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.failures import as_application_error
from activities.heartbeat import shielded_with_heartbeat
from activities.writer import TranscriptLine
from integrations.errors import NotFound, ProviderError, Rejected
from integrations.reamaze import ReamazeClient, ReamazeMessage
from settings import FollowupSettings, ReamazeSettings
from store.repo import FINAL_OUTBOX, FollowUpRecord, OutboxStatus, Store

log = logging.getLogger(__name__)

HELPDESK = "reamaze"
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
class PostReplyInput:
    conversation: str
    body: str
    idempotency_key: str
    workflow_id: str
    contact_id: int | None = None


@dataclass
class PostReplyResult:
    status: str
    sent_at: datetime | None
    already_done: bool = False


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
        reamaze: ReamazeSettings,
        followup: FollowupSettings,
    ) -> None:
        self.client = client
        self.store = store
        self.reamaze = reamaze
        self.followup = followup

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
            raise ApplicationError(
                str(error), type="ConversationGone", non_retryable=True
            ) from error
        except ProviderError as error:
            raise as_application_error(error) from error
        roles = [message_role(m, self.reamaze.login_email) for m in messages]
        evidence = find_purchase(messages, roles, self.followup.purchase_indicators)
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
        recent = list(zip(messages, roles, strict=True))[-self.followup.history_messages :]
        return ConversationSnapshot(
            tag_present=any(t.lower() == tag for t in conversation.tag_list),
            purchase_seen=evidence is not None,
            purchase_evidence=evidence,
            transcript=[TranscriptLine(role=r, text=m.body) for m, r in recent if m.body.strip()],
            contact_id=contact_id,
        )

    @activity.defn
    async def post_reply(self, request: PostReplyInput) -> PostReplyResult:
        """Post once, whatever happens: the outbox row decides, the provider's copy confirms."""
        row = await asyncio.to_thread(
            self.store.claim_outbox,
            request.idempotency_key,
            workflow_id=request.workflow_id,
            channel=HELPDESK,
            recipient=request.conversation,
            body=request.body,
            message_class="marketing",
            contact_id=request.contact_id,
        )
        if row.status == OutboxStatus.pending and self.client is not None:
            taken = await asyncio.to_thread(
                self.store.take_outbox, request.idempotency_key, OutboxStatus.sending
            )
            if taken is None:  # a concurrent attempt took it first: act on it as it stands
                stored = await asyncio.to_thread(self.store.get_outbox, request.idempotency_key)
                row = stored or row
        if row.status in FINAL_OUTBOX:
            if row.status == OutboxStatus.failed:
                raise ApplicationError(
                    row.error or "send failed", type="Rejected", non_retryable=True
                )
            return PostReplyResult(status=row.status, sent_at=row.sent_at, already_done=True)
        if self.client is None:
            log.info("sandbox: follow-up for %s not sent:\n%s", request.conversation, request.body)
            row = await asyncio.to_thread(
                self.store.mark_outbox, request.idempotency_key, OutboxStatus.sandboxed
            )
            return PostReplyResult(status=row.status, sent_at=row.sent_at)
        client = self.client
        try:
            if row.status == OutboxStatus.sending:
                # An earlier attempt died after the request left (or is still waiting for
                # the answer): did Re:amaze accept it? If not, posting again with the same
                # origin_id is safe - Re:amaze keeps one message per origin_id.
                found = await client.find_message_by_origin_id(
                    request.conversation, request.idempotency_key
                )
                if found is not None:
                    row = await asyncio.to_thread(
                        self.store.mark_outbox,
                        request.idempotency_key,
                        OutboxStatus.sent,
                        provider_message_id=found.origin_id,
                    )
                    return PostReplyResult(
                        status=row.status, sent_at=row.sent_at, already_done=True
                    )
            posted = await shielded_with_heartbeat(
                client.post_message(
                    request.conversation, request.body, origin_id=request.idempotency_key
                )
            )
        except NotFound as error:
            await asyncio.to_thread(
                self.store.mark_outbox,
                request.idempotency_key,
                OutboxStatus.failed,
                error="conversation gone",
            )
            raise ApplicationError(
                str(error), type="ConversationGone", non_retryable=True
            ) from error
        except Rejected as error:
            await asyncio.to_thread(
                self.store.mark_outbox,
                request.idempotency_key,
                OutboxStatus.failed,
                error=str(error),
            )
            raise as_application_error(error) from error
        except ProviderError as error:
            # Left "sending": the next attempt first checks whether Re:amaze has it.
            raise as_application_error(error) from error
        row = await asyncio.to_thread(
            self.store.mark_outbox,
            request.idempotency_key,
            OutboxStatus.sent,
            provider_message_id=posted.origin_id or request.idempotency_key,
        )
        return PostReplyResult(status=row.status, sent_at=row.sent_at)

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
