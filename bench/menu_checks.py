"""Benchmark: checking a menu definition grows in proportion to its size.

Not a test: it prints figures. A 4,000-question menu once took seconds to check (each step
intersected sets as large as the menu); the target is linear growth. The baseline is the
bare parse (``MenuDefinition.model_validate``) of the same definition in the same run, which
is linear by construction: the check's cost per step, as a ratio of the parse's, must stay
flat as the menu grows (quadratic would grow eightfold from 1,000 to 8,000 steps).

    .venv/bin/python bench/menu_checks.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from domain.menu_checks import problems
from domain.menu_definition import MenuDefinition
from tests.menus import question_chain


def best_of(runs: int, action: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    print(f"{'steps':>6}  {'parse':>9}  {'check':>9}  check/parse")
    ratios = []
    for questions in (1000, 2000, 4000, 8000):
        raw = question_chain(questions)
        definition = MenuDefinition.model_validate(raw)
        parse = best_of(3, partial(MenuDefinition.model_validate, raw))
        check = best_of(3, partial(problems, definition, known_menus=set()))
        ratios.append(check / parse)
        print(f"{questions:>6}  {parse * 1000:7.1f}ms  {check * 1000:7.1f}ms  {check / parse:6.2f}")
    print(
        f"growth of check/parse from 1,000 to 8,000 steps: {ratios[-1] / ratios[0]:.2f}x (1 = linear)"
    )


if __name__ == "__main__":
    main()
