"""How a customer's words are compared with menu keywords and option titles.

Customers type "Hí", "MENU " or "new order"; shop owners write "hi", "menu" and "New Order".
Both sides are folded the same way (accents dropped, case folded, split into words) so that
"hi" matches "Hi!" and "héllo there" but never "this". Pure functions: the starter routes
with them and the workflow matches replies with them, and both must agree.
"""

# Pure and deterministic: imported by the workflow through passthrough.

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from workflows.menu_definition import MenuDefinition

WORD = re.compile(r"\w+")
TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fold(text: str) -> str:
    """Lower case without accents: "Héllo" -> "hello"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def words(text: str) -> list[str]:
    return WORD.findall(fold(text))


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    size = len(needle)
    return size > 0 and any(
        list(haystack[i : i + size]) == list(needle) for i in range(len(haystack) - size + 1)
    )


def trigger_score(keywords: Iterable[str], text: str) -> int:
    """Length of the longest keyword found in ``text`` as whole words; 0 when none is."""
    said = words(text)
    pieces = fold(text).split()
    best = 0
    for keyword in keywords:
        wanted = words(keyword)
        if not wanted:  # no letters or digits ("👋"): the symbols as a whole, space-separated
            symbols = fold(keyword).split()
            if _contains(pieces, symbols):
                best = max(best, len(" ".join(symbols)))
        elif _contains(said, wanted):
            best = max(best, len(" ".join(wanted)))
    return best


def same_words(a: str, b: str) -> bool:
    """True when two texts are the same words ("new order!" and "New Order")."""
    folded = words(a)
    return bool(folded) and folded == words(b)


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


LIMITS = {"header": 60, "body": 1024, "footer": 60}
"""WhatsApp's character limits of an interactive message's texts."""
TEXT_LIMIT = 4096
"""WhatsApp's limit for a text message."""


def clamp(text: str, limit: int) -> str:
    """At most ``limit`` characters, marked with an ellipsis when cut: a long saved answer
    in a placeholder must not make WhatsApp refuse the whole message."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def fill_interactive(message: dict[str, Any], context: dict[str, str]) -> dict[str, Any]:
    """The interactive object with its header, body and footer texts filled in (and kept
    within WhatsApp's limits once the answers are in)."""
    filled = dict(message)
    for part, limit in LIMITS.items():
        value = message.get(part)
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            filled[part] = {**value, "text": clamp(fill(value["text"], context), limit)}
    return filled


def pick_menu(menus: list[MenuDefinition], text: str) -> MenuDefinition | None:
    """The active menu whose keyword the text contains as whole words: highest priority first,
    then the longest keyword; None when no keyword matches."""
    best: tuple[int, int, str] | None = None
    chosen = None
    for menu in menus:
        if not menu.active:
            continue
        score = trigger_score(menu.trigger_keywords, text)
        if score == 0:
            continue
        rank = (menu.priority, score, menu.name)
        if best is None or rank[:2] > best[:2] or (rank[:2] == best[:2] and rank[2] < best[2]):
            best, chosen = rank, menu
    return chosen
