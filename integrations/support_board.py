"""Instagram, Facebook and dashboard messages through Support Board's Web API.

Everything is one ``POST`` to ``include/api.php``, form-encoded: an admin ``token`` (no other
kind is accepted), the ``function`` and its arguments, arrays as JSON text. Support Board
answers HTTP 200 for nearly every outcome, so the body decides: success is only
``{"success": true, "response": ...}``; a validation failure is ``{"success": false,
"response": "<code>"}`` and an error ``{"status": "error", "response": "<code>", ...}``
without any ``success`` key.

Addresses (``OutboundMessage.to``):

* ``"<conversation_id>:<user_id>"``: ``send-message`` adds the message to the conversation
  as ``user_id`` (the sender; empty or left out means the bot, ``bot_user_id``), where it
  shows in the dashboard and the web chat.
* ``"messenger:<psid>:<page_id>"``: ``messenger-send-message`` delivers it to the Facebook or
  Instagram user through the page.

Watch out for:

* ``send-message`` creates a new message every time it is called; there is no idempotency
  key. A 5xx may come after the message was stored, so it is ``RetryLater`` with
  ``maybe_delivered`` (503, "not now", is the exception).
* Messages sent as the bot come back through the ``message-sent`` webhook; ``is_bot_echo``
  spots them so the webhook does not answer ourselves.
* ``messenger-send-message`` passes on what Facebook answered, errors included, inside a
  ``success: true`` envelope.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from domain.channels import ChannelName
from integrations.channels import OutboundMessage, Receipt
from integrations.errors import NotFound, Rejected, RetryLater
from integrations.http import send as http_send

PROVIDER = "support_board"
_NO_ATTACHMENTS = json.dumps([])
_MESSENGER = "messenger"


def is_bot_echo(payload: dict[str, Any], bot_user_id: str) -> bool:
    """True for the ``message-sent`` webhook of a message our bot sent (ignore it).

    The payload carries no sender type, only the sender's ``user_id``; ids are compared as
    text because Support Board sends them as numbers or strings depending on the path.
    """
    if not bot_user_id or payload.get("function") != "message-sent":
        return False
    data = payload.get("data")
    if not isinstance(data, dict):
        return False
    sender = data.get("user_id")
    return sender is not None and str(sender).strip() == str(bot_user_id).strip()


def _failure(body: object) -> str:
    """What a failed envelope says, for a person reading the error."""
    if isinstance(body, dict):
        parts = [str(body[key]) for key in ("response", "message") if body.get(key)]
        if parts:
            return ": ".join(parts)
    return json.dumps(body)[:300]


def _message_id(result: object) -> str:
    """``send-message`` answers ``{"id": ...}``; Messenger a list of ``{"message_id": ...}``."""
    first = result[0] if isinstance(result, list) and result else result
    if isinstance(first, dict):
        for key in ("id", "message_id", "message-id"):
            value = first.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return str(value)
    return ""


class SupportBoardChannel:
    """One Support Board installation, as its admin token."""

    name = ChannelName.support_board

    def __init__(
        self, url: str, token: str, *, bot_user_id: str = "", timeout: float = 20.0
    ) -> None:
        """``url`` is the ``include/api.php`` URL, ``token`` an admin token (the API accepts
        no other), ``bot_user_id`` the user messages are sent as when no sender is named."""
        if not (url and token):
            raise ValueError("Support Board needs its include/api.php URL and an admin token")
        self._url = url
        self._token = token
        self._bot_user_id = bot_user_id
        self._http = httpx.AsyncClient(timeout=timeout)

    async def send(self, message: OutboundMessage) -> Receipt:
        """One request, never retried here. The receipt carries Support Board's message id,
        or the idempotency key when the answer has none."""
        fields = self._arguments(message)
        function = fields["function"]
        form = {"token": self._token, **fields}
        try:
            response = await http_send(PROVIDER, lambda: self._http.post(self._url, data=form))
        except RetryLater as exc:
            if exc.status is None or exc.status < 500 or exc.status == 503:
                raise
            raise RetryLater(
                PROVIDER,
                f"{function}: HTTP {exc.status}, after which the message may be stored",
                status=exc.status,
                body=exc.body,
                retry_after=exc.retry_after,
                maybe_delivered=True,
            ) from exc
        except NotFound as exc:
            # Support Board reports its own failures with HTTP 200: a 404 is a wrong URL.
            raise Rejected(
                PROVIDER,
                f"{function}: HTTP 404; is {self._url} the include/api.php URL?",
                status=exc.status,
                body=exc.body,
            ) from exc
        common: dict[str, Any] = {"status": response.status_code, "body": response.text[:2000]}
        try:
            body = response.json()
        except ValueError as exc:
            raise Rejected(
                PROVIDER, f"{function}: the answer is not JSON: {response.text[:300]}", **common
            ) from exc
        if not isinstance(body, dict) or body.get("success") is not True:
            raise Rejected(PROVIDER, f"{function} failed: {_failure(body)}", **common)
        result = body.get("response")
        for item in result if isinstance(result, list) else [result]:
            error = item.get("error") if isinstance(item, dict) else None
            if isinstance(error, dict):
                reason = f"{function}: Facebook refused it: {error.get('message', error)}"
                if error.get("is_transient") is True:
                    raise RetryLater(PROVIDER, reason, **common)
                raise Rejected(PROVIDER, reason, **common)
        return Receipt(
            provider_message_id=_message_id(result) or message.idempotency_key, status="sent"
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _arguments(self, message: OutboundMessage) -> dict[str, str]:
        if not message.text:
            raise Rejected(PROVIDER, "nothing to send: the text is empty")
        parts = message.to.split(":")
        if parts[0] == _MESSENGER:
            if len(parts) != 3 or not all(parts):
                raise Rejected(PROVIDER, f"{message.to!r} is not messenger:<psid>:<page_id>")
            return {
                "function": "messenger-send-message",
                "psid": parts[1],
                "facebook_page_id": parts[2],
                "message": message.text,
                "attachments": _NO_ATTACHMENTS,
            }
        if len(parts) > 2 or not parts[0]:
            raise Rejected(PROVIDER, f"{message.to!r} is not <conversation_id>:<user_id>")
        sender = parts[1] if len(parts) == 2 and parts[1] else self._bot_user_id
        if not sender:
            raise Rejected(
                PROVIDER,
                f"no sender for {message.to!r}: address it as <conversation_id>:<user_id> "
                "or set NUDGE_SUPPORT_BOARD__BOT_USER_ID",
            )
        return {
            "function": "send-message",
            "user_id": sender,
            "conversation_id": parts[0],
            "message": message.text,
            "attachments": _NO_ATTACHMENTS,
        }
