"""Unsubscribe links: they reveal no address, they open only with the key that made them,
and the signed links sent before they were encrypted keep working."""

from __future__ import annotations

import base64
import hashlib
import hmac

import httpx
import pytest

from links import (
    SecretKeyMissing,
    read_unsubscribe_token,
    secret_key,
    unsubscribe_links,
    unsubscribe_token,
)
from settings import Settings
from store.repo import Store
from tests.fakes.server import serve

KEY = b"links-test-secret-key-0123456789abcdef"
ADDRESS = "ann.smith@example.com"


def legacy_token(key: bytes, channel: str, address: str) -> str:
    """A link as Nudge wrote them before encryption (the format in customers' inboxes)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    payload = f"{channel}\n{address}".encode()
    return f"{b64(payload)}.{b64(hmac.new(key, payload, hashlib.sha256).digest()[:18])}"


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_link_round_trips_and_reveals_no_address() -> None:
    token = unsubscribe_token(KEY, "email", ADDRESS)
    assert read_unsubscribe_token(KEY, token) == ("email", ADDRESS)
    assert "example" not in token.lower() and "smith" not in token.lower()
    assert b"ann.smith" not in unb64(token) and b"example.com" not in unb64(token)
    assert token.isascii() and "." not in token and "/" not in token, "URL-safe, one path part"


def test_two_links_for_one_address_differ() -> None:
    """Random nonces: two mails to one person do not carry a recognisable common token."""
    assert unsubscribe_token(KEY, "email", ADDRESS) != unsubscribe_token(KEY, "email", ADDRESS)


def test_a_link_opens_only_with_its_key_and_unaltered() -> None:
    token = unsubscribe_token(KEY, "email", ADDRESS)
    assert read_unsubscribe_token(b"another-key-of-the-same-length-0123456", token) is None
    middle = len(token) // 2
    for position in (0, middle, len(token) - 1):
        flipped = (
            token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]
        )
        assert read_unsubscribe_token(KEY, flipped) is None, position
    for broken in ("", "A", token[:-4], token + "AAAA", "not base64 at all!", "é" * 40):
        assert read_unsubscribe_token(KEY, broken) is None, broken


def test_links_sent_in_the_old_signed_format_are_still_accepted() -> None:
    old = legacy_token(KEY, "email", ADDRESS)
    assert read_unsubscribe_token(KEY, old) == ("email", ADDRESS)
    payload, signature = old.split(".")
    other = legacy_token(KEY, "email", "eve@example.com").split(".")[0]
    for forged in (f"{other}.{signature}", f"{payload}.{signature[:-2]}AA", f"{payload}."):
        assert read_unsubscribe_token(KEY, forged) is None, forged
    assert read_unsubscribe_token(b"x" * 32, old) is None, "signed with another key"


def test_without_a_secret_key_links_fail_clearly_and_none_is_made_up() -> None:
    settings = Settings(_env_file=None)
    with pytest.raises(SecretKeyMissing, match="NUDGE_SECRET_KEY") as raised:
        secret_key(settings)
    assert "secrets.token_urlsafe(32)" in str(raised.value)
    link = unsubscribe_links(settings)
    with pytest.raises(SecretKeyMissing):
        link("email", ADDRESS)


def test_the_delivery_link_maker_uses_the_configured_key() -> None:
    settings = Settings(_env_file=None, secret_key=KEY.decode(), public_url="https://shop.test/")
    url = unsubscribe_links(settings)("email", ADDRESS)
    prefix = "https://shop.test/unsubscribe/"
    assert url.startswith(prefix)
    assert read_unsubscribe_token(KEY, url.removeprefix(prefix)) == ("email", ADDRESS)


def test_the_unsubscribe_page_opens_old_and_new_links(store: Store, sqlite_url: str) -> None:
    from service import create_app

    settings = Settings(_env_file=None, database_url=sqlite_url, secret_key=KEY.decode())
    new = unsubscribe_token(KEY, "email", ADDRESS)
    old = legacy_token(KEY, "email", "old.customer@example.com")
    with (
        serve(create_app(settings, store=store)) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        assert ADDRESS in http.get(f"/unsubscribe/{new}").text
        assert http.post(f"/unsubscribe/{old}", data={}).status_code == 200
    assert store.suppression_for("email", "old.customer@example.com", "marketing") is not None
    assert store.suppression_for("email", ADDRESS, "marketing") is None


def test_the_unsubscribe_page_without_a_key_says_so(store: Store, sqlite_url: str) -> None:
    from service import create_app

    settings = Settings(_env_file=None, database_url=sqlite_url)
    token = unsubscribe_token(KEY, "email", ADDRESS)
    with (
        serve(create_app(settings, store=store)) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        answer = http.get(f"/unsubscribe/{token}")
    assert answer.status_code == 503 and "NUDGE_SECRET_KEY" in answer.text
