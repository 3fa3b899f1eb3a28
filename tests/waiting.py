"""Waiting in real time for something that another task, thread or process is doing.

The tests drive Temporal servers, worker processes and fake provider servers running in
threads, so what a test sets off happens a moment later. Polling until it has happened
returns as soon as it does: a generous limit costs nothing when all is well, and spares a
loaded CI machine (two cores) a failure that only meant "slow". A test that needs a fixed
quiet period ("nothing more arrives") still sleeps for it; that is not waiting for a condition.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

PATIENCE = 30.0
"""Real seconds to wait for something that should happen. Polling returns as soon as it
does, so this only costs time when something is wrong."""
EVERY = 0.05
"""Real seconds between two looks: often enough not to slow a test down, rarely enough to
leave the machine to the servers under test."""

Condition = Callable[[], bool] | Callable[[], Awaitable[bool]]
"""A check with no arguments, plain or ``async`` (e.g. one that queries a workflow)."""


async def eventually(
    condition: Condition, *, within: float = PATIENCE, every: float = EVERY
) -> bool:
    """True as soon as ``condition()`` holds; False if it still does not after ``within``
    seconds. For a test that asserts on the outcome with its own message, or goes on
    either way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        outcome = condition()
        held = await outcome if inspect.isawaitable(outcome) else outcome
        if held:
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(every)


async def wait_for(
    condition: Condition,
    *,
    within: float = PATIENCE,
    every: float = EVERY,
    failure: str = "condition not met in time",
) -> None:
    """Return once ``condition()`` holds; raise ``AssertionError(failure)`` if it still does
    not after ``within`` seconds, so the test fails saying what never happened."""
    if not await eventually(condition, within=within, every=every):
        raise AssertionError(failure)


async def first_result(
    fetch: Callable[[], Awaitable[T | None]], *, within: float = PATIENCE, every: float = EVERY
) -> T | None:
    """The first thing ``fetch()`` returns that is not None (a row, a workflow's view once
    it has settled); None if it still returns None after ``within`` seconds."""
    found: T | None = None

    async def found_one() -> bool:
        nonlocal found
        found = await fetch()
        return found is not None

    await eventually(found_one, within=within, every=every)
    return found
