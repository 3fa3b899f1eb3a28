"""Signed links we put in messages (the e-mail unsubscribe link), and their checking.

A link carries the channel and address it unsubscribes, signed with HMAC-SHA256, so nobody
can unsubscribe someone else by editing the URL, and no database row is needed per link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from settings import Settings

KEY_FILE = Path(".nudge") / "secret.key"


def secret_key(settings: Settings) -> bytes:
    if settings.secret_key:
        return settings.secret_key.encode()
    if not KEY_FILE.exists():
        KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
        KEY_FILE.write_text(secrets.token_urlsafe(48))
        KEY_FILE.chmod(0o600)
    return KEY_FILE.read_text().strip().encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unsubscribe_token(key: bytes, channel: str, address: str) -> str:
    payload = f"{channel}\n{address}".encode()
    signature = hmac.new(key, payload, hashlib.sha256).digest()[:18]
    return f"{_b64(payload)}.{_b64(signature)}"


def read_unsubscribe_token(key: bytes, token: str) -> tuple[str, str] | None:
    """(channel, address) for a genuine token, None for anything else."""
    try:
        payload_part, signature_part = token.split(".", 1)
        payload = _unb64(payload_part)
        signature = _unb64(signature_part)
    except (ValueError, UnicodeDecodeError):
        return None
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:18]
    if not hmac.compare_digest(signature, expected):
        return None
    channel, _, address = payload.decode(errors="replace").partition("\n")
    return (channel, address) if channel and address else None


def unsubscribe_url(settings: Settings, key: bytes, channel: str, address: str) -> str:
    return (
        f"{settings.public_url.rstrip('/')}/unsubscribe/{unsubscribe_token(key, channel, address)}"
    )
