"""``/docs`` and ``/redoc`` work without the internet: every script, style, icon and spec they
reference is served by the app itself, and their policy lets the browser load nothing else.

The app runs as a real server; each page is read as a browser would read it (``src``, ``href``,
ReDoc's ``spec-url``, Swagger UI's ``url`` and OAuth2 redirect), and each reference is fetched.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from service import create_app
from settings import Settings, TemporalSettings
from store.repo import Store
from tests.fakes.server import free_port, serve

PAGES = ("/docs", "/redoc")
CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
    ".json": ("application/json",),
}
SAME_ORIGIN_SOURCES = {"'self'", "'unsafe-inline'", "'none'", "data:", "blob:"}
"""What a directive of the pages' Content Security Policy may allow: nothing of another host."""
OUTSIDE = ("cdn.", "googleapis", "jsdelivr", "fastapi.tiangolo.com", "http://", "https://")
"""What FastAPI's default pages name: a CDN, Google Fonts, FastAPI's site, any absolute URL."""
SWAGGER_URLS = re.compile(r"""(?:url:\s*|window\.location\.origin \+ )'([^']+)'""")


class References(HTMLParser):
    """Every URL the page makes the browser load or follow."""

    ATTRIBUTES = {"src", "href", "spec-url"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"
        self.urls += [value for name, value in attrs if name in self.ATTRIBUTES and value]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:  # Swagger UI is started inline with the spec's and redirect's URLs
            self.urls += SWAGGER_URLS.findall(data)


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.urls


@pytest.fixture
def client(store: Store, sqlite_url: str) -> Iterator[httpx.Client]:
    nowhere = TemporalSettings(address=f"127.0.0.1:{free_port()}")
    settings = Settings(_env_file=None, database_url=sqlite_url, temporal=nowhere)
    with (
        serve(create_app(settings, store=store)) as server,
        httpx.Client(base_url=server.url, timeout=15) as client,
    ):
        yield client


@pytest.mark.parametrize("page", PAGES)
def test_every_asset_a_docs_page_references_is_served_by_the_app(
    client: httpx.Client, page: str
) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = references(response.text)
    kinds = {urlsplit(url).path.rsplit(".", 1)[-1] for url in urls}
    assert {"js", "png", "json"} <= kinds, f"{page} references {urls}"

    page_url = str(client.base_url.join(page))
    for url in urls:
        absolute = urljoin(page_url, url)
        assert urlsplit(absolute).netloc == client.base_url.netloc.decode(), (
            f"{page} loads {url} from another host"
        )
        asset = client.get(absolute)
        assert asset.status_code == 200, (
            f"{page} references {url}, which answers {asset.status_code}"
        )
        suffix = "." + urlsplit(url).path.rsplit(".", 1)[-1]
        expected = CONTENT_TYPES.get(suffix, ("text/html",))
        assert asset.headers["content-type"].startswith(expected), (
            f"{url} is served as {asset.headers['content-type']}, not {expected}"
        )
        assert asset.content, f"{url} is empty"


@pytest.mark.parametrize("page", PAGES)
def test_docs_pages_name_no_cdn_and_forbid_other_origins(client: httpx.Client, page: str) -> None:
    response = client.get(page)
    html = response.text.lower()
    for outside in OUTSIDE:
        assert outside not in html, f"{page} names {outside!r}"

    policy = response.headers.get("content-security-policy", "")
    directives = {
        name: sources
        for name, *sources in (part.split() for part in policy.split(";") if part.strip())
    }
    assert directives.get("default-src") == ["'self'"], policy
    for name, sources in directives.items():
        foreign = set(sources) - SAME_ORIGIN_SOURCES
        assert not foreign, f"{page}'s {name} lets the browser load from {foreign}"


def test_redoc_loads_no_google_fonts(client: httpx.Client) -> None:
    html = client.get("/redoc").text
    assert "fonts.googleapis.com" not in html and "fonts.gstatic.com" not in html
    assert not [url for url in references(html) if "font" in url.lower()]


def test_the_swagger_ui_oauth2_redirect_page_is_served(client: httpx.Client) -> None:
    assert "/docs/oauth2-redirect" in references(client.get("/docs").text)
    response = client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "oauth2" in response.text.lower()


def test_the_docs_routes_are_not_in_the_openapi_schema(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith(("/docs", "/redoc", "/static"))]
