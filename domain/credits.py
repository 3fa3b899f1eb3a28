"""Credits: an append-only ledger per contact, and the balance it adds up to.

A paid follow-up never takes credits outright when it is scheduled: it *reserves* them (they
leave the balance, so two schedules cannot spend the same credit), and the reservation is
settled exactly once, by a *capture* when the provider accepted the message or a *release*
when the follow-up was cancelled or could not be delivered. ``grant`` and ``adjust`` are an
operator's. Nothing is ever updated or deleted: the balance is what the entries add up to,
so it can always be checked against them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class EntryKind(StrEnum):
    grant = "grant"
    """Credits given (bought, a welcome gift): the balance grows."""
    reserve = "reserve"
    """Held for a scheduled follow-up: out of the balance, not yet spent."""
    capture = "capture"
    """A reservation spent: the message was accepted by the provider."""
    release = "release"
    """A reservation given back: cancelled, or not delivered."""
    adjust = "adjust"
    """An operator's correction, up or down (``amount`` may be negative); also a refund of
    a captured follow-up the provider later reported failed."""


OPERATOR_KINDS = (EntryKind.grant, EntryKind.adjust)
"""What ``POST /v1/contacts/{id}/credits`` may write; the rest are the follow-ups' own."""
SETTLEMENTS = (EntryKind.capture, EntryKind.release)


@dataclass(frozen=True)
class Balance:
    """A contact's credits, from the ledger.

    ``balance`` is what can be spent now; ``reserved`` is held by follow-ups not yet sent;
    ``spent`` is what was captured (less refunds). ``balance + reserved + spent`` always
    equals what was granted and adjusted: the check ``consistent`` makes."""

    balance: int
    reserved: int
    spent: int
    granted: int

    @property
    def consistent(self) -> bool:
        return (
            self.balance >= 0
            and self.reserved >= 0
            and (self.balance + self.reserved + self.spent == self.granted)
        )


@dataclass(frozen=True)
class Movement:
    """One entry as the balance sees it: its kind and signed amount, and whether it is a
    refund (an ``adjust`` that gives back a capture, counted against ``spent``)."""

    kind: EntryKind
    amount: int
    refund: bool = False


def balance_of(entries: Iterable[Movement]) -> Balance:
    balance = reserved = spent = granted = 0
    for entry in entries:
        if entry.kind == EntryKind.grant:
            balance += entry.amount
            granted += entry.amount
        elif entry.kind == EntryKind.adjust and entry.refund:
            balance += entry.amount
            spent -= entry.amount
        elif entry.kind == EntryKind.adjust:
            balance += entry.amount
            granted += entry.amount
        elif entry.kind == EntryKind.reserve:
            balance -= entry.amount
            reserved += entry.amount
        elif entry.kind == EntryKind.capture:
            reserved -= entry.amount
            spent += entry.amount
        elif entry.kind == EntryKind.release:
            reserved -= entry.amount
            balance += entry.amount
    return Balance(balance=balance, reserved=reserved, spent=spent, granted=granted)


class InsufficientCredits(Exception):
    """A reservation or a downward adjustment the balance cannot cover."""

    def __init__(self, balance: int, cost: int) -> None:
        self.balance = balance
        self.cost = cost
        super().__init__(f"insufficient credits: the balance is {balance} and this costs {cost}")
