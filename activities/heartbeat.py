"""Keep an activity visibly alive during a long outside call, without letting a cancel cut it.

Heartbeats let the server notice a dead worker within seconds (the heartbeat timeout)
instead of waiting out the whole start-to-close timeout. The call itself is shielded: once a
message is on its way we let the provider answer and record the answer before honouring a
cancel, so the outbox never holds a half-known send because of a cancel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from temporalio import activity

P = ParamSpec("P")
T = TypeVar("T")

HEARTBEAT_EVERY = 2.0


async def shielded_with_heartbeat(call: Awaitable[T], *, every: float = HEARTBEAT_EVERY) -> T:
    task: asyncio.Future[T] = asyncio.ensure_future(call)
    cancelled = False
    local = activity.info().is_local  # local activities do not heartbeat
    while not task.done():
        if not local:
            activity.heartbeat()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=every)
        except TimeoutError:
            continue
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
    result = task.result()
    if cancelled:
        raise asyncio.CancelledError()
    return result


async def db(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """A store call in a thread, heartbeating meanwhile: a slow database (a lock wait, a busy
    SQLite) must not look like a dead worker past the heartbeat timeout, or Temporal starts
    a second attempt while this one is alive. Outside an activity it is a plain thread call."""
    work = asyncio.to_thread(call, *args, **kwargs)
    if not activity.in_activity():
        return await work
    return await shielded_with_heartbeat(work)
