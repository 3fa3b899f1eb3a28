"""Menu conversation bookkeeping: load another menu, record sessions, emit business events.

The conversation itself (step, saved answers, transcript) lives in the ``MenuConversation``
workflow; these activities only write what operators report on (sessions and their
outcomes) and what automation rules react to (events). Each write is idempotent because
activities are retried.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity

from domain.menu_definition import MenuDefinition
from domain.menu_matching import pick_menu
from domain.status import MenuStatus
from domain.transcripts import TranscriptEntry
from store.repo import Store


@dataclass
class SessionStart:
    session_id: str
    workflow_id: str
    menu: str
    channel: str
    address: str
    started_at: datetime


@dataclass
class SessionEnd:
    session_id: str
    status: MenuStatus
    last_step: str
    ended_at: datetime
    context: dict[str, str] = field(default_factory=dict)
    transcript: list[TranscriptEntry] = field(default_factory=list)


@dataclass
class MenuEvent:
    idempotency_key: str
    name: str
    menu: str
    channel: str
    address: str
    context: dict[str, str]
    occurred_at: datetime


@dataclass
class FallbackClaim:
    channel: str
    """The address's channel (``whatsapp`` for Twilio's WhatsApp too): one contact, one claim."""
    address: str
    at: datetime
    """The workflow's clock: the once-per-period rule is judged by it."""
    period: timedelta


class MenuActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn
    async def pick_menu(self, text: str) -> MenuDefinition | None:
        """The active menu a message's trigger keywords ask for (as the webhook's router)."""
        menus = await asyncio.to_thread(self.store.list_menus, active_only=True)
        return pick_menu(menus, text)

    @activity.defn
    async def claim_fallback(self, claim: FallbackClaim) -> bool:
        """True (and recorded) when this contact may get a fallback auto-reply now."""
        return await asyncio.to_thread(
            self.store.claim_fallback,
            claim.channel,
            claim.address,
            now=claim.at,
            period=claim.period,
        )

    @activity.defn
    async def load_menu(self, name: str) -> MenuDefinition | None:
        """The stored definition, or None when it was deleted or switched off."""
        found = await asyncio.to_thread(self.store.get_menu, name)
        return found if found is not None and found.active else None

    @activity.defn
    async def start_session(self, start: SessionStart) -> None:
        await asyncio.to_thread(
            self.store.start_menu_session,
            start.session_id,
            workflow_id=start.workflow_id,
            menu=start.menu,
            channel=start.channel,
            address=start.address,
            started_at=start.started_at,
        )

    @activity.defn
    async def end_session(self, end: SessionEnd) -> None:
        await asyncio.to_thread(
            self.store.end_menu_session,
            end.session_id,
            status=end.status,
            last_step=end.last_step,
            context=end.context,
            transcript=[_entry(e) for e in end.transcript],
            ended_at=end.ended_at,
        )

    @activity.defn
    async def emit_event(self, event: MenuEvent) -> bool:
        payload: dict[str, Any] = {
            "menu": event.menu,
            "channel": event.channel,
            "address": event.address,
            "context": event.context,
        }
        return await asyncio.to_thread(
            self.store.record_event,
            event.idempotency_key,
            name=event.name,
            source=f"menu:{event.menu}",
            channel=event.channel,
            address=event.address,
            payload=payload,
            created_at=event.occurred_at,
        )

    def all(self) -> list[Any]:
        return [
            self.load_menu,
            self.pick_menu,
            self.claim_fallback,
            self.start_session,
            self.end_session,
            self.emit_event,
        ]


def _entry(entry: TranscriptEntry) -> dict[str, str]:
    return {
        "at": entry.at.isoformat(),
        "direction": entry.direction,
        "text": entry.text,
        "step": entry.step,
    }
