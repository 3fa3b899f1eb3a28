"""The HTTP service, assembled in one place: the ``/v1`` REST API (``api/``) and what providers
and customers call (``starter/``: webhooks, the unsubscribe page) in one FastAPI app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api import (
    analytics,
    automations,
    bookings,
    codec,
    contact_tokens,
    contacts,
    credits,
    docs,
    events,
    followup_compat,
    followup_settings,
    followups,
    menu_conversations,
    menus,
    messages,
    scheduled_followups,
    sessions,
    suppressions,
    templates,
)
from api.body_limit import BodyLimit
from api.nul_characters import refuse_nul_characters
from api.validation_errors import validation_error
from automation_starts import AutomationStarter
from followup_schedules import FollowupScheduler
from settings import Settings
from starter import simulate, twilio, unsubscribe, whatsapp
from starter.menu_routing import MenuRouter
from store.repo import Store
from temporal_client import TemporalConnector

log = logging.getLogger(__name__)

ROUTERS = (
    followups.router,
    messages.router,
    contacts.router,
    contact_tokens.router,
    events.router,
    automations.router,
    bookings.router,
    scheduled_followups.router,
    credits.router,
    followup_settings.router,
    followup_compat.router,
    sessions.router,
    suppressions.router,
    menus.router,
    templates.router,
    menu_conversations.router,
    twilio.router,
    whatsapp.router,
    unsubscribe.router,
    simulate.router,
    codec.router,
    docs.router,
    analytics.router,
)


def create_app(settings: Settings, *, store: Store | None = None) -> FastAPI:
    own_store = store is None
    the_store = store or Store.from_url(settings.database_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sweep = asyncio.create_task(app.state.menu_router.sweep_forever())
        dispatch = asyncio.create_task(app.state.automations.sweep_forever())
        starts = asyncio.create_task(app.state.scheduler.sweep_forever())
        yield
        sweep.cancel()
        dispatch.cancel()
        starts.cancel()
        await app.state.automations.drain()
        await app.state.menu_router.drain()
        if own_store:
            the_store.close()

    app = FastAPI(
        title="Nudge",
        summary="Customer follow-ups and conversations on Temporal durable workflows",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # api/docs.py serves /docs and /redoc without a CDN
        redoc_url=None,
        dependencies=[Depends(refuse_nul_characters)],
    )
    app.add_middleware(BodyLimit, max_body=int(settings.http.max_body))
    app.add_exception_handler(RequestValidationError, validation_error)
    app.mount(docs.STATIC_URL, docs.static_files(), name="docs-static")
    app.state.settings = settings
    app.state.store = the_store
    app.state.temporal = TemporalConnector(settings)
    app.state.menu_router = MenuRouter(settings, the_store, app.state.temporal.get)
    app.state.automations = AutomationStarter(
        the_store, app.state.temporal.get, settings.temporal.task_queue
    )
    app.state.scheduler = FollowupScheduler(
        the_store,
        app.state.temporal.get,
        settings.temporal.task_queue,
        dispatch=app.state.automations.dispatch,
    )

    @app.get("/healthz", tags=["health"])
    async def healthz(request: Request) -> JSONResponse:
        """200 when the database and Temporal both answer, 503 naming what does not. Anyone
        may call it, so the body says only ``ok`` or ``unavailable``: an exception's text can
        carry a host, a path or a connection string. The error itself goes to the log."""
        checks: dict[str, str] = {}
        try:
            await asyncio.to_thread(the_store.ping)
            checks["database"] = "ok"
        except Exception as exc:  # a probe every few seconds: one line each, no traceback
            log.warning("health check: the database does not answer: %r", exc)
            checks["database"] = "unavailable"
        try:
            client = await request.app.state.temporal.get()
            await asyncio.wait_for(client.service_client.check_health(), timeout=3)
            checks["temporal"] = "ok"
        except Exception as exc:
            log.warning("health check: Temporal does not answer: %r", exc)
            checks["temporal"] = "unavailable"
        healthy = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "unhealthy", **checks},
            status_code=200 if healthy else 503,
        )

    for router in ROUTERS:
        app.include_router(router)
    return app
