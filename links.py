"""The links we put in messages (the e-mail unsubscribe link), and their checking.

A link carries the channel and address it unsubscribes, so no database row is needed per
link and an address that later changes does not break the link. Both are encrypted with
AES-GCM (key derived from ``NUDGE_SECRET_KEY``): a URL in a proxy log, a link scanner or a
forwarded mail reveals nobody's address, and nobody can make a link for someone else.

Links sent before that carried the address readable, signed with HMAC-SHA256; they sit in
customers' inboxes, so they are still accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from settings import MAKE_SECRET_KEY, Settings

VERSION = b"\x02"
"""First byte of a link's token; bumped if the format ever changes again."""
_NONCE_BYTES = 12
_INFO = b"nudge unsubscribe link v2"
"""Binds the derived key to this one use of ``NUDGE_SECRET_KEY``."""


class SecretKeyMissing(RuntimeError):
    """``NUDGE_SECRET_KEY`` is not set where a link is made or read."""

    def __init__(self) -> None:
        super().__init__(
            "NUDGE_SECRET_KEY is not set: unsubscribe links need one key shared by the worker "
            f"and the HTTP service. {MAKE_SECRET_KEY}"
        )


def secret_key(settings: Settings) -> bytes:
    """The key every link is made and read with; there is no per-process fallback here, since
    a key the other processes do not share makes links that 404 (``nudge dev`` supplies one)."""
    value = settings.secret_key.get_secret_value()
    if not value:
        raise SecretKeyMissing()
    return value.encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _cipher(key: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(key)
    return AESGCM(derived)


def unsubscribe_token(key: bytes, channel: str, address: str) -> str:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = _cipher(key).encrypt(nonce, f"{channel}\n{address}".encode(), VERSION)
    return _b64(VERSION + nonce + sealed)


def read_unsubscribe_token(key: bytes, token: str) -> tuple[str, str] | None:
    """(channel, address) for a genuine token, None for anything else."""
    payload = _open(key, token) if "." not in token else _verify_signed(key, token)
    if payload is None:
        return None
    channel, _, address = payload.decode(errors="replace").partition("\n")
    return (channel, address) if channel and address else None


def _open(key: bytes, token: str) -> bytes | None:
    try:
        data = _unb64(token)
    except (ValueError, binascii.Error):
        return None
    if len(data) <= 1 + _NONCE_BYTES or data[:1] != VERSION:
        return None
    nonce, sealed = data[1 : 1 + _NONCE_BYTES], data[1 + _NONCE_BYTES :]
    try:
        return _cipher(key).decrypt(nonce, sealed, VERSION)
    except InvalidTag:
        return None


def _verify_signed(key: bytes, token: str) -> bytes | None:
    """The links sent before encryption: ``base64(channel\\naddress).base64(hmac)``."""
    try:
        payload_part, signature_part = token.split(".", 1)
        payload = _unb64(payload_part)
        signature = _unb64(signature_part)
    except (ValueError, binascii.Error):
        return None
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:18]
    return payload if hmac.compare_digest(signature, expected) else None


def unsubscribe_url(settings: Settings, key: bytes, channel: str, address: str) -> str:
    return (
        f"{settings.public_url.rstrip('/')}/unsubscribe/{unsubscribe_token(key, channel, address)}"
    )


def unsubscribe_links(settings: Settings) -> Callable[[str, str], str]:
    """``(channel, address) -> link`` for the delivery activity. Without a key the error
    comes when a link is needed, so a worker built for tests that send no marketing e-mail
    needs none; ``nudge worker`` has refused to start without one long before."""

    def link(channel: str, address: str) -> str:
        return unsubscribe_url(settings, secret_key(settings), channel, address)

    return link
