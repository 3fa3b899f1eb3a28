"""What crosses the MenuConversation workflow's boundary: its input, messages, state, result.

Kept apart from the workflow module and imported through the sandbox's passthrough, so these
classes are created once per worker rather than once per conversation: the data converter
then reuses one pydantic adapter per type instead of building a new one for every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from activities.menus import TranscriptEntry
from integrations.channels import ChannelName
from workflows.menu_definition import MenuDefinition

DEFAULT_HINT = "Please choose one of the options."
HISTORY_LIMIT = 4000
"""Events after which the conversation continues as new, well before Temporal's limits."""


def workflow_id_for(channel: str, address: str) -> str:
    return f"menu:{channel}:{address}"


@dataclass
class MenuMessage:
    """One customer message, as the webhook hands it over."""

    provider_message_id: str
    text: str = ""
    reply_id: str | None = None
    """The id of the button or list row the customer tapped."""
    received_at: datetime | None = None


@dataclass
class MenuState:
    """Everything a conversation needs to go on; carried across ``continue_as_new``."""

    session_id: str
    menu: MenuDefinition
    step: str
    last_activity: datetime
    context: dict[str, str] = field(default_factory=dict)
    transcript: list[TranscriptEntry] = field(default_factory=list)
    sent: int = 0
    sessions: int = 1
    started: bool = False
    handed_off: bool = False
    pending: list[MenuMessage] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)


@dataclass
class MenuConversationInput:
    channel: ChannelName
    address: str
    menu: MenuDefinition
    contact_id: int | None = None
    hint: str = DEFAULT_HINT
    history_limit: int = HISTORY_LIMIT
    state: MenuState | None = None


@dataclass
class MenuConversationResult:
    status: str
    """completed, expired, handed_off or cancelled."""
    menu: str
    last_step: str
    reason: str = ""
    context: dict[str, str] = field(default_factory=dict)
    ended_at: datetime | None = None


@dataclass
class MenuView:
    menu: str
    step: str
    handed_off: bool
    context: dict[str, str]
    pending: int
