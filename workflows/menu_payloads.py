"""What crosses the MenuConversation workflow's boundary: its input, messages, state, result.

Kept apart from the workflow module and imported through the sandbox's passthrough, so these
classes are created once per worker rather than once per conversation: the data converter
then reuses one pydantic adapter per type instead of building a new one for every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.channels import ChannelName
from domain.menu_definition import MenuDefinition
from domain.status import MenuStatus
from domain.transcripts import TranscriptEntry

DEFAULT_HINT = "Please choose one of the options."
HISTORY_LIMIT = 4000
"""Events after which the conversation continues as new, well before Temporal's limits."""


def workflow_id_for(channel: str, contact_id: int) -> str:
    """Nudge's contact id, never the phone number: ids are listed, searched and shown to
    anyone who can see the namespace, and kept in every history."""
    return f"menu:{channel}:{contact_id}"


def legacy_workflow_id_for(channel: str, address: str) -> str:
    """The id conversations had before ids used the contact: the router still delivers to a
    run under it while one lives (the longest a run lives is its menu's expiry after the last
    message). Nothing starts a run under it."""
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
    opted_out: bool = False
    released: bool = False
    received: int = 0
    """Customer messages the conversation has taken, over all its runs (retries not counted)."""
    sent_steps: dict[str, str] = field(default_factory=dict)
    """The step each recent message was sent from, by its idempotency key: a delivery
    status names the key."""


@dataclass
class MenuConversationInput:
    channel: ChannelName
    address: str
    menu: MenuDefinition | None
    """The menu to start; None routes the queued messages first (a trigger keyword starts
    its menu, anything else gets the fallback auto-reply)."""
    contact_id: int | None = None
    hint: str = DEFAULT_HINT
    history_limit: int = HISTORY_LIMIT
    state: MenuState | None = None
    """A conversation carried on by ``continue_as_new``."""
    leftovers: list[MenuMessage] = field(default_factory=list)
    """Messages that reached the previous run while its conversation was ending: this run
    routes them afresh (a trigger keyword starts the menu it names, else the fallback)."""
    seen: list[str] = field(default_factory=list)
    """Message ids the previous run had already taken (so a provider's retry is dropped)."""
    fallback_text: str = ""
    """The auto-reply for a message that starts no menu; empty sends none."""
    fallback_period: timedelta = timedelta(hours=24)
    """At most one fallback reply per contact within this period."""


@dataclass
class MenuConversationResult:
    status: MenuStatus
    """completed, expired, handed_off or cancelled; for a run that started no menu,
    ``fallback`` (it sent the auto-reply) or ``ignored`` (none was due)."""
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
    """Customer messages not yet fully handled: those queued and the one being answered.
    A view with ``pending == 0`` has settled (its step and hand-off are final for now)."""
    received: int = 0
    """Customer messages the conversation has taken so far (a provider's retry once)."""
