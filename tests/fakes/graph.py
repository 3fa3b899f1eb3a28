"""A fake Graph API for the WhatsApp Cloud ``/messages`` endpoint, plus webhook builders.

``POST /{version}/{phone_number_id}/messages`` insists on what Meta insists on: a Bearer
token (else 401, code 190), ``messaging_product: "whatsapp"``, a recipient, and a well-formed
``text`` / ``interactive`` / ``template`` object within the documented limits (else 400,
code 100). Failures use Graph's ``{"error": {"message", "type", "code", "error_data",
"fbtrace_id"}}`` body and, like Graph, mostly HTTP 400 whatever the cause.

The builders make webhook deliveries in the documented shape so tests can drive our
webhook routes; ``encode`` gives the raw bytes and ``sign`` their ``X-Hub-Signature-256``,
computed here with a hand-written HMAC so that it shares no code with the verifier.

State is touched from the test's thread and from the server's thread, hence the lock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.fakes.server import HoldAfterAccept

_BODY_MAX = 1024
_TEXT_MAX = 4096
_BUTTON_TITLE_MAX = 20
_MAX_BUTTONS = 3
_ROW_TITLE_MAX = 24
_ROW_DESCRIPTION_MAX = 72
_ROW_ID_MAX = 200
_MAX_ROWS = 10
_MAX_SECTIONS = 10
_HEADER_FOOTER_MAX = 60


class _Invalid(Exception):
    """The request is not one Graph would accept (code 100)."""


def graph_error(
    http_status: int, code: int, message: str, details: str = "", type_: str = "OAuthException"
) -> JSONResponse:
    error: dict[str, Any] = {
        "message": f"(#{code}) {message}",
        "type": type_,
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details or message},
        "fbtrace_id": "A" + secrets.token_urlsafe(16),
    }
    return JSONResponse({"error": error}, http_status)


@dataclass
class _Fault:
    http_status: int
    code: int
    times: int
    message: str


def _text(value: object, where: str, limit: int, *, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        raise _Invalid(f"{where} must be a non-empty string")
    if len(value) > limit:
        raise _Invalid(f"{where} is longer than {limit} characters")


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"{where} must be an object")
    return value


def _check_text(body: dict[str, Any]) -> None:
    text = _object(body.get("text"), "text")
    _text(text.get("body"), "text.body", _TEXT_MAX)
    if not isinstance(text.get("preview_url", False), bool):
        raise _Invalid("text.preview_url must be a boolean")


def _check_interactive(body: dict[str, Any]) -> None:
    interactive = _object(body.get("interactive"), "interactive")
    _text(_object(interactive.get("body"), "interactive.body").get("text"), "body.text", _BODY_MAX)
    if "footer" in interactive:
        footer = _object(interactive["footer"], "interactive.footer")
        _text(footer.get("text"), "footer.text", _HEADER_FOOTER_MAX)
    action = _object(interactive.get("action"), "interactive.action")
    kind = interactive.get("type")
    if kind == "button":
        if "header" in interactive:
            _object(interactive["header"], "interactive.header")
        buttons = action.get("buttons")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= _MAX_BUTTONS:
            raise _Invalid(f"action.buttons must hold 1 to {_MAX_BUTTONS} buttons")
        for n, button in enumerate(buttons):
            button = _object(button, f"buttons[{n}]")
            if button.get("type") != "reply":
                raise _Invalid(f"buttons[{n}].type must be reply")
            reply = _object(button.get("reply"), f"buttons[{n}].reply")
            _text(reply.get("id"), f"buttons[{n}].reply.id", 256)
            _text(reply.get("title"), f"buttons[{n}].reply.title", _BUTTON_TITLE_MAX)
    elif kind == "list":
        if "header" in interactive:
            header = _object(interactive["header"], "interactive.header")
            if header.get("type") != "text":
                raise _Invalid("a list header must be of type text")
            _text(header.get("text"), "header.text", _HEADER_FOOTER_MAX)
        _text(action.get("button"), "action.button", _BUTTON_TITLE_MAX)
        sections = action.get("sections")
        if not isinstance(sections, list) or not 1 <= len(sections) <= _MAX_SECTIONS:
            raise _Invalid(f"action.sections must hold 1 to {_MAX_SECTIONS} sections")
        rows = 0
        for n, section in enumerate(sections):
            section = _object(section, f"sections[{n}]")
            _text(section.get("title"), f"sections[{n}].title", 24, required=len(sections) > 1)
            section_rows = section.get("rows")
            if not isinstance(section_rows, list) or not section_rows:
                raise _Invalid(f"sections[{n}].rows must be a non-empty array")
            for r, row in enumerate(section_rows):
                row = _object(row, f"sections[{n}].rows[{r}]")
                _text(row.get("id"), f"rows[{r}].id", _ROW_ID_MAX)
                _text(row.get("title"), f"rows[{r}].title", _ROW_TITLE_MAX)
                _text(
                    row.get("description"),
                    f"rows[{r}].description",
                    _ROW_DESCRIPTION_MAX,
                    required=False,
                )
            rows += len(section_rows)
        if rows > _MAX_ROWS:
            raise _Invalid(f"a list holds at most {_MAX_ROWS} rows across all sections")
    else:
        raise _Invalid("interactive.type must be button or list")


def _check_template(body: dict[str, Any]) -> None:
    template = _object(body.get("template"), "template")
    _text(template.get("name"), "template.name", 512)
    language = _object(template.get("language"), "template.language")
    _text(language.get("code"), "template.language.code", 15)
    components = template.get("components", [])
    if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
        raise _Invalid("template.components must be an array of objects")
    for n, component in enumerate(components):
        if component.get("type") not in ("header", "body", "button"):
            raise _Invalid(f"template.components[{n}].type must be header, body or button")


_CHECKS = {"text": _check_text, "interactive": _check_interactive, "template": _check_template}


def _hmac_sha256_hex(key: bytes, message: bytes) -> str:
    """RFC 2104 by hand, so the fake's signatures do not share code with the verifier."""
    block = 64
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    inner = hashlib.sha256(bytes(k ^ 0x36 for k in key) + message).digest()
    return hashlib.sha256(bytes(k ^ 0x5C for k in key) + inner).hexdigest()


class FakeGraph:
    def __init__(
        self,
        token: str = "graph-test-token",
        phone_number_id: str = "106540352242922",
        *,
        display_phone_number: str = "15550783881",
        waba_id: str = "102290129340398",
    ) -> None:
        self.token = token
        self.phone_number_id = phone_number_id
        self.display_phone_number = display_phone_number
        self.waba_id = waba_id
        self.sent: list[dict[str, Any]] = []
        """Every accepted request body, exactly as received."""
        self.on_send: Callable[[dict[str, Any]], None] | None = None
        """Called with each accepted body (a benchmark in another process listens here)."""
        self.hold = HoldAfterAccept()
        """``hold.hold_next(seconds)``: answer the next accepted send late."""
        self.outside_window: set[str] = set()
        """Recipients (``to`` as sent) whose 24-hour window is closed: only templates pass."""
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self.app = FastAPI()
        self.app.add_api_route(
            "/{version}/{phone_number_id}/messages", self._messages, methods=["POST"]
        )

    # -- scripting -------------------------------------------------------------------------

    def fail_next(
        self,
        http_status: int,
        code: int,
        times: int = 1,
        message: str = "Injected failure",
    ) -> None:
        """Answer the next ``times`` sends with this Graph error, recording nothing."""
        with self._lock:
            self._faults.append(_Fault(http_status, code, times, message))

    # -- the API ---------------------------------------------------------------------------

    async def _messages(self, version: str, phone_number_id: str, request: Request) -> JSONResponse:
        with self._lock:
            fault = self._faults[0] if self._faults else None
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.pop(0)
        if fault is not None:
            return graph_error(fault.http_status, fault.code, fault.message)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return graph_error(
                401,
                190,
                "Error validating access token: the session is invalid",
                type_="OAuthException",
            )
        if phone_number_id != self.phone_number_id:
            return graph_error(
                400,
                100,
                f"Unsupported post request. Object with ID '{phone_number_id}' does not exist",
                type_="GraphMethodException",
            )
        try:
            body = json.loads(await request.body())
            body = _object(body, "the request body")
            if body.get("messaging_product") != "whatsapp":
                raise _Invalid("messaging_product must be whatsapp")
            if body.get("recipient_type", "individual") != "individual":
                raise _Invalid("recipient_type must be individual")
            to = body.get("to")
            _text(to, "to", 64)
            kind = body.get("type", "text")
            check = _CHECKS.get(kind)
            if check is None:
                raise _Invalid(f"type {kind!r} is not supported by this fake")
            check(body)
        except (_Invalid, json.JSONDecodeError, UnicodeDecodeError) as exc:
            return graph_error(400, 100, "Invalid parameter", str(exc))
        assert isinstance(to, str)
        if kind != "template" and to in self.outside_window:
            return graph_error(
                400,
                131047,
                "Re-engagement message",
                "Message failed to send because more than 24 hours have passed since the"
                " customer last replied to this number.",
            )
        wamid = self.new_wamid()
        with self._lock:
            self.sent.append(body)
        if self.on_send is not None:
            self.on_send(body)
        await self.hold.accepted_then_maybe_hold()
        sent: dict[str, Any] = {"id": wamid}
        if kind == "template":
            sent["message_status"] = "accepted"
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
                "messages": [sent],
            }
        )

    # -- webhook deliveries ------------------------------------------------------------------

    @staticmethod
    def new_wamid() -> str:
        return "wamid." + base64.b64encode(secrets.token_bytes(24)).decode()

    def inbound(
        self,
        from_: str,
        type_: str,
        content: dict[str, Any] | None = None,
        *,
        wamid: str | None = None,
        name: str = "Sheena Nelson",
        timestamp: datetime | None = None,
        context_wamid: str | None = None,
    ) -> dict[str, Any]:
        """A one-message delivery of any type; ``content`` goes under the key ``type_``."""
        message: dict[str, Any] = {
            "from": from_,
            "id": wamid or self.new_wamid(),
            "timestamp": _epoch(timestamp),
            "type": type_,
        }
        if content is not None:
            message[type_] = content
        if context_wamid is not None:
            message["context"] = {"from": self.display_phone_number, "id": context_wamid}
        value = {
            **self._value_head(),
            "contacts": [{"profile": {"name": name}, "wa_id": from_}],
            "messages": [message],
        }
        return self._delivery(value)

    def inbound_text(
        self, from_: str, text: str, wamid: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        return self.inbound(from_, "text", {"body": text}, wamid=wamid, **kwargs)

    def inbound_button_reply(
        self,
        from_: str,
        button_id: str,
        title: str,
        wamid: str | None = None,
        *,
        context_wamid: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """A tap on a reply button of an interactive message we sent."""
        content = {"type": "button_reply", "button_reply": {"id": button_id, "title": title}}
        return self.inbound(
            from_,
            "interactive",
            content,
            wamid=wamid,
            context_wamid=context_wamid or self.new_wamid(),
            **kwargs,
        )

    def inbound_list_reply(
        self,
        from_: str,
        row_id: str,
        title: str,
        description: str = "",
        wamid: str | None = None,
        *,
        context_wamid: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """A row chosen in an interactive list message we sent."""
        row = {"id": row_id, "title": title}
        if description:
            row["description"] = description
        return self.inbound(
            from_,
            "interactive",
            {"type": "list_reply", "list_reply": row},
            wamid=wamid,
            context_wamid=context_wamid or self.new_wamid(),
            **kwargs,
        )

    def inbound_quick_reply(
        self,
        from_: str,
        payload: str,
        text: str,
        wamid: str | None = None,
        *,
        context_wamid: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """A tap on a template's quick-reply button: ``type: "button"``, not interactive."""
        return self.inbound(
            from_,
            "button",
            {"payload": payload, "text": text},
            wamid=wamid,
            context_wamid=context_wamid or self.new_wamid(),
            **kwargs,
        )

    def status(
        self,
        wamid: str,
        status: str,
        recipient: str,
        *,
        timestamp: datetime | None = None,
        error_code: int | None = None,
        error_title: str = "",
    ) -> dict[str, Any]:
        """A status change of a message we sent; ``error_code`` makes it carry ``errors``."""
        update: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": _epoch(timestamp),
            "recipient_id": recipient.lstrip("+"),
        }
        if status != "failed":
            update["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "utility"}
        if error_code is not None:
            update["errors"] = [
                {
                    "code": error_code,
                    "title": error_title,
                    "message": error_title,
                    "error_data": {"details": error_title},
                    "href": "/documentation/business-messaging/whatsapp/support/error-codes",
                }
            ]
        return self._delivery({**self._value_head(), "statuses": [update]})

    @staticmethod
    def batch(*deliveries: dict[str, Any]) -> dict[str, Any]:
        """Several deliveries (or bare entries) as one POST, the way Meta batches them."""
        entries: list[dict[str, Any]] = []
        for item in deliveries:
            entries.extend(item["entry"] if "entry" in item else [item])
        return {"object": "whatsapp_business_account", "entry": entries}

    @staticmethod
    def encode(payload: dict[str, Any]) -> bytes:
        """The raw body as Meta sends it: compact, non-ASCII escaped as ``\\uXXXX``."""
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()

    @staticmethod
    def sign(app_secret: str, raw_body: bytes) -> str:
        """The ``X-Hub-Signature-256`` header value for ``raw_body``."""
        return "sha256=" + _hmac_sha256_hex(app_secret.encode(), raw_body)

    def signed(self, payload: dict[str, Any], app_secret: str) -> tuple[bytes, dict[str, str]]:
        """(raw body, headers) of a delivery, ready to POST to our webhook."""
        raw = self.encode(payload)
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": self.sign(app_secret, raw),
        }
        return raw, headers

    def _value_head(self) -> dict[str, Any]:
        return {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": self.display_phone_number,
                "phone_number_id": self.phone_number_id,
            },
        }

    def _delivery(self, value: dict[str, Any]) -> dict[str, Any]:
        entry = {"id": self.waba_id, "changes": [{"value": value, "field": "messages"}]}
        return {"object": "whatsapp_business_account", "entry": [entry]}


def _epoch(when: datetime | None) -> str:
    return str(int((when or datetime.now(UTC)).timestamp()))
