"""One line of a conversation's transcript, as the workflow keeps it and operators read it."""

# No ``from __future__ import annotations``: these types cross the workflow boundary and
# pydantic resolves their annotations inside the workflow sandbox.

from dataclasses import dataclass
from datetime import datetime


@dataclass
class TranscriptEntry:
    at: datetime
    direction: str
    """``in`` (from the customer), ``out`` (sent to them) or ``status`` (what the provider
    reported about a message sent at ``step``, e.g. that it failed)."""
    text: str
    step: str
    """Where the conversation was (a menu's step name)."""
