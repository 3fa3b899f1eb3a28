"""Which menu a customer's message asks for, and which option a typed reply names.

Keywords and option titles are compared as folded words (``domain.text``): "hi" matches "Hi!"
and "héllo there" but never "this". The webhook's router and the conversation's workflow
both match with these functions, and both must agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from domain.menu_definition import MenuDefinition
from domain.text import fold, words


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
