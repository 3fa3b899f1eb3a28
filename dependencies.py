"""What every route may ask for (FastAPI dependencies): the store, the settings, the Temporal
client and the caller's token. ``api/`` and ``starter/`` both import it; it imports neither."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

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


async def current_token(
    store: Annotated[Store, Depends(get_store)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenInfo:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Authorization: Bearer <token> is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = await asyncio.to_thread(store.verify_token, credentials.credentials)
    if token is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "unknown, revoked or expired token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


async def admin_token(token: Annotated[TokenInfo, Depends(current_token)]) -> TokenInfo:
    if token.role != Role.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an admin token")
    return token


StoreDep = Annotated[Store, Depends(get_store)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
UserToken = Annotated[TokenInfo, Depends(current_token)]
AdminToken = Annotated[TokenInfo, Depends(admin_token)]
