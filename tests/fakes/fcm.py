"""A fake FCM HTTP v1 with its own OAuth token endpoint, over real HTTP.

The service-account file it writes (``service_account_file``) holds a fresh RSA key and a
``token_uri`` pointing at this fake, so google-auth's real JWT-bearer exchange runs: ``POST
/token`` checks the JWT's signature against that key and its claims as Google does, and
issues access tokens that ``messages:send`` then insists on. Tokens expire server-side after
``token_lifetime`` seconds, and ``revoke_tokens`` kills them early.

Sends follow the REST reference: ``{"name": "projects/{p}/messages/{id}"}`` on success, and
``{"error": {"code", "message", "status", "details": [FcmError]}}`` on failure, with the
``data`` map of strings enforced as FCM enforces it.

State is touched from the test's thread and from the server's thread, hence the lock.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
"""google-auth always signs for Google's endpoint, whatever the file's ``token_uri`` says."""
ACCEPTED_SCOPES = {
    "https://www.googleapis.com/auth/firebase.messaging",
    "https://www.googleapis.com/auth/cloud-platform",
}
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_FCM_ERROR_CODES = {
    "UNSPECIFIED_ERROR": "UNKNOWN",
    "INVALID_ARGUMENT": "INVALID_ARGUMENT",
    "UNREGISTERED": "NOT_FOUND",
    "SENDER_ID_MISMATCH": "PERMISSION_DENIED",
    "QUOTA_EXCEEDED": "RESOURCE_EXHAUSTED",
    "UNAVAILABLE": "UNAVAILABLE",
    "INTERNAL": "INTERNAL",
    "THIRD_PARTY_AUTH_ERROR": "UNAUTHENTICATED",
}
"""FCM ``errorCode`` -> the RPC ``status`` it comes with."""
_MESSAGE_FIELDS = {
    "name", "data", "notification", "android", "webpush", "apns", "fcm_options",
    "token", "topic", "condition",
}  # fmt: skip
_TARGETS = ("token", "topic", "condition")


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def error_response(
    status: int, error_status: str, message: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Google's error envelope; an FCM ``errorCode`` adds the ``FcmError`` detail."""
    rpc_status = _FCM_ERROR_CODES.get(error_status, error_status)
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
    if error_status in _FCM_ERROR_CODES:
        error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": error_status}]
    return JSONResponse({"error": error}, status, headers=headers)


@dataclass
class _Fault:
    status: int
    error_status: str
    times: int
    retry_after: str | None


class FakeFcm:
    def __init__(self, project_id: str = "nudge-test", *, token_lifetime: int = 3600) -> None:
        self.project_id = project_id
        self.client_email = f"nudge-push@{project_id}.iam.gserviceaccount.com"
        self.private_key_id = secrets.token_hex(20)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.token_lifetime = token_lifetime
        self.unregistered: set[str] = set()
        """Device tokens that answer 404 ``UNREGISTERED``."""
        self.sends: list[dict[str, Any]] = []
        """The body of every accepted send, exactly as received."""
        self.send_statuses: list[int] = []
        """The HTTP status of every request to ``messages:send``, refused ones included."""
        self.tokens_issued = 0
        self.token_requests = 0
        self._tokens: dict[str, float] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self.app = self._build_app()

    # -- scripting -------------------------------------------------------------------------

    def service_account_file(self, directory: Path, token_uri: str) -> Path:
        """Write a service-account key file whose key this fake verifies JWTs against."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        info = {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": pem,
            "client_email": self.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        }
        path = directory / f"{self.project_id}-service-account.json"
        path.write_text(json.dumps(info, indent=2), encoding="utf-8")
        return path

    def fail_next(
        self, status: int, error_status: str, times: int = 1, *, retry_after: str | None = None
    ) -> None:
        """Answer the next ``times`` authorised sends with ``status``.

        ``error_status`` is an FCM ``errorCode`` (``UNAVAILABLE``, ``QUOTA_EXCEEDED``,
        ``THIRD_PARTY_AUTH_ERROR`` ...; the RPC status is derived) or a bare RPC status
        (``UNAUTHENTICATED``, ``PERMISSION_DENIED`` ...) sent without an FCM detail.
        """
        with self._lock:
            self._faults.append(_Fault(status, error_status, times, retry_after))

    def issue_token(self) -> str:
        """An access token as ``/token`` would issue it, for calling the fake directly."""
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
            self.tokens_issued += 1
        return token

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (as after a key rotation)."""
        with self._lock:
            self._tokens.clear()

    # -- the API ---------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI()
        app.add_api_route("/token", self._token, methods=["POST"])
        app.add_api_route("/v1/projects/{project}/messages:send", self._send, methods=["POST"])
        return app

    async def _token(self, request: Request) -> JSONResponse:
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        with self._lock:
            self.token_requests += 1
        if form.get("grant_type") != JWT_BEARER:
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."},
                400,
            )
        problem = self._assertion_problem(form.get("assertion", ""))
        if problem is not None:
            error, description = problem
            return JSONResponse({"error": error, "error_description": description}, 400)
        token = self.issue_token()
        return JSONResponse(
            {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    async def _send(self, project: str, request: Request) -> JSONResponse:
        response = self._answer(project, await request.body(), request.headers)
        with self._lock:
            self.send_statuses.append(response.status_code)
        return response

    # -- helpers ---------------------------------------------------------------------------

    def _assertion_problem(self, assertion: str) -> tuple[str, str] | None:
        """(error, description) as Google's token endpoint words them, or None if valid."""
        try:
            header_part, claims_part, signature_part = assertion.split(".")
            header = json.loads(_b64url_decode(header_part))
            claims = json.loads(_b64url_decode(claims_part))
            signature = _b64url_decode(signature_part)
        except (ValueError, binascii.Error):
            return "invalid_grant", "Invalid JWT: malformed."
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return "invalid_grant", "Invalid JWT: malformed."
        if header.get("alg") != "RS256" or header.get("kid") != self.private_key_id:
            return "invalid_grant", "Invalid JWT Signature."
        try:
            self._key.public_key().verify(
                signature,
                f"{header_part}.{claims_part}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return "invalid_grant", "Invalid JWT Signature."
        if claims.get("iss") != self.client_email:
            return "invalid_grant", "Invalid JWT: unknown issuer."
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            return "invalid_grant", "Invalid JWT: audience is not the token endpoint."
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            return "invalid_grant", "Invalid JWT: iat and exp are required."
        if not (iat - 300 <= now < exp) or exp - iat > 3600:
            return "invalid_grant", (
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim."
            )
        if not ACCEPTED_SCOPES & set(str(claims.get("scope", "")).split()):
            return "invalid_scope", "The scope does not allow sending messages."
        return None

    def _answer(self, project: str, raw: bytes, headers: Mapping[str, str]) -> JSONResponse:
        with self._lock:
            scheme, _, token = headers.get("Authorization", "").partition(" ")
            expires = self._tokens.get(token) if scheme == "Bearer" else None
            if expires is None or time.monotonic() >= expires:
                return error_response(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential.",
                    headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
                )
            fault = self._take_fault()
        if fault is not None:
            retry = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            return error_response(
                fault.status, fault.error_status, f"injected {fault.error_status}", headers=retry
            )
        if project != self.project_id:
            return error_response(
                403,
                "PERMISSION_DENIED",
                f"Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{project}' "
                "(or it may not exist).",
            )
        try:
            body = json.loads(raw)
        except ValueError:
            return error_response(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        problem = _message_problem(body)
        if problem is not None:
            return error_response(400, "INVALID_ARGUMENT", problem)
        with self._lock:
            if body["message"].get("token") in self.unregistered:
                return error_response(404, "UNREGISTERED", "Requested entity was not found.")
            self.sends.append(body)
            number = len(self.sends)
        return JSONResponse(
            {"name": f"projects/{self.project_id}/messages/0:{number}%{secrets.token_hex(8)}"}
        )

    def _take_fault(self) -> _Fault | None:
        if not self._faults:
            return None
        fault = self._faults[0]
        fault.times -= 1
        if fault.times <= 0:
            self._faults.pop(0)
        return fault


def _message_problem(body: object) -> str | None:
    """What FCM would say about a malformed ``SendMessageRequest``, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        return "Invalid JSON payload received. 'message' is required and must be an object."
    for name in body:
        if name not in ("message", "validate_only"):
            return f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
    message: dict[str, Any] = body["message"]
    for name in message:
        if name not in _MESSAGE_FIELDS:
            return (
                f"Invalid JSON payload received. Unknown name \"{name}\" at 'message': "
                "Cannot find field."
            )
    targets = [t for t in _TARGETS if message.get(t)]
    if not targets:
        return "Recipient of the message is not set."
    if len(targets) > 1:
        return "Invalid JSON payload received. Oneof field 'target' is already set."
    data = message.get("data", {})
    if not isinstance(data, dict):
        return "Invalid value at 'message.data' (type.googleapis.com/Map), must be an object"
    for index, value in enumerate(data.values()):
        if not isinstance(value, str):
            return (
                f"Invalid value at 'message.data[{index}].value' (TYPE_STRING), {json.dumps(value)}"
            )
    notification = message.get("notification", {})
    if not isinstance(notification, dict):
        return "Invalid value at 'message.notification', must be an object"
    for field, value in notification.items():
        if field not in ("title", "body", "image") or not isinstance(value, str):
            return f"Invalid value at 'message.notification.{field}' (TYPE_STRING)"
    return None
