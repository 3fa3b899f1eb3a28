"""Re:amaze API v1: the few operations a follow-up needs, typed.

Every request goes through ``integrations.http.send``, so callers only ever see
``RetryLater`` / ``Rejected`` / ``NotFound``. Lists are read to their last page (the original script read
page 1 only and never saw the 31st tagged conversation), and messages are sorted by
``created_at`` because Re:amaze does not document their order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from domain.addresses import is_reamaze_slug
from domain.channels import ChannelName
from integrations.channels import OutboundMessage, Receipt
from integrations.errors import Rejected
from integrations.http import HttpClient, send

PROVIDER = "reamaze"


class _Model(BaseModel):
    # Re:amaze responses carry many more fields than we read; new ones must not break us.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _utc_if_naive(value: datetime) -> datetime:
    """Re:amaze sends offsets; a bare timestamp would make sorting raise, so assume UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class ReamazeUser(_Model):
    name: str | None = None
    email: str | None = None
    staff: bool | None = Field(default=None, alias="staff?")
    bot: bool | None = Field(default=None, alias="bot?")
    customer: bool | None = Field(default=None, alias="customer?")


class ReamazeMessage(_Model):
    body: str = ""
    visibility: int = 0
    """0 regular, 1 internal note, 2 collision-detected message."""
    origin_id: str | None = None
    created_at: datetime
    user: ReamazeUser | None = None

    @field_validator("body", mode="before")
    @classmethod
    def _null_body_is_empty(cls, value: object) -> object:
        # Attachment-only messages may come without a body.
        return "" if value is None else value

    @field_validator("visibility", mode="before")
    @classmethod
    def _null_visibility_is_regular(cls, value: object) -> object:
        return 0 if value is None else value

    @field_validator("origin_id", mode="before")
    @classmethod
    def _origin_id_as_text(cls, value: object) -> object:
        # Ids set by other integrations can be numeric; we only ever compare them as text.
        return str(value) if isinstance(value, int) else value

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return _utc_if_naive(value)


class ReamazeConversation(_Model):
    slug: str
    subject: str | None = None
    status: int | None = None
    """0 unresolved, 1 pending, 2 resolved, 3 spam, 4 archived, 5 on hold, 6 auto-resolved, ..."""
    tag_list: list[str] = Field(default_factory=list)
    created_at: datetime | None = None
    author: ReamazeUser | None = None

    @field_validator("tag_list", mode="before")
    @classmethod
    def _null_tags_are_empty(cls, value: object) -> object:
        return [] if value is None else value

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc_if_naive(value)


class _Page(_Model):
    page_count: int

    def __len__(self) -> int:
        raise NotImplementedError


class _ConversationPage(_Page):
    conversations: list[ReamazeConversation]

    def __len__(self) -> int:
        return len(self.conversations)


class _MessagePage(_Page):
    messages: list[ReamazeMessage]

    def __len__(self) -> int:
        return len(self.messages)


M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", bound=_Page)


def _parse(model: type[M], data: object, what: str) -> M:
    """A shape we do not understand will not change on retry, hence ``Rejected``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise Rejected(
            PROVIDER,
            f"unexpected JSON from {what}: {where}: {first['msg']}"
            f" ({exc.error_count()} problem(s))",
            body=str(data)[:2000],
        ) from exc


def _conversation_path(slug: str) -> str:
    # An empty slug would silently address the conversation list instead, and ``..`` (or its
    # encodings) another path of the API: only Re:amaze's own slug alphabet goes in the path.
    if not is_reamaze_slug(slug):
        raise Rejected(PROVIDER, f"not a Re:amaze conversation slug: {slug[:100]!r}")
    return f"/conversations/{quote(slug, safe='')}"


class ReamazeClient(HttpClient):
    """One brand's API as the user whose token it is (posts are attributed to that user).

    ``base_url`` includes the API root, e.g. ``https://{brand}.reamaze.io/api/v1``. It is
    also the ``reamaze`` channel of the send path: a message's ``to`` is the conversation's
    slug, its idempotency key the post's ``origin_id``, and a send whose answer was lost is
    settled by looking for that ``origin_id`` (``find_sent``).
    """

    name = ChannelName.reamaze

    def __init__(
        self,
        base_url: str,
        login_email: str,
        api_token: str,
        *,
        timeout: float = 25.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            auth=httpx.BasicAuth(login_email, api_token),
            # Without it Re:amaze does not answer JSON (the docs' alternative is a .json suffix).
            headers={"Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    async def list_conversations(self, *, tag: str) -> list[ReamazeConversation]:
        """Every (unarchived) conversation with ``tag``, each once.

        A conversation created while we page shifts the others down a page, so the same slug
        can come back twice; the first copy wins.
        """
        found: dict[str, ReamazeConversation] = {}
        async for page in self._pages("/conversations", {"tag": tag}, _ConversationPage):
            for conversation in page.conversations:
                found.setdefault(conversation.slug, conversation)
        return list(found.values())

    async def get_conversation(self, slug: str) -> ReamazeConversation:
        path = _conversation_path(slug)
        return _parse(ReamazeConversation, await self._json("GET", path), f"GET {path}")

    async def list_messages(self, slug: str) -> list[ReamazeMessage]:
        """All messages, oldest first.

        Messages have no id in the API. When they are served newest first, one arriving
        mid-read pushes an already-read message onto the next page; an exact repeat (same
        time, sender, origin id and body) is therefore dropped.
        """
        seen: set[tuple[datetime, str | None, str | None, str]] = set()
        messages: list[ReamazeMessage] = []
        path = f"{_conversation_path(slug)}/messages"
        async for page in self._pages(path, {}, _MessagePage):
            for message in page.messages:
                email = message.user.email if message.user else None
                key = (message.created_at, email, message.origin_id, message.body)
                if key not in seen:
                    seen.add(key)
                    messages.append(message)
        return sorted(messages, key=lambda m: m.created_at)

    async def post_message(
        self, slug: str, body: str, *, origin_id: str, suppress_autoresolve: bool = True
    ) -> ReamazeMessage:
        """Post as the token's user (a staff user).

        ``origin_id`` is what lets a caller find this message again after a send whose answer
        was lost (see ``find_message_by_origin_id``). ``suppress_autoresolve`` defaults to on
        because a staff post otherwise marks the conversation resolved, hiding it from the
        agents the follow-up is meant to help.
        """
        if not origin_id:
            raise ValueError("origin_id is required: it is the only way to recognise a resend")
        path = f"{_conversation_path(slug)}/messages"
        payload = {
            "message": {
                "body": body,
                "origin_id": origin_id,
                "suppress_autoresolve": suppress_autoresolve,
            }
        }
        data = await self._json("POST", path, payload)
        return _parse(ReamazeMessage, data, f"POST {path}")

    async def send(self, message: OutboundMessage) -> Receipt:
        """Post ``message.text`` into the conversation ``message.to``, marked as ours."""
        posted = await self.post_message(
            message.to, message.text, origin_id=message.idempotency_key
        )
        return Receipt(provider_message_id=posted.origin_id or message.idempotency_key)

    async def find_sent(self, message: OutboundMessage) -> Receipt | None:
        found = await self.find_message_by_origin_id(message.to, message.idempotency_key)
        if found is None:
            return None
        return Receipt(provider_message_id=found.origin_id or message.idempotency_key)

    async def update_tags(self, slug: str, tag_list: list[str]) -> ReamazeConversation:
        """Replace the tags: send the full list you want, not the change (PUT semantics)."""
        path = _conversation_path(slug)
        data = await self._json("PUT", path, {"conversation": {"tag_list": list(tag_list)}})
        return _parse(ReamazeConversation, data, f"PUT {path}")

    async def find_message_by_origin_id(self, slug: str, origin_id: str) -> ReamazeMessage | None:
        """Settle a send whose outcome is unknown: if Re:amaze has the message, it was sent."""
        for message in await self.list_messages(slug):
            if message.origin_id == origin_id:
                return message
        return None

    async def _pages(self, path: str, params: dict[str, str], model: type[P]) -> AsyncIterator[P]:
        """Pages 1..``page_count``, re-reading the count each time since it moves as data does."""
        page = 1
        while True:
            what = f"GET {path} page {page}"
            parsed = _parse(
                model, await self._json("GET", path, params={**params, "page": page}), what
            )
            yield parsed
            if page >= parsed.page_count or len(parsed) == 0:
                return
            page += 1

    async def _json(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        params: dict[str, str | int] | None = None,
    ) -> Any:
        response = await send(
            PROVIDER,
            lambda: self._http.request(method, path, params=params, json=payload),
        )
        try:
            return response.json()
        except ValueError as exc:
            raise Rejected(
                PROVIDER,
                f"{method} {path} answered {response.status_code} without JSON"
                f" ({response.headers.get('Content-Type', 'no content type')})",
                status=response.status_code,
                body=response.text[:2000],
            ) from exc
