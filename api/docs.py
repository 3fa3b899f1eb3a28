"""``/docs`` (Swagger UI) and ``/redoc`` served from files on this machine, never a CDN.

FastAPI's own pages load Swagger UI and ReDoc from cdn.jsdelivr.net, a favicon from
fastapi.tiangolo.com and ReDoc's fonts from Google: blank pages on a network without the
internet, and a third party told about every visit everywhere else. The scripts, styles and
favicon here are the ones the ``fastapi-offline`` package ships (Swagger UI 5, ReDoc 2),
mounted at ``STATIC_URL``.

ReDoc 2's side menu still shows a Redocly logo from cdn.redoc.ly; the pages' Content Security
Policy lets the browser load nothing from another origin, so that image is never requested
(ReDoc hides it when it fails).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/static/docs"
SWAGGER_UI_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
REDOC_URL = "/redoc"

SAME_ORIGIN_ONLY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",  # FastAPI's pages start Swagger UI inline
        "style-src 'self' 'unsafe-inline'",  # ReDoc writes its styles at run time
        "img-src 'self' data:",
        "worker-src 'self' blob:",  # ReDoc's search index runs in a worker made from a blob
        "object-src 'none'",
        "base-uri 'none'",
    )
)

router = APIRouter(include_in_schema=False)


def static_files() -> StaticFiles:
    """The package's files; a release that moved them fails here, when the app is built."""
    return StaticFiles(packages=[("fastapi_offline", "static")])


def _same_origin_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = SAME_ORIGIN_ONLY
    return page


@router.get(SWAGGER_UI_URL)
async def swagger_ui(request: Request) -> HTMLResponse:
    app, root = request.app, request.scope.get("root_path", "")
    return _same_origin_only(
        get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
    )


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(REDOC_URL)
async def redoc(request: Request) -> HTMLResponse:
    app, root = request.app, request.scope.get("root_path", "")
    return _same_origin_only(
        get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )
    )
