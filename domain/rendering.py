"""A WhatsApp interactive message (reply buttons or a list) as plain text.

One rendering for everything that shows a menu without WhatsApp's buttons: Twilio's WhatsApp
(numbered text, a number chooses), transcripts, the outbox ``body`` and the sandbox log. The
outbox and the log show each option's id too, which is what ``nudge simulate whatsapp
--reply-id`` taps.
"""

from __future__ import annotations

from typing import Any

from domain.menu_definition import MenuStep, as_dict


def interactive_text(interactive: dict[str, Any], *, with_ids: bool = False) -> str:
    """Header, body, the numbered options (``1. Fern``; ``1. Fern (id fern)`` with ids) and
    footer, one per line. Tolerates any shape: it also shows what was never checked."""
    lines = [_text_of(interactive.get(part)) for part in ("header", "body")]
    options = MenuStep(message=interactive).reply_options()
    for number, (option_id, title) in enumerate(options, start=1):
        lines.append(f"{number}. {title} (id {option_id})" if with_ids else f"{number}. {title}")
    lines.append(_text_of(interactive.get("footer")))
    return "\n".join(line for line in lines if line)


def _text_of(part: Any) -> str:
    text = as_dict(part).get("text")
    return str(text) if text else ""
