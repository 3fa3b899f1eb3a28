"""Payload encryption: what Nudge's workflows carry (phone numbers, answers, transcripts) is
stored on the Temporal server as AES-GCM ciphertext, never in clear.

Off unless ``NUDGE_TEMPORAL__ENCRYPTION_KEY`` is set. It holds one or more keys, each
``<key id>:<base64 of 32 bytes>``, comma separated: the first encrypts, all of them decrypt.
Every encrypted payload names its key in its metadata (``encryption-key-id``), so keys rotate
without a stop: put the new key first and keep the old ones after it until no history that
uses them is left (a namespace's retention period after the last run that used them closed).

Watch out: the worker, the HTTP service and the codec endpoint need the same keys. A payload
whose key is not configured cannot be read: its workflow task fails (and is retried) until the
key is added back.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
KEY_BYTES = 32
"""AES-256: ``openssl rand -base64 32`` makes one."""
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class PayloadKeyError(ValueError):
    """A payload that cannot be decrypted with the configured keys."""


@dataclass(frozen=True)
class EncryptionKey:
    id: str
    secret: bytes

    def __repr__(self) -> str:  # never the secret, in a log or a traceback
        return f"EncryptionKey(id={self.id!r})"


def parse_keys(value: str) -> list[EncryptionKey]:
    """``k2:<base64>,k1:<base64>`` -> keys, the encrypting one first. Errors name the key
    at fault (by id or position, never its secret)."""
    keys: list[EncryptionKey] = []
    for position, item in enumerate((part.strip() for part in value.split(",")), start=1):
        if not item:
            continue
        key_id, colon, encoded = item.partition(":")
        key_id = key_id.strip()
        if not colon or not KEY_ID_PATTERN.fullmatch(key_id):
            raise ValueError(
                f"key {position} is not written <key id>:<base64 of 32 bytes> "
                "(the id: letters, digits, '.', '_' or '-'), e.g. k1:$(openssl rand -base64 32)"
            )
        try:
            secret = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {key_id!r} is not valid base64") from None
        if len(secret) != KEY_BYTES:
            raise ValueError(
                f"key {key_id!r} is {len(secret)} bytes; AES-256 needs {KEY_BYTES} "
                "(openssl rand -base64 32)"
            )
        if any(key.id == key_id for key in keys):
            raise ValueError(f"key id {key_id!r} is given twice")
        keys.append(EncryptionKey(key_id, secret))
    return keys


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole serialized payload (its metadata too, so the encoding and
    the type stay hidden). The key id is bound in as associated data: a payload relabelled
    with another key id does not decrypt."""

    def __init__(self, keys: Sequence[EncryptionKey]) -> None:
        if not keys:
            raise ValueError("an encryption codec needs at least one key")
        self._current = keys[0]
        self._ciphers = {key.id: AESGCM(key.secret) for key in keys}

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        key_id = self._current.id
        cipher = self._ciphers[key_id]
        encoded = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), key_id.encode())
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID: key_id.encode()},
                    data=nonce + sealed,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Payloads that are not encrypted (written before the key was set) pass as they are."""
        return [self._open(p) if p.metadata.get("encoding") == ENCODING else p for p in payloads]

    def _open(self, payload: Payload) -> Payload:
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadKeyError(
                f"payload encrypted with key {key_id!r}, which is not among the keys of "
                f"NUDGE_TEMPORAL__ENCRYPTION_KEY ({', '.join(self._ciphers)}): add it back "
                "(after the current key) to read it"
            )
        data = payload.data
        try:
            clear = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise PayloadKeyError(
                f"payload encrypted with key {key_id!r} does not decrypt: the key configured "
                "under that id is not the one it was written with, or the payload was altered"
            ) from None
        return Payload.FromString(clear)
