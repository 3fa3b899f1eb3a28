"""Text helpers: comparing what customers type, filling placeholders, keeping limits.

Customers type "Hí", "MENU " or "new order"; shop owners write "hi", "menu" and "New Order".
Both sides are folded the same way (accents dropped, case folded) before they are compared.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from typing import Any

from domain import whatsapp

WORD = re.compile(r"\w+")
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
"""A placeholder's name (also a template's declared variable)."""
INTERACTIVE_TEXT_LIMITS = {
    "header": whatsapp.HEADER,
    "body": whatsapp.BODY,
    "footer": whatsapp.FOOTER,
}


@dataclass(frozen=True)
class Dialect:
    """How one kind of text writes placeholders and literal braces. There is one scanner
    (``pieces``) and one filler (``substitute``); menus and templates differ only here.

    In both, doubling what opens a placeholder makes it literal: a menu's placeholder is
    ``{name}``, so ``{{`` is a literal ``{``; a template's is ``{{name}}``, so ``{{{{`` is a
    literal ``{{``.
    """

    token: re.Pattern[str]
    """Escapes, then ``(?P<double>...)`` and ``(?P<single>...)`` placeholders."""
    escapes: Mapping[str, str]


MENU = Dialect(
    token=re.compile(rf"\{{\{{|\}}\}}|\{{(?P<single>{NAME})\}}"),
    escapes={"{{": "{", "}}": "}"},
)
"""Menu texts: ``{name}`` is a saved answer; ``{{`` and ``}}`` are literal braces."""
_MENU_PLACEHOLDER = re.compile(rf"(?<!\{{)\{{({NAME})\}}(?!\}})")
TEMPLATE = Dialect(
    token=re.compile(
        rf"\{{\{{\{{\{{|\}}\}}\}}\}}|\{{\{{[ \t]*(?P<double>{NAME})[ \t]*\}}\}}|\{{(?P<single>{NAME})\}}"
    ),
    escapes={"{{{{": "{{", "}}}}": "}}"},
)
"""Message templates: ``{{name}}`` always; ``{name}`` for declared names only (so the ``{`` of
a JSON-ish text stays as written); ``{{{{`` and ``}}}}`` are literal ``{{`` and ``}}``."""


@dataclass(frozen=True)
class Slot:
    """A placeholder in a text: the name it asks for, and how it was written."""

    name: str
    written: str


def pieces(
    text: str, dialect: Dialect = MENU, declared: Container[str] | None = None
) -> list[str | Slot]:
    """The text as literal runs and placeholders. A single-brace ``{name}`` is a placeholder
    when ``declared`` is None (menus) or holds the name; otherwise it is literal text."""
    found: list[str | Slot] = []
    at = 0
    for match in dialect.token.finditer(text):
        if match.start() > at:
            found.append(text[at : match.start()])
        token = match.group(0)
        groups = match.groupdict()
        double, single = groups.get("double"), groups.get("single")
        if token in dialect.escapes:
            found.append(dialect.escapes[token])
        elif double is not None:
            found.append(Slot(double, token))
        elif single is not None and (declared is None or single in declared):
            found.append(Slot(single, token))
        else:
            found.append(token)
        at = match.end()
    if at < len(text):
        found.append(text[at:])
    return found


def substitute(parts: list[str | Slot], value: Callable[[Slot], str]) -> str:
    """The text with each placeholder replaced by ``value(slot)``; one pass, so braces inside
    a value are left exactly as they are."""
    return "".join(part if isinstance(part, str) else value(part) for part in parts)


def fold(text: str) -> str:
    """Lower case without accents: "Héllo" -> "hello"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def fold_spaces(text: str) -> str:
    """``fold`` with single spaces: "  Crème  Brûlée " -> "creme brulee"."""
    return " ".join(fold(text).split())


def words(text: str) -> list[str]:
    return WORD.findall(fold(text))


def placeholders(
    text: str, dialect: Dialect = MENU, declared: Container[str] | None = None
) -> list[str]:
    """The placeholders of a text, in order, each once.

    For menus, as menu checks have always read them: a ``{name}`` touching another brace
    (``{{{{ {d}}}``) is not counted, though ``fill`` fills it.
    """
    if dialect is MENU:
        return list(dict.fromkeys(_MENU_PLACEHOLDER.findall(text)))
    names = (part.name for part in pieces(text, dialect, declared) if isinstance(part, Slot))
    return list(dict.fromkeys(names))


def fill(text: str, context: dict[str, str]) -> str:
    """Put the saved answers into a menu text's ``{name}`` placeholders; ``{{``/``}}`` stay
    literal braces.

    A placeholder with no saved answer stays as written (definitions are checked so that
    this does not happen; a conversation must still never crash on it). Templates, which
    must never send a placeholder, use the same scanner but refuse instead
    (``domain.templates.render``).
    """
    return substitute(pieces(text, MENU), lambda slot: context.get(slot.name, slot.written))


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
