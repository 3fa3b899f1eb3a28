"""A fake Support Board ``include/api.php`` for the two send functions, over real HTTP.

Like the real one it reads form fields only (a JSON body leaves them empty), accepts admin
tokens only, answers its own errors with HTTP 200 as ``{"status": "error", "response":
"<code>", "message": ...}`` (no ``success`` key), and wraps results as ``{"success": true,
"response": ...}``. It is stricter than Support Board in one way: an ``attachments``
argument that is not a JSON array is refused, where the real one quietly reads it as null.

Every accepted ``send-message`` also produces the ``message-sent`` webhook payload Support
Board would POST (``webhooks``), so echo filtering is tested against what was really sent.

State is touched from the test's thread and from the server's thread, hence the lock.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

REQUIRED_ARGUMENTS = {
    "send-message": ("user_id", "conversation_id"),
    "messenger-send-message": ("psid", "facebook_page_id"),
}


def _error(code: str, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "response": code, "message": message})


@dataclass
class _Fault:
    status: int
    body: dict[str, Any] | list[Any] | str | None
    times: int

    def response(self) -> Response:
        if isinstance(self.body, dict | list):
            return JSONResponse(self.body, self.status)
        text = self.body if self.body is not None else "<b>Fatal error</b>: injected"
        return PlainTextResponse(text, self.status)


class FakeSupportBoard:
    def __init__(
        self,
        *,
        admin_token: str = "sb-admin-token",
        agent_token: str = "sb-agent-token",
        webhook_key: str = "sb-webhook-key",
    ) -> None:
        self.admin_token = admin_token
        self.agent_token = agent_token
        """A valid token of a non-admin user: the API refuses it like any wrong token."""
        self.webhook_key = webhook_key
        self.calls: list[dict[str, str]] = []
        """The form fields of every request, exactly as received, refused ones included."""
        self.messages: list[dict[str, str]] = []
        """The arguments (token left out) of every accepted send."""
        self.webhooks: list[dict[str, Any]] = []
        """The ``message-sent`` payload of every accepted ``send-message``."""
        self.customers: dict[str, str] = {}
        """conversation_id -> the customer's user id, for ``conversation_user_id``."""
        self._next_id = 1000
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self.app = FastAPI()
        self.app.add_api_route("/include/api.php", self._api, methods=["POST"])

    def fail_next(
        self,
        status: int = 500,
        body: dict[str, Any] | list[Any] | str | None = None,
        *,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` and ``body`` (JSON unless a
        string) and do nothing else, e.g. ``fail_next(200, {"success": False, ...})``."""
        with self._lock:
            self._faults.append(_Fault(status, body, times))

    async def _api(self, request: Request) -> Response:
        form: dict[str, str] = {}
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            parsed = parse_qs((await request.body()).decode(), keep_blank_values=True)
            form = {key: values[-1] for key, values in parsed.items()}  # PHP keeps the last
        with self._lock:
            self.calls.append(dict(form))
            fault = self._take_fault()
        if fault is not None:
            return fault.response()
        function = form.get("function")
        if function is None:
            return _error("missing-function-name", "Function name is required.")
        if function not in REQUIRED_ARGUMENTS:
            return _error("function-not-found", f"Function {function} not found.")
        if "token" not in form:
            return _error("token-not-found", "Admin token is required.")
        if form["token"] != self.admin_token:
            return _error("invalid-token", "Use an admin user token.")
        for argument in REQUIRED_ARGUMENTS[function]:
            if argument not in form:
                return _error("missing-argument", f"Missing argument: {argument}")
        try:
            attachments = json.loads(form.get("attachments", "[]"))
        except ValueError:
            attachments = None
        if not isinstance(attachments, list):
            return _error("invalid-argument", "attachments must be a JSON array (fake's rule)")
        arguments = {key: value for key, value in form.items() if key != "token"}
        with self._lock:
            self.messages.append(arguments)
            message_id = self._next_id
            self._next_id += 1
            if function == "send-message":
                self.webhooks.append(self._message_sent(form, message_id, attachments))
        if function == "send-message":
            result: object = {
                "id": message_id,
                "queue": False,
                "human_takeover_active": False,
                "notifications": [],
                "message": form.get("message", ""),
            }
        else:  # Facebook's own answer, one per message sent
            result = [{"recipient_id": form["psid"], "message_id": f"m_{secrets.token_hex(12)}"}]
        return JSONResponse({"success": True, "response": result})

    def _message_sent(
        self, form: dict[str, str], message_id: int, attachments: list[Any]
    ) -> dict[str, Any]:
        conversation_id = form["conversation_id"]
        return {
            "function": "message-sent",
            "key": self.webhook_key,
            "data": {
                "user_id": form["user_id"],
                "message_id": message_id,
                "message": form.get("message", ""),
                "attachments": attachments,
                "conversation_user_id": self.customers.get(conversation_id, ""),
                "conversation_id": conversation_id,
                "conversation_status_code": 1,
                "conversation_source": "",
            },
            "sender-url": "",
        }

    def _take_fault(self) -> _Fault | None:
        if not self._faults:
            return None
        fault = self._faults[0]
        fault.times -= 1
        if fault.times <= 0:
            self._faults.pop(0)
        return fault
