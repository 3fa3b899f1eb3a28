"""Ageing the routing lease of stored inbound messages, for tests of what happens after it
runs out (a retry or the sweep routes the message again) without waiting for it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from store.inbound import ROUTE_LEASE
from store.models import InboundMessage
from store.repo import Store


def age_lease(store: Store, by: timedelta = ROUTE_LEASE + timedelta(seconds=1)) -> None:
    """As if the lease had been taken that long ago (its holder died or gave up)."""
    with store.sessions.begin() as session:
        for row in session.scalars(select(InboundMessage)):
            if row.route_claimed_at is not None:
                row.route_claimed_at -= by
