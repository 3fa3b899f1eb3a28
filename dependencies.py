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


async def get_automations(request: Request) -> AutomationStarter:
    starter: AutomationStarter = request.app.state.automations
    return starter


async def current_token(
    store: Annotated[Store, Depends(get_store)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenInfo:
    bearer = credentials is not None and credentials.scheme.lower() == "bearer"
    token = credentials.credentials if credentials is not None and bearer else ""
    return await verified_token(store, token, "Authorization: Bearer <token> is required")


async def verified_token(store: Store, token: str, missing: str) -> TokenInfo:
    """The stored token for ``token``, or 401: ``missing`` says how to give one when none
    was given. Every way a route accepts a token (header, the codec's cookie) ends here."""
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
    return found


async def admin_token(token: Annotated[TokenInfo, Depends(current_token)]) -> TokenInfo:
    if token.role != Role.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an admin token")
    return token


StoreDep = Annotated[Store, Depends(get_store)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
AutomationsDep = Annotated[AutomationStarter, Depends(get_automations)]
UserToken = Annotated[TokenInfo, Depends(current_token)]
AdminToken = Annotated[TokenInfo, Depends(admin_token)]


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
