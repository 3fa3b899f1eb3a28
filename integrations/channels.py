"""What every outbound channel speaks: one message shape in, one receipt out.

Each provider client in ``integrations/`` implements ``Channel.send``. The delivery activity
(policy -> outbox -> channel) is the only caller; it never needs to know which provider it
talks to beyond the channel name.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from integrations.errors import NotFound, Rejected


class ChannelName(StrEnum):
    email = "email"
    sms = "sms"  # Twilio
    whatsapp = "whatsapp"  # Meta Cloud API
    whatsapp_twilio = "whatsapp_twilio"  # WhatsApp through Twilio
    push = "push"  # FCM
    support_board = "support_board"  # Instagram / Facebook / dashboard through Support Board
    reamaze = "reamaze"


class MessageClass(StrEnum):
    transactional = "transactional"
    marketing = "marketing"


@dataclass(frozen=True)
class Template:
    """A pre-approved template: WhatsApp Cloud (``name`` + ``language`` + ``components``) or
    Twilio Content (``content_sid`` + ``variables``)."""

    name: str = ""
    language: str = "en"
    components: list[dict[str, Any]] = field(default_factory=list)
    content_sid: str = ""
    variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboundMessage:
    channel: ChannelName
    to: str
    """E-mail address, E.164 phone number, FCM device token, Support Board conversation id,
    or helpdesk conversation slug, by channel."""
    idempotency_key: str
    text: str = ""
    subject: str = ""
    html: str = ""
    template: Template | None = None
    """Sent instead of ``text`` when set (WhatsApp outside the 24-hour window)."""
    interactive: dict[str, Any] | None = None
    """A WhatsApp Cloud API ``interactive`` object (button or list), sent as is."""
    data: dict[str, str] = field(default_factory=dict)
    """FCM ``data`` payload: every value a string, as FCM requires."""
    message_class: MessageClass = MessageClass.transactional
    unsubscribe_url: str = ""
    """Marketing e-mail: the signed one-click unsubscribe URL (List-Unsubscribe headers)."""
    status_callback: str = ""
    """Twilio: where delivery statuses are posted (our webhook)."""


@dataclass(frozen=True)
class Receipt:
    provider_message_id: str
    status: str = "sent"
    """The provider's own first status (``queued``, ``accepted``, ``sent`` ...)."""


class RecipientOptedOut(Rejected):
    """The recipient told the provider to stop (Twilio 21610): suppress, never retry."""


class OutsideWindow(Rejected):
    """WhatsApp refused free-form text outside the 24-hour window (Cloud 131047, Twilio 63016)."""


class Unregistered(NotFound):
    """The push token is no longer valid (FCM ``UNREGISTERED``): forget it."""


class Channel(Protocol):
    name: ChannelName

    async def send(self, message: OutboundMessage) -> Receipt: ...

    async def aclose(self) -> None: ...
