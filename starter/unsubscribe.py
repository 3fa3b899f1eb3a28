"""The e-mail unsubscribe link: ``GET`` shows a page with a button, ``POST`` confirms.

Mail clients that support RFC 8058 one-click unsubscribe POST to the same URL with
``List-Unsubscribe=One-Click``; a person clicking the link gets the page first, so a link
scanner that only fetches URLs never unsubscribes anybody.
"""

from __future__ import annotations

import asyncio
import html

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse

from dependencies import SettingsDep, StoreDep
from domain.policy import OptOutSource
from links import SecretKeyMissing, read_unsubscribe_token, secret_key

router = APIRouter(tags=["unsubscribe"])

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 32rem; margin: 3rem auto">
<h1>{title}</h1><p>{text}</p>{form}</body></html>"""


def _read(token: str, settings: SettingsDep) -> tuple[str, str]:
    try:
        key = secret_key(settings)
    except SecretKeyMissing as exc:  # `nudge serve` refuses to start so; an app built in code
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "unsubscribe links cannot be read: the service has no NUDGE_SECRET_KEY",
        ) from exc
    found = read_unsubscribe_token(key, token)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "token: this unsubscribe link is not valid")
    return found


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe_page(token: str, settings: SettingsDep) -> HTMLResponse:
    _, address = _read(token, settings)
    form = f'<form method="post" action="{html.escape(token)}"><button type="submit">Unsubscribe</button></form>'
    return HTMLResponse(
        PAGE.format(
            title="Unsubscribe",
            text=f"Stop marketing e-mail to <b>{html.escape(address)}</b>?",
            form=form,
        )
    )


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe(
    token: str, request: Request, settings: SettingsDep, store: StoreDep
) -> HTMLResponse:
    channel, address = _read(token, settings)
    one_click = (await request.body()).decode(
        errors="replace"
    ).strip() == "List-Unsubscribe=One-Click"
    await asyncio.to_thread(
        store.suppress,
        channel,
        address,
        scope="marketing",
        reason="one-click unsubscribe" if one_click else "unsubscribe link",
        source=OptOutSource.unsubscribe_link,
    )
    return HTMLResponse(
        PAGE.format(
            title="Unsubscribed",
            text=f"<b>{html.escape(address)}</b> will get no more marketing e-mail from us.",
            form="",
        )
    )
