"""``/v1/contacts/{id}/credits``: a contact's credits, from the append-only ledger.

The balance is what can be spent now; ``reserved`` is held by follow-ups not yet sent;
``spent`` was captured by messages their providers accepted. An admin grants or adjusts
credits with an idempotency key, so a retried request never grants twice. A contact token
reads its own credits only.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.contacts import ContactId
from dependencies import AdminToken, AnyToken, StoreDep, visible_contact
from domain import limits
from domain.credits import Balance, EntryKind, InsufficientCredits
from store.credits import EntryView, NoSuchContact

router = APIRouter(prefix="/v1/contacts", tags=["credits"])


class CreditsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["grant", "adjust"]
    amount: int = Field(ge=-limits.MAX_CREDITS, le=limits.MAX_CREDITS)
    """A grant is positive; an adjustment either way, never below a zero balance."""
    reason: str = Field(min_length=1, max_length=limits.CREDIT_REASON)
    reference: str | None = Field(default=None, max_length=limits.CREDIT_REFERENCE)
    """Yours: an order or invoice number."""
    idempotency_key: str = Field(min_length=1, max_length=limits.CREDIT_KEY)

    @model_validator(mode="after")
    def _amount(self) -> CreditsIn:
        if self.kind == "grant" and self.amount <= 0:
            raise ValueError("amount: a grant is more than 0 (take credits away with adjust)")
        if self.amount == 0:
            raise ValueError("amount: an adjustment of 0 changes nothing")
        return self


class EntryOut(BaseModel):
    id: int
    kind: EntryKind
    amount: int
    reason: str
    reference: str | None
    idempotency_key: str
    scheduled_followup_id: int | None
    created_at: datetime


class CreditsOut(BaseModel):
    contact_id: int
    balance: int
    reserved: int
    spent: int
    entries: list[EntryOut]
    next_before: int | None
    """Pass as ``before`` for the next (older) page; None on the last."""


class EntryCreated(BaseModel):
    entry: EntryOut
    balance: int
    reserved: int


def entry_out(entry: EntryView) -> EntryOut:
    return EntryOut(
        id=entry.id,
        kind=entry.kind,
        amount=entry.amount,
        reason=entry.reason,
        reference=entry.reference,
        idempotency_key=entry.idempotency_key,
        scheduled_followup_id=entry.schedule_id,
        created_at=entry.created_at,
    )


@router.get("/{contact_id}/credits", response_model=CreditsOut)
async def get_credits(
    contact_id: ContactId,
    token: AnyToken,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=1, le=limits.RECORD_ID)] = None,
) -> Any:
    """The balance and the ledger, newest entry first."""
    visible_contact(token, contact_id)
    if await asyncio.to_thread(store.get_contact, contact_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"contact_id: no contact {contact_id}")
    balance: Balance = await asyncio.to_thread(store.credit_balance, contact_id)
    entries = await asyncio.to_thread(
        lambda: store.credit_entries(contact_id, limit=limit + 1, before=before)
    )
    page = entries[:limit]
    return CreditsOut(
        contact_id=contact_id,
        balance=balance.balance,
        reserved=balance.reserved,
        spent=balance.spent,
        entries=[entry_out(entry) for entry in page],
        next_before=page[-1].id if len(entries) > limit else None,
    )


@router.post(
    "/{contact_id}/credits",
    response_model=EntryCreated,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "A repeat of an idempotency key: the first entry"}},
)
async def add_credits(
    contact_id: ContactId, body: CreditsIn, response: Response, _: AdminToken, store: StoreDep
) -> Any:
    """Grant or adjust credits. 409 when an adjustment would take the balance below zero."""
    try:
        entry, balance, created = await asyncio.to_thread(
            lambda: store.add_credits(
                contact_id,
                EntryKind(body.kind),
                body.amount,
                reason=body.reason,
                key=body.idempotency_key,
                reference=body.reference,
            )
        )
    except NoSuchContact:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"contact_id: no contact {contact_id}"
        ) from None
    except InsufficientCredits as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"amount: the balance is {exc.balance}; an adjustment may not take it below 0",
        ) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    return EntryCreated(entry=entry_out(entry), balance=balance.balance, reserved=balance.reserved)
