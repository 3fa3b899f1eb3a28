"""Push notifications through Firebase Cloud Messaging HTTP v1.

``POST {base_url}/v1/projects/{project}/messages:send`` with an OAuth2 access token of a
service account (not the legacy server key). google-auth signs a JWT with the account's key
and trades it at the account's ``token_uri`` for a token that lives about an hour. The token
is cached and renewed shortly before it runs out, one renewal at a time; google-auth is
synchronous, so the exchange runs in a worker thread.

Watch out for:

* ``data`` values must be strings (FCM answers 400 otherwise): anything else is sent as its
  JSON text, so ``12`` becomes ``"12"`` and ``True`` becomes ``"true"``.
* ``UNREGISTERED`` (404) means the device token is dead: ``Unregistered`` tells the caller to
  forget it. Any other 404 is a wrong project or URL, not a missing device.
* A 401 without ``THIRD_PARTY_AUTH_ERROR`` is our access token being refused (expired early,
  revoked): the cached token is dropped and the send is ``RetryLater``. A 401 *with* it is
  FCM failing to reach APNs or web push with the project's credentials: ``Rejected``.
* FCM has no idempotency key; a send whose answer was lost may have been delivered.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import google.auth.exceptions
import google.auth.transport.requests
import httpx
import requests
from google.oauth2 import service_account

from domain.channels import ChannelName
from integrations.channels import OutboundMessage, Receipt, Unregistered
from integrations.errors import NotFound, Rejected, RetryLater
from integrations.http import send as http_send

PROVIDER = "fcm"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_RENEW_BEFORE_EXPIRY = 300.0
"""Seconds before expiry at which a cached token is renewed (halfway for short-lived tokens),
so a token never expires between leaving here and reaching FCM."""
_ASSUMED_LIFETIME = 3600.0
"""Google's access tokens last an hour; used when the token endpoint gives no ``expires_in``."""


def _read_service_account(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path} cannot be read: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{path} is not a JSON file: {exc}") from exc
    if not isinstance(info, dict) or info.get("type") != "service_account":
        # The usual mix-up is google-services.json, the app's config, which holds no key.
        raise ValueError(
            f'{path} is not a service-account key ("type": "service_account"); create one '
            "under Firebase console > Project settings > Service accounts > Generate new "
            "private key"
        )
    return info


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _fcm_message(message: OutboundMessage) -> dict[str, Any]:
    """The ``message`` object: notification only with something to show, data only if any."""
    fcm: dict[str, Any] = {"token": message.to}
    notification = {k: v for k, v in (("title", message.subject), ("body", message.text)) if v}
    if notification:
        fcm["notification"] = notification
    if message.data:
        fcm["data"] = {str(key): _as_text(value) for key, value in message.data.items()}
    return fcm


def _fcm_error_code(body: str) -> str:
    """The FCM ``errorCode`` from an error body, else its RPC ``status``, else ``""``."""
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return ""
    if not isinstance(error, dict):
        return ""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == _FCM_ERROR_TYPE:
            code = detail.get("errorCode")
            if isinstance(code, str):
                return code
    status = error.get("status")
    return status if isinstance(status, str) else ""


def _message_name(response: httpx.Response) -> str:
    try:
        name = response.json().get("name")
    except (ValueError, AttributeError):
        return ""
    return name if isinstance(name, str) else ""


class FcmChannel:
    """Sends to one device token at a time, as the project's service account."""

    name = ChannelName.push

    def __init__(
        self,
        credentials_file: Path,
        *,
        project_id: str = "",
        base_url: str = "https://fcm.googleapis.com",
        timeout: float = 20.0,
    ) -> None:
        """``credentials_file`` is a Firebase service-account JSON file (its ``token_uri`` is
        where access tokens come from); ``project_id`` defaults to the one it names."""
        info = _read_service_account(credentials_file)
        try:
            # google-auth ships py.typed but leaves this factory unannotated.
            self._credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=[SCOPE]
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{credentials_file} is not a usable service-account key: {exc}"
            ) from exc
        project = project_id or info.get("project_id") or ""
        if not isinstance(project, str) or not project:
            raise ValueError(
                f"no Firebase project: {credentials_file} has no project_id and none was given"
            )
        self.project_id = project
        self._path = f"/v1/projects/{quote(project, safe='')}/messages:send"
        self._timeout = timeout
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)
        self._auth_session = requests.Session()
        self._auth_request = google.auth.transport.requests.Request(self._auth_session)
        self._token_lock = asyncio.Lock()
        self._token: str | None = None
        self._renew_at = 0.0

    async def send(self, message: OutboundMessage) -> Receipt:
        """One request, never retried here; the receipt carries FCM's message ``name``."""
        if not message.to:
            raise Rejected(PROVIDER, "no device token to send to")
        payload = {"message": _fcm_message(message)}
        token = await self._access_token()
        headers = {"Authorization": f"Bearer {token}"}
        try:
            response = await http_send(
                PROVIDER, lambda: self._http.post(self._path, json=payload, headers=headers)
            )
        except Rejected as exc:
            code = _fcm_error_code(exc.body)
            common: dict[str, Any] = {"status": exc.status, "body": exc.body}
            if code == "UNREGISTERED":
                raise Unregistered(
                    PROVIDER, "the device token is no longer registered", **common
                ) from exc
            if exc.status == 401 and code != "THIRD_PARTY_AUTH_ERROR":
                self._forget(token)
                raise RetryLater(
                    PROVIDER,
                    "FCM refused our access token; a new one is fetched next time",
                    **common,
                ) from exc
            if isinstance(exc, NotFound):
                raise Rejected(
                    PROVIDER, f"{exc} (is project {self.project_id!r} right?)", **common
                ) from exc
            raise
        # A 200 means FCM took the message: never fail it for want of a readable name.
        return Receipt(
            provider_message_id=_message_name(response) or message.idempotency_key, status="sent"
        )

    async def aclose(self) -> None:
        await self._http.aclose()
        self._auth_session.close()

    async def _access_token(self) -> str:
        async with self._token_lock:
            if self._token is not None and time.monotonic() < self._renew_at:
                return self._token
            token, lifetime = await asyncio.to_thread(self._fetch_token)
            margin = min(_RENEW_BEFORE_EXPIRY, lifetime / 2)
            self._token, self._renew_at = token, time.monotonic() + lifetime - margin
            return token

    def _forget(self, token: str) -> None:
        # Only if no other send has replaced it meanwhile.
        if self._token == token:
            self._token = None

    def _fetch_token(self) -> tuple[str, float]:
        """Runs in a worker thread: google-auth's refresh blocks on HTTP."""
        request = functools.partial(self._auth_request, timeout=self._timeout)
        try:
            self._credentials.refresh(request)
        except google.auth.exceptions.TransportError as exc:
            raise RetryLater(PROVIDER, f"token endpoint unreachable: {exc}") from exc
        except google.auth.exceptions.RefreshError as exc:
            if exc.retryable:
                raise RetryLater(PROVIDER, f"token endpoint failed: {exc}") from exc
            raise Rejected(PROVIDER, f"the service account was refused a token: {exc}") from exc
        token = self._credentials.token
        if not isinstance(token, str) or not token:
            raise Rejected(PROVIDER, "the token endpoint answered without an access token")
        expiry = self._credentials.expiry
        if not isinstance(expiry, datetime):
            return token, _ASSUMED_LIFETIME
        if expiry.tzinfo is None:  # google-auth keeps naive UTC times
            expiry = expiry.replace(tzinfo=UTC)
        return token, max(0.0, (expiry - datetime.now(UTC)).total_seconds())
