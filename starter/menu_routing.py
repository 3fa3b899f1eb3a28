"""Where an inbound WhatsApp message goes, after it is verified and recorded.

In this order: an opt-out keyword (already acted on by ``handle_inbound``; it also ends the
customer's menu conversation) -> the customer's running menu conversation -> a menu trigger
keyword -> the fallback auto-reply. The webhook answers the provider first; routing runs
right after, one message at a time per customer, so a customer's messages reach their
conversation in the order they arrived here.

A message is marked routed in the store once it has reached Temporal. One left unrouted
(Temporal was down past the retries, or the process stopped) is routed again by a provider's
retry of the webhook or by the sweep (``sweep_forever``), so an accepted message is never
left unanswered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from domain.channels import ChannelName
from domain.menu_definition import MenuDefinition
from domain.menu_matching import pick_menu
from domain.policy import Keyword, opt_keyword
from settings import Settings
from store.repo import Store
from workflows.menu_conversation import MenuConversation, start_options
from workflows.menu_payloads import (
    MenuConversationInput,
    MenuMessage,
    legacy_workflow_id_for,
    workflow_id_for,
)

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.5, 2.0, 5.0, 15.0)
"""While Temporal is unreachable (a restart), routing is tried again for about 20 s."""
MENU_CACHE_SECONDS = 5.0
"""Other API processes see a menu edit within this long; this process at once."""


@dataclass(frozen=True)
class RoutedMessage:
    channel: ChannelName
    """The channel replies go out on: ``whatsapp`` (Cloud API) or ``whatsapp_twilio``."""
    address: str
    contact_id: int
    message: MenuMessage
    keyword: Keyword | None = None
    inbound_id: int | None = None
    """The stored inbound message, marked routed once this is done."""


class MenuRouter:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        temporal: Callable[[], Awaitable[Client]],
        *,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self.settings = settings
        self.retry_delays = retry_delays
        self.store = store
        self._temporal = temporal
        self._menus: list[MenuDefinition] = []
        self._loaded_at = float("-inf")
        self._tails: dict[str, asyncio.Task[str]] = {}
        self._loading = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: dict[str, int] = {}
        self._in_flight: set[int] = set()

    def invalidate(self) -> None:
        """A menu was saved or deleted here: read the menus again on the next message."""
        self._loaded_at = float("-inf")

    @asynccontextmanager
    async def in_order(self, channel: ChannelName, address: str) -> AsyncIterator[None]:
        """Hold while recording one customer's message and submitting it: their messages are
        then stored and routed in the order the webhooks arrived (asyncio locks are FIFO)."""
        key = _customer(channel, address)
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._holders[key] = self._holders.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._holders[key] -= 1
            if not self._holders[key]:
                del self._holders[key], self._locks[key]

    def submit(self, routed: RoutedMessage) -> asyncio.Task[str]:
        """Route after the customer's earlier messages; returns at once."""
        key = _customer(routed.channel, routed.address)
        previous = self._tails.get(key)
        if routed.inbound_id is not None:
            self._in_flight.add(routed.inbound_id)
        task = asyncio.create_task(self._after(previous, routed))
        self._tails[key] = task
        task.add_done_callback(lambda done: self._forget(key, done, routed.inbound_id))
        return task

    def _forget(self, key: str, task: asyncio.Task[str], inbound_id: int | None) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]
        self._in_flight.discard(inbound_id or 0)

    async def _after(self, previous: asyncio.Task[str] | None, routed: RoutedMessage) -> str:
        if previous is not None:
            await asyncio.wait([previous])
        outcome = await self._route_with_retries(routed)
        if outcome != "failed" and routed.inbound_id is not None:
            try:
                await asyncio.to_thread(self.store.mark_routed, routed.inbound_id)
            except Exception:  # the sweep routes it again; the conversation drops the repeat
                log.exception("routed %s but could not record it", routed.inbound_id)
        return outcome

    async def _route_with_retries(self, routed: RoutedMessage) -> str:
        for delay in (*self.retry_delays, None):
            try:
                return await self.route(routed)
            except Exception as error:
                if delay is None or not _transient(error):
                    log.error(
                        "routing %s from %s failed (%s); it is stored and will be routed again",
                        routed.message.provider_message_id,
                        routed.address,
                        error,
                        exc_info=not _transient(error),
                    )
                    return "failed"
                log.warning(
                    "routing %s: %s; again in %ss", routed.message.provider_message_id, error, delay
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def sweep(self) -> int:
        """Route again the messages left unrouted (oldest first); how many were taken."""
        menus = self.settings.menus
        taken = await asyncio.to_thread(self.store.take_unrouted, max_age=menus.routing_max_age)
        for row in taken:
            if row.inbound_id in self._in_flight:
                continue  # still queued behind the customer's earlier messages here
            contact_id = row.contact_id
            if contact_id is None:  # the contact was deleted since: the address is one again
                contact_id = await asyncio.to_thread(
                    self.store.contact_for, row.channel, row.address
                )
            # Only a STOP changes the routing; a START acted when it was first stored.
            stop = row.kind == "text" and opt_keyword(row.body) == Keyword.stop
            self.submit(
                RoutedMessage(
                    channel=ChannelName(row.route_channel),
                    address=row.address,
                    contact_id=contact_id,
                    message=MenuMessage(
                        row.provider_message_id, row.body, row.reply_id, row.received_at
                    ),
                    keyword=Keyword.stop if stop else None,
                    inbound_id=row.inbound_id,
                )
            )
        return len(taken)

    async def sweep_forever(self) -> None:
        """The HTTP service's background sweep, every ``NUDGE_MENUS__ROUTING_RETRY_INTERVAL``."""
        interval = self.settings.menus.routing_retry_interval.total_seconds()
        while True:
            try:
                if taken := await self.sweep():
                    log.info("routing again %d messages left unrouted", taken)
            except Exception:
                log.exception("the sweep for unrouted messages failed; it runs again")
            await asyncio.sleep(interval)

    async def drain(self) -> None:
        """Wait for every message routed so far (tests and shutdown)."""
        while self._tails:
            await asyncio.wait(list(self._tails.values()))

    async def route(self, routed: RoutedMessage) -> str:
        """What was done: ``opt_out``, ``conversation``, ``trigger:{menu}`` (signalled with start:
        the running conversation, if any, got it), ``fallback``, or
        ``ignored``.

        A conversation begun before ids named the contact runs under the address's id
        (``legacy_workflow_id_for``) until it ends: a message for no run under the new id goes
        there while it lives, and only then starts anything."""
        client = await self._temporal()
        workflow_id = workflow_id_for(routed.channel.value, routed.contact_id)
        legacy_id = legacy_workflow_id_for(routed.channel.value, routed.address)
        if routed.keyword == Keyword.stop:
            if not await _signal(client, workflow_id, "opted_out"):
                await _signal(client, legacy_id, "opted_out")
            return "opt_out"
        # A START that opted the contact back in (``Keyword.start``) is still a word of the
        # conversation, and a "yes" that lifted nothing was never an opt-in: both go on like
        # any other message ("yes" answers a question).
        menu = pick_menu(await self._active_menus(), routed.message.text)
        if menu is not None:
            # Nothing starts under the new id while the old one runs (both never run at once).
            if await _signal(client, legacy_id, "message", routed.message):
                return "conversation"
            await self._start(client, routed, menu=menu)
            return f"trigger:{menu.name}"
        if await _signal(client, workflow_id, "message", routed.message):
            return "conversation"
        if await _signal(client, legacy_id, "message", routed.message):
            return "conversation"
        return await self._fallback(client, routed)

    async def _active_menus(self) -> list[MenuDefinition]:
        if time.monotonic() - self._loaded_at > MENU_CACHE_SECONDS:
            async with self._loading:  # a burst of messages reads the menus once, not each
                if time.monotonic() - self._loaded_at > MENU_CACHE_SECONDS:
                    self._menus = await asyncio.to_thread(self.store.list_menus, active_only=True)
                    self._loaded_at = time.monotonic()
        return self._menus

    async def _fallback(self, client: Client, routed: RoutedMessage) -> str:
        """No menu and no conversation: the workflow sends the fallback auto-reply when one
        is due (it claims the once-per-period slot itself, so a retried routing can never
        claim it without sending)."""
        if not self.settings.menus.fallback_text.strip() or not routed.message.text.strip():
            return "ignored"
        await self._start(client, routed, menu=None)
        return "fallback"

    async def _start(
        self, client: Client, routed: RoutedMessage, *, menu: MenuDefinition | None
    ) -> None:
        """Signal-with-start: a running conversation gets the message; otherwise a new run
        starts with it. One RPC, and no race between "is one running?" and "start one"."""
        menus = self.settings.menus
        await client.start_workflow(
            MenuConversation.run,
            MenuConversationInput(
                channel=routed.channel,
                address=routed.address,
                menu=menu,
                contact_id=routed.contact_id,
                hint=menus.hint,
                fallback_text=menus.fallback_text,
                fallback_period=menus.fallback_period,
            ),
            task_queue=self.settings.temporal.task_queue,
            start_signal="message",
            start_signal_args=[routed.message],
            **start_options(routed.channel, routed.contact_id, menu).options(),
        )


def _customer(channel: ChannelName, address: str) -> str:
    """Whose messages are kept in order in this process (a key, never sent anywhere)."""
    return f"{channel.value}:{address}"


def _transient(error: Exception) -> bool:
    """Temporal unreachable or busy for a moment: worth asking again."""
    if isinstance(error, RPCError):
        return error.status in (
            RPCStatusCode.UNAVAILABLE,
            RPCStatusCode.DEADLINE_EXCEEDED,
            RPCStatusCode.RESOURCE_EXHAUSTED,
        )
    return isinstance(error, (ConnectionError, TimeoutError, RuntimeError))


async def _signal(client: Client, workflow_id: str, name: str, *args: object) -> bool:
    """Signal the running conversation; False when there is none."""
    try:
        await client.get_workflow_handle(workflow_id).signal(name, *args)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True
