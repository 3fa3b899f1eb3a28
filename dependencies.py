"""What every route may ask for (FastAPI dependencies): the store, the settings, the Temporal
client and the caller's token. ``api/`` and ``starter/`` both import it; it imports neither."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from automation_starts import AutomationStarter
from domain.addresses import AddressError, parse_address
from followup_schedules import FollowupScheduler
from settings import Settings
from store.repo import Role, Store, TokenInfo
from temporal_client import TemporalConnector

log = logging.getLogger(__name__)
_bearer = HTTPBearer(auto_error=False, description="A token from `nudge token create`")


# Async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a thread hop
# per request for what is an attribute read.
async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_temporal(request: Request) -> Client:
    connector: TemporalConnector = request.app.state.temporal
    try:
        return await connector.get()
    except Exception as exc:
        # The server's address and the connection error are for the operator's log, not for
        # whoever called the API.
        log.warning("Temporal is not reachable: %s: %s", exc.__class__.__name__, exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Temporal is not reachable; nothing was started. Try again shortly.",
            headers={"Retry-After": "5"},
        ) from exc


async def get_scheduler(request: Request) -> FollowupScheduler:
    scheduler: FollowupScheduler = request.app.state.scheduler
    return scheduler


async def get_automations(request: Request) -> AutomationStarter:
    starter: AutomationStarter = request.app.state.automations
    return starter


async def current_token(
    store: Annotated[Store, Depends(get_store)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenInfo:
    """Any valid token, a contact's included: a route that takes it decides what the token
    may see (``visible_contact``)."""
    bearer = credentials is not None and credentials.scheme.lower() == "bearer"
    token = credentials.credentials if credentials is not None and bearer else ""
    return await verified_token(
        store, token, "Authorization: Bearer <token> is required", contacts=True
    )


async def verified_token(
    store: Store, token: str, missing: str, *, contacts: bool = False
) -> TokenInfo:
    """The stored token for ``token``, or 401: ``missing`` says how to give one when none
    was given. Every way a route accepts a token (header, the codec's cookie) ends here.

    A contact token is refused (``staff_only``) unless ``contacts``: a caller written before
    contact tokens existed, like the codec, stays closed to them without knowing of them."""
    if not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, missing, headers={"WWW-Authenticate": "Bearer"}
        )
    found = await asyncio.to_thread(store.verify_token, token)
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "unknown, revoked or expired token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found if contacts else staff_only(found)


def staff_only(token: TokenInfo) -> TokenInfo:
    """``token`` when it is the operator's (admin or user); 404 for a contact token, with
    the body of a path that has no route: a 403 would tell an end user which routes exist,
    and a route's own 404 which ids do."""
    if token.role == Role.contact:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")
    return token


async def user_token(token: Annotated[TokenInfo, Depends(current_token)]) -> TokenInfo:
    return staff_only(token)


async def admin_token(token: Annotated[TokenInfo, Depends(user_token)]) -> TokenInfo:
    if token.role != Role.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an admin token")
    return token


def own_contact_id(token: TokenInfo) -> int | None:
    """The one contact a contact token may see; None for the operator's tokens, which see
    every contact."""
    return token.contact_id if token.role == Role.contact else None


def visible_contact(token: TokenInfo, contact_id: int) -> None:
    """404 when ``token`` may not see contact ``contact_id``, in the words a route uses for
    a contact that does not exist, so another contact's id cannot be told from a free one."""
    own = own_contact_id(token)
    if own is not None and own != contact_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"contact_id: no contact {contact_id}")


StoreDep = Annotated[Store, Depends(get_store)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
AutomationsDep = Annotated[AutomationStarter, Depends(get_automations)]
SchedulerDep = Annotated[FollowupScheduler, Depends(get_scheduler)]
AnyToken = Annotated[TokenInfo, Depends(current_token)]
"""Any valid token, a contact's included: pair it with ``visible_contact``."""
UserToken = Annotated[TokenInfo, Depends(user_token)]
"""The operator's tokens (admin or user); a contact token gets 404."""
AdminToken = Annotated[TokenInfo, Depends(admin_token)]
"""An admin token; a user token gets 403, a contact token 404."""


# --- addresses a request names -----------------------------------------------------------
# Checked on the way in, by api/ and starter/ alike: a 422 naming the field and saying why,
# never a message recorded as ``sandboxed`` (or a suppression stored) for an address nothing
# could reach. Numbers without a country code are read in ``NUDGE_POLICY__DEFAULT_REGION``.

Loc = Sequence[str | int]


def checked_addresses(settings: Settings, addresses: Iterable[tuple[Loc, str, str]]) -> list[str]:
    """Each ``(loc, channel, address)`` checked; all of them in our spelling, or one 422
    listing every address at fault (in FastAPI's shape, ``loc`` from ``body`` or ``query``)."""
    found: list[str] = []
    errors: list[dict[str, Any]] = []
    for loc, channel, address in addresses:
        try:
            found.append(parse_address(channel, address, region=settings.policy.default_region))
        except AddressError as exc:
            errors.append(
                {
                    "loc": list(loc),
                    "msg": f"{'.'.join(str(part) for part in loc[1:])}: {exc}",
                    "type": "address",
                    "input": address,
                }
            )
    if errors:
        raise RequestValidationError(errors)
    return found


def checked_address(settings: Settings, loc: Loc, channel: str, address: str) -> str:
    """One address: ``checked_addresses`` for a single field."""
    return checked_addresses(settings, [(loc, channel, address)])[0]
