"""What every outbound channel speaks: one message shape in, one receipt out.

Each provider client in ``integrations/`` implements ``Channel.send``; one that can find a
message it was sent by its idempotency key also implements ``Reconcilable``. The delivery
activity (policy -> outbox -> channel) is the only caller; it never needs to know which
provider it talks to beyond the channel name.
"""

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from domain.channels import ChannelName, MessageClass, Template
from integrations.errors import NotFound, Rejected


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


@runtime_checkable
class Reconcilable(Protocol):
    """A channel whose provider can say whether a message with this idempotency key arrived
    (Re:amaze keeps our ``origin_id``). The send path asks it about a send whose answer was
    lost, instead of reporting it ``unknown``."""

    async def find_sent(self, message: OutboundMessage) -> Receipt | None:
        """The receipt of the message already at the provider, or None when it is not there."""
        ...
