"""The codec endpoint the Temporal Web UI and CLI call to show encrypted payloads decoded.

Temporal's codec-server protocol: ``POST /codec/decode`` (and ``/codec/encode``, for input an
operator types in the UI) with ``{"payloads": [...]}`` in protobuf's JSON form (bytes as
base64) and the namespace in ``X-Namespace``; the answer has the same shape. Decoded payloads
hold customers' data, so a Nudge token is required: ``Authorization: Bearer`` (the CLI's
``--codec-auth``), or the cookie ``GET /codec/sign-in`` sets, which the Web UI sends when its
codec setting includes credentials. The browser calls from the UI's origin, so CORS is
answered for ``NUDGE_TEMPORAL__UI_ORIGIN`` only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from dependencies import SettingsDep, StoreDep, verified_token
from payload_codec import EncryptionCodec, PayloadKeyError, parse_keys
from settings import Settings
from store.repo import TokenInfo

COOKIE = "nudge_codec"
"""Holds the operator's token for the Web UI's credentialed calls; sent to ``/codec`` only."""
SIGNED_IN_FOR = 12 * 3600
ALLOWED_HEADERS = "authorization, content-type, x-namespace"


class _WithCors(APIRoute):
    """Every answer of this router, errors too, carries the CORS headers for the Temporal
    UI's origin: otherwise the browser reports a 401 as an opaque network error."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_cors(request: Request) -> Response:
            try:
                response = await handler(request)
            except HTTPException as error:
                response = JSONResponse(
                    {"detail": error.detail}, error.status_code, headers=error.headers
                )
            except RequestValidationError as error:
                response = JSONResponse(
                    {"detail": [{"loc": e["loc"], "msg": e["msg"]} for e in error.errors()]},
                    status.HTTP_422_UNPROCESSABLE_CONTENT,
                )
            _allow_origin(request, response)
            return response

        return with_cors


router = APIRouter(prefix="/codec", tags=["temporal"], route_class=_WithCors)


def _allowed(request: Request) -> str | None:
    settings: Settings = request.app.state.settings
    origin = request.headers.get("origin")
    return origin if origin in settings.temporal.ui_origins else None


def _allow_origin(request: Request, response: Response) -> None:
    response.headers["Vary"] = "Origin"
    if origin := _allowed(request):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"


async def operator(request: Request, store: StoreDep) -> TokenInfo:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    token = value.strip() if scheme.lower() == "bearer" else request.cookies.get(COOKIE, "")
    return await verified_token(
        store, token, "Authorization: Bearer <token> (or signing in at /codec/sign-in) is required"
    )


async def configured_codec(request: Request, settings: SettingsDep) -> EncryptionCodec:
    temporal = settings.temporal
    namespace = request.headers.get("x-namespace")
    if namespace and namespace != temporal.namespace:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"X-Namespace: this codec serves namespace {temporal.namespace!r}, not {namespace!r}",
        )
    keys = parse_keys(temporal.encryption_key.get_secret_value())
    if not keys:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "the payload codec is not configured: NUDGE_TEMPORAL__ENCRYPTION_KEY is empty, "
            "so payloads are stored in clear and need no decoding",
        )
    return EncryptionCodec(keys)


Operator = Annotated[TokenInfo, Depends(operator)]
Codec = Annotated[EncryptionCodec, Depends(configured_codec)]


@router.post("/decode")
async def decode(request: Request, _: Operator, codec: Codec) -> Response:
    """Payloads as the Temporal server stores them -> as the workflow saw them."""
    return await _apply(request, codec.decode)


@router.post("/encode")
async def encode(request: Request, _: Operator, codec: Codec) -> Response:
    """Payloads an operator typed (e.g. a signal's input) -> as the worker expects them."""
    return await _apply(request, codec.encode)


@router.options("/decode", include_in_schema=False)
@router.options("/encode", include_in_schema=False)
async def preflight(request: Request) -> Response:
    """The browser's CORS preflight, answered for the Temporal UI's origin only."""
    if _allowed(request) is None:
        return JSONResponse(
            {"detail": "Origin: not the Temporal UI's (NUDGE_TEMPORAL__UI_ORIGIN)"},
            status.HTTP_403_FORBIDDEN,
        )
    return Response(
        status_code=status.HTTP_204_NO_CONTENT,
        headers={
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": "600",
        },
    )


async def _apply(
    request: Request, apply: Callable[[Sequence[Payload]], Awaitable[list[Payload]]]
) -> Response:
    # JSON only: a form or text/plain post (which a browser sends cross-site without a
    # preflight, cookie included) is refused before anything is decoded.
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Content-Type: application/json is required"
        )
    try:
        given = json_format.Parse(await request.body(), Payloads())
    except json_format.ParseError as error:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f'payloads: expected {{"payloads": [{{"metadata": ..., "data": ...}}]}} ({error})',
        ) from error
    try:
        done = await apply(list(given.payloads))
    except PayloadKeyError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"payloads: {error}") from error
    return Response(
        json_format.MessageToJson(Payloads(payloads=done)), media_type="application/json"
    )


@router.get("/sign-in", response_class=HTMLResponse, include_in_schema=False)
async def sign_in_page() -> str:
    return (
        "<!doctype html><title>Nudge: decode payloads in the Temporal UI</title>"
        '<form method="post"><label>Nudge token <input name="token" type="password" '
        'autocomplete="off" required></label> <button>Sign in</button></form>'
    )


@router.post("/sign-in", include_in_schema=False)
async def sign_in(
    token: Annotated[str, Form()], store: StoreDep, settings: SettingsDep
) -> Response:
    """Keeps the token in a cookie for ``/codec`` only, sent by the Web UI's credentialed
    calls. Cross-site (UI and Nudge on different sites) needs HTTPS: ``SameSite=None;
    Secure``; on plain HTTP (``nudge dev``: both on 127.0.0.1) ``Lax`` suffices."""
    if await asyncio.to_thread(store.verify_token, token) is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "token: unknown or revoked token")
    secure = settings.public_url.startswith("https://")
    response = HTMLResponse("Signed in: the Temporal Web UI can now show decoded payloads.")
    response.set_cookie(
        COOKIE,
        token,
        max_age=SIGNED_IN_FOR,
        path="/codec",
        httponly=True,
        secure=secure,
        samesite="none" if secure else "lax",
    )
    return response
