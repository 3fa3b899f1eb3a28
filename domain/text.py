"""Text helpers: comparing what customers type, filling ``{name}`` placeholders, keeping limits.

Customers type "Hí", "MENU " or "new order"; shop owners write "hi", "menu" and "New Order".
Both sides are folded the same way (accents dropped, case folded) before they are compared.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from domain import whatsapp

WORD = re.compile(r"\w+")
TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""What the filler reads: ``{{`` and ``}}`` (literal braces) or a ``{name}`` placeholder."""
PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")
"""``{name}``, but not inside ``{{name}}`` (literal braces): the placeholders ``fill`` fills."""
INTERACTIVE_TEXT_LIMITS = {
    "header": whatsapp.HEADER,
    "body": whatsapp.BODY,
    "footer": whatsapp.FOOTER,
}


def fold(text: str) -> str:
    """Lower case without accents: "Héllo" -> "hello"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def fold_spaces(text: str) -> str:
    """``fold`` with single spaces: "  Crème  Brûlée " -> "creme brulee"."""
    return " ".join(fold(text).split())


def words(text: str) -> list[str]:
    return WORD.findall(fold(text))


def placeholders(text: str) -> list[str]:
    """The ``{name}`` placeholders of a text, in order, each once; ``{{``/``}}`` are literal."""
    return list(dict.fromkeys(PLACEHOLDER.findall(text)))


def fill(text: str, context: dict[str, str]) -> str:
    """Put the saved answers into ``{name}`` placeholders; ``{{``/``}}`` stay literal braces.

    A placeholder with no saved answer stays as written (definitions are checked so that
    this does not happen; a conversation must still never crash on it).
    """

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        return context.get(match.group(1), token)

    # One pass, so braces inside a customer's answer are left as they typed them.
    return TOKEN.sub(one, text)


def clamp(text: str, limit: int) -> str:
    """At most ``limit`` characters, marked with an ellipsis when cut: a long saved answer
    in a placeholder must not make WhatsApp refuse the whole message."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def fill_interactive(message: dict[str, Any], context: dict[str, str]) -> dict[str, Any]:
    """The interactive object with its header, body and footer texts filled in (and kept
    within WhatsApp's limits once the answers are in)."""
    filled = dict(message)
    for part, limit in INTERACTIVE_TEXT_LIMITS.items():
        value = message.get(part)
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            filled[part] = {**value, "text": clamp(fill(value["text"], context), limit)}
    return filled
