"""What a running workflow will do next, when, and why: the answer of every Nudge workflow's
``next_action`` query, and, as one sentence, its current details in the Temporal Web UI.

Holds ids, step and menu names, never an address: the details are shown to anyone who can see
the namespace.
"""

# No ``from __future__ import annotations``: this type crosses the workflow boundary and
# pydantic resolves its annotations inside the workflow sandbox.

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo


@dataclass
class NextAction:
    what: str
    """What the run does next, as a verb phrase: ``sends follow-up 2``."""
    at: datetime | None = None
    """When, if it waits for a time; None when it does it now or waits for someone."""
    why: str = ""
    timezone: str = ""
    """The zone ``at`` reads in (a hold's, judged in the contact's zone); UTC when empty."""

    def sentence(self) -> str:
        """``sends follow-up 2 at 2026-12-04 09:30 UTC: 24h after step 1``."""
        when = ""
        if self.at is not None:
            zone = self.timezone or "UTC"
            when = f" at {self.at.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} {zone}"
        because = f": {self.why}" if self.why else ""
        return f"{self.what}{when}{because}"


def ended(status: str) -> NextAction:
    """A run that has finished does nothing more."""
    return NextAction("nothing", why=f"ended {status}")
