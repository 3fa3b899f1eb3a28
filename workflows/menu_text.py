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

WORD = re.compile(r"\w+")
PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")


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
    best = 0
    for keyword in keywords:
        wanted = words(keyword)
        if _contains(said, wanted):
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
    filled = PLACEHOLDER.sub(lambda m: context.get(m.group(1), m.group(0)), text)
    return filled.replace("{{", "{").replace("}}", "}")


def fill_interactive(message: dict[str, Any], context: dict[str, str]) -> dict[str, Any]:
    """The interactive object with its header, body and footer texts filled in."""
    filled = dict(message)
    for part in ("header", "body", "footer"):
        value = message.get(part)
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            filled[part] = {**value, "text": fill(value["text"], context)}
    return filled
