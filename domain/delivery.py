"""What crosses into and out of the one send path (policy -> outbox -> channel).

A workflow hands ``deliver`` a ``DeliverRequest`` and gets a ``DeliveryOutcome``; a provider's
later word about the message reaches the workflow as a ``DeliveryStatus`` signal.
"""

# No ``from __future__ import annotations``: these types cross the workflow boundary and
# pydantic resolves their annotations inside the workflow sandbox.

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.channels import ChannelName, MessageClass, Template
from domain.policy import Verdict
from domain.status import SendStatus


@dataclass
class DeliverRequest:
    idempotency_key: str
    """From the workflow id and the step, never the run id: a reset must not send again."""
    workflow_id: str
    channel: ChannelName
    to: str
    """E-mail address, E.164 phone number, FCM device token, Support Board conversation id,
    or Re:amaze conversation slug, by channel."""
    text: str = ""
    subject: str = ""
    html: str = ""
    template: Template | None = None
    interactive: dict[str, Any] | None = None
    data: dict[str, str] = field(default_factory=dict)
    message_class: MessageClass = MessageClass.transactional
    contact_id: int | None = None
    as_of: datetime | None = None
    """The workflow's clock when it asked (``workflow.now()``): policy windows are judged by
    the same clock the workflow sleeps by, moved on to the attempt's own start when a retry
    runs later. None means the activity's own clock."""
    template_name: str | None = None
    """The template the text was rendered from (``/v1/templates``), for analytics."""


@dataclass
class ContactPolicyCheck:
    """May this contact get a message of this class now? Asked before a message is written
    (an LLM call is not made for a message that will be held or refused)."""

    contact_id: int | None
    message_class: MessageClass = MessageClass.marketing
    as_of: datetime | None = None
    """The workflow's clock, as for ``DeliverRequest.as_of``."""


@dataclass
class PolicyAnswer:
    """The contact policy's answer to a ``ContactPolicyCheck``."""

    status: Verdict
    not_before: datetime | None = None
    """With ``wait``: when to ask again."""
    reason: str = ""
    timezone: str = ""
    """With ``wait``: the zone the hold was judged in (``domain.policy.held_status``)."""


@dataclass
class DeliveryOutcome:
    status: SendStatus
    not_before: datetime | None = None
    """With ``wait``: when to ask again."""
    provider_message_id: str | None = None
    reason: str = ""
    sent_at: datetime | None = None
    """When the outbox recorded the message as sent (or sandboxed)."""
    gone: bool = False
    """The recipient no longer exists at the provider (a deleted helpdesk conversation, an
    unregistered device): nothing sent there will ever arrive."""
    timezone: str = ""
    """With ``wait``: the zone the hold was judged in (``domain.policy.held_status``)."""
    contact_id: int | None = None
    """With ``wait``: the contact the address belongs to, so a run started with only an
    address can say whose message it holds (the ``ContactId`` search attribute)."""


@dataclass
class DeliveryStatus:
    """A provider's report about a sent message, signalled to the workflow that sent it."""

    idempotency_key: str
    status: str
