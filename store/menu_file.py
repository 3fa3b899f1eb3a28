"""The menus file (``NUDGE_MENUS__FILE``): menu definitions kept in YAML or JSON beside the code.

The whole file is checked before anything is saved, and every problem of every definition is
reported at once, so an operator fixes the file in one pass and a bad file never leaves the
menus half-loaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from domain.menu_checks import problems
from domain.menu_definition import MenuDefinition

if TYPE_CHECKING:
    from store.repo import Store


class MenuFileError(ValueError):
    """The file cannot be read, or a definition in it is not sound; names the file and each
    problem."""

    def __init__(self, path: Path, found: Sequence[str]) -> None:
        self.path = path
        self.problems = list(found)
        count = "1 problem" if len(found) == 1 else f"{len(found)} problems"
        lines = "\n".join(f"  {problem}" for problem in found)
        super().__init__(f"menus file {path}: {count}, nothing was loaded:\n{lines}")


def read_menu_file(
    path: str | Path, *, known_menus: set[str] | None = None
) -> list[MenuDefinition]:
    """The definitions in the file (a list of them, or one), each checked with ``problems``
    against the menus of the file and ``known_menus`` (those already stored)."""
    path = Path(path)
    items = _items(path, _parse(path))
    found: list[str] = []
    definitions: list[tuple[str, MenuDefinition]] = []
    first_of: dict[str, int] = {}
    for number, item in enumerate(items, start=1):
        label = _label(number, item)
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in first_of:
                found.append(
                    f"{label}: name: {name!r} is defined more than once "
                    f"(first as definition #{first_of[name]})"
                )
            first_of.setdefault(name, number)
        try:
            definitions.append((label, MenuDefinition.model_validate(item)))
        except ValidationError as exc:
            found += [
                f"{label}: {_loc(e['loc']) or '(definition)'}: {e['msg']}" for e in exc.errors()
            ]
    known = set(first_of) | (known_menus or set())
    for label, definition in definitions:
        found += [f"{label}: {problem}" for problem in problems(definition, known_menus=known)]
    if found:
        raise MenuFileError(path, found)
    return [definition for _, definition in definitions]


def load_menu_file(store: Store, path: str | Path) -> list[str]:
    """Check the whole file, then save each menu (replacing a stored one of the same name);
    the names saved, in file order. Raises ``MenuFileError`` having saved nothing."""
    definitions = read_menu_file(path, known_menus=store.menu_names())
    for definition in definitions:
        store.save_menu(definition)
    return [definition.name for definition in definitions]


def _parse(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise MenuFileError(path, [f"{suffix or 'no extension'}: write it as .yaml, .yml or .json"])
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MenuFileError(path, [f"cannot be read: {exc.strerror or exc}"]) from exc
    try:
        return json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise MenuFileError(path, [f"line {exc.lineno}: not valid JSON: {exc.msg}"]) from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f"line {where.line + 1}: " if where is not None else ""
        raise MenuFileError(path, [f"{at}not valid YAML: {exc}"]) from exc


def _items(path: Path, data: Any) -> list[Any]:
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list):
        return data
    what = "empty" if data is None else f"a {type(data).__name__}"
    raise MenuFileError(path, [f"the file is {what}; it should hold a list of menu definitions"])


def _label(number: int, item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"menu {name!r} (#{number})" if isinstance(name, str) else f"definition #{number}"


def _loc(loc: Sequence[int | str]) -> str:
    """``("steps", "a", "message", "buttons", 3)`` -> ``steps.a.message.buttons[3]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text
