"""The channels a message can leave by, the two classes of message, and approved templates."""

# No ``from __future__ import annotations``: these types cross the workflow boundary and
# pydantic resolves their annotations inside the workflow sandbox.

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ChannelName(StrEnum):
    email = "email"  # SMTP
    sms = "sms"  # Twilio
    whatsapp = "whatsapp"  # Meta Cloud API
    whatsapp_twilio = "whatsapp_twilio"  # WhatsApp through Twilio
    push = "push"  # FCM
    support_board = "support_board"  # Instagram / Facebook / dashboard through Support Board
    reamaze = "reamaze"  # a reply in a Re:amaze helpdesk conversation


class MessageClass(StrEnum):
    """Marketing messages obey quiet hours, the frequency cap and marketing unsubscribes;
    transactional ones (a reply the customer asked for, a receipt) only opt-outs."""

    transactional = "transactional"
    marketing = "marketing"


WHATSAPP_CHANNELS = frozenset({ChannelName.whatsapp, ChannelName.whatsapp_twilio})
"""WhatsApp through Twilio and through Meta reach the same WhatsApp number of the contact."""
REPORTING_CHANNELS = frozenset({ChannelName.sms, ChannelName.whatsapp_twilio, ChannelName.whatsapp})
"""Channels whose provider reports delivery statuses later (Twilio's callbacks, WhatsApp's
``statuses``); a message on the others has said all it will once it is sent."""


@dataclass(frozen=True)
class Template:
    """A pre-approved template: WhatsApp Cloud (``name`` + ``language`` + ``components``) or
    Twilio Content (``content_sid`` + ``variables``)."""

    name: str = ""
    language: str = "en"
    components: list[dict[str, Any]] = field(default_factory=list)
    content_sid: str = ""
    variables: dict[str, str] = field(default_factory=dict)
