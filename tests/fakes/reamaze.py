"""A fake Re:amaze API v1 that speaks the documented formats over real HTTP.

Served at the root (``base_url = srv.url``); mount ``.app`` under ``/api/v1`` to mimic the
real host. What it insists on is what the docs say a client must do: Basic auth with
login email and API token, ``Accept: application/json``, JSON bodies on POST/PUT, ``page``
for paging with ``page_size``/``page_count``/``total_count`` in the body. A staff post without
``suppress_autoresolve`` resolves the conversation, as on the real service.

It deliberately does NOT de-duplicate posts by ``origin_id``: every accepted POST is kept in
``posts``, so a test can prove that our side never posts the same follow-up twice. Messages
come back newest first, so a client that assumes ascending order is caught.

State is touched from the test's thread and from the server's thread, hence the lock.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse

# Rendered in a non-UTC offset like the docs' examples, so clients must honour offsets.
_RENDER_ZONE = timezone(timedelta(hours=-7))
_STATUS_RESOLVED = 2
_STATUS_ARCHIVED = 4
_STATUS_ON_HOLD = 5
_STATUSES = range(0, 9)
_CATEGORY = {"name": "Support", "slug": "support", "email": "support@shop.test", "channel": 1}


def _timestamp(value: datetime) -> str:
    return value.astimezone(_RENDER_ZONE).isoformat(timespec="milliseconds")


def _user(name: str, email: str, *, staff: bool, bot: bool) -> dict[str, Any]:
    return {
        "name": name,
        "email": email,
        "staff?": staff,
        "customer?": not staff and not bot,
        "bot?": bot,
    }


@dataclass
class FakeMessage:
    body: str
    created_at: datetime
    user: dict[str, Any]
    visibility: int = 0
    origin_id: str | None = None


@dataclass
class FakeConversation:
    slug: str
    subject: str
    author: dict[str, Any]
    created_at: datetime
    tag_list: list[str]
    status: int = 0
    messages: list[FakeMessage] = field(default_factory=list)


@dataclass
class _Fault:
    method: str
    path_prefix: str
    status: int
    times: int
    retry_after: str | None
    body: dict[str, Any] | None

    def response(self) -> JSONResponse:
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
        body = self.body if self.body is not None else {"error": f"injected {self.status}"}
        return JSONResponse(body, self.status, headers=headers)


class _Reply(Exception):
    """Ends a request early with a ready response (auth, faults), from any depth."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


class FakeReamaze:
    def __init__(
        self, login_email: str = "bot@shop.test", api_token: str = "token", page_size: int = 30
    ) -> None:
        self.login_email = login_email
        self.api_token = api_token
        self.page_size = page_size
        self.conversations: dict[str, FakeConversation] = {}
        self.posts: list[dict[str, Any]] = []
        """Every accepted message POST body, exactly as received, duplicates included."""
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every request that reached a route, refused ones included."""
        self.post_accepted = threading.Event()
        self._post_slugs: list[str] = []
        self._faults: list[_Fault] = []
        self._hold_next_post: float | None = None
        self._clock = datetime.now(UTC)
        self._lock = threading.Lock()
        self.app = self._build_app()

    # -- scripting -------------------------------------------------------------------------

    def add_conversation(
        self,
        slug: str,
        *,
        tags: list[str],
        subject: str = "Question about a plant",
        customer_email: str = "customer@example.com",
    ) -> None:
        with self._lock:
            if slug in self.conversations:
                raise ValueError(f"conversation {slug!r} exists already")
            name = customer_email.split("@")[0]
            self.conversations[slug] = FakeConversation(
                slug=slug,
                subject=subject,
                author=_user(name, customer_email, staff=False, bot=False),
                created_at=self._tick(),
                tag_list=list(tags),
            )

    def add_message(
        self,
        slug: str,
        body: str,
        *,
        email: str,
        name: str = "Customer",
        staff: bool = False,
        bot: bool = False,
        created_at: datetime | None = None,
        origin_id: str | None = None,
    ) -> None:
        """Without ``created_at`` each message is strictly later than the previous one."""
        with self._lock:
            when = self._tick() if created_at is None else created_at
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            self.conversations[slug].messages.append(
                FakeMessage(
                    body=body,
                    created_at=when,
                    user=_user(name, email, staff=staff, bot=bot),
                    origin_id=origin_id,
                )
            )

    def set_tags(self, slug: str, tags: list[str]) -> None:
        with self._lock:
            self.conversations[slug].tag_list = list(tags)

    def delete_conversation(self, slug: str) -> None:
        with self._lock:
            del self.conversations[slug]

    def tags(self, slug: str) -> list[str]:
        with self._lock:
            return list(self.conversations[slug].tag_list)

    def status(self, slug: str) -> int:
        with self._lock:
            return self.conversations[slug].status

    def posts_for(self, slug: str) -> list[dict[str, Any]]:
        with self._lock:
            return [post for s, post in zip(self._post_slugs, self.posts, strict=True) if s == slug]

    def fail_next(
        self,
        method: str,
        path_prefix: str,
        status: int,
        *,
        times: int = 1,
        retry_after: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` and do nothing else.

        ``path_prefix`` is relative to the API root, e.g. ``/conversations/{slug}/messages``.
        """
        with self._lock:
            self._faults.append(
                _Fault(method.upper(), path_prefix, status, times, retry_after, body)
            )

    def hold_post_response(self, seconds: float) -> None:
        """Accept and record the next message POST, then answer only after ``seconds``.

        That is a response lost in flight: the message exists, the caller never hears so.
        The hold ends early if the caller hangs up, so a killed client does not keep the
        server from stopping.
        """
        with self._lock:
            self._hold_next_post = seconds

    # -- the API ---------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(dependencies=[Depends(self._gate)])

        async def reply(request: Request, exc: Exception) -> JSONResponse:
            assert isinstance(exc, _Reply)
            return exc.response

        app.add_exception_handler(_Reply, reply)
        app.add_api_route("/conversations", self._list_conversations, methods=["GET"])
        app.add_api_route("/conversations/{slug}", self._get_conversation, methods=["GET"])
        app.add_api_route("/conversations/{slug}", self._put_conversation, methods=["PUT"])
        app.add_api_route("/conversations/{slug}/messages", self._list_messages, methods=["GET"])
        app.add_api_route("/conversations/{slug}/messages", self._post_message, methods=["POST"])
        return app

    async def _gate(self, request: Request) -> None:
        path: str = request.scope["path"]  # decoded, as routes and fault prefixes see it
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        with self._lock:
            self.requests.append((request.method, path))
            fault = self._take_fault(request.method, path)
        if fault is not None:
            raise _Reply(fault.response())
        if not self._authorized(request.headers.get("Authorization")):
            raise _Reply(
                JSONResponse(
                    {"error": "You need to sign in or sign up before continuing."},
                    401,
                    headers={"WWW-Authenticate": 'Basic realm="Application"'},
                )
            )
        if "application/json" not in request.headers.get("Accept", ""):
            raise _Reply(JSONResponse({"error": "send Accept: application/json"}, 406))
        if request.method in ("POST", "PUT") and not request.headers.get(
            "Content-Type", ""
        ).startswith("application/json"):
            raise _Reply(JSONResponse({"error": "send Content-Type: application/json"}, 415))

    async def _list_conversations(
        self,
        tag: str | None = None,
        filter_: str | None = Query(default=None, alias="filter"),
        page: str = "1",
    ) -> JSONResponse:
        wanted = {t.strip().lower() for t in (tag or "").split(",") if t.strip()}
        with self._lock:
            chosen = [
                c
                for c in self.conversations.values()
                if self._listed(c, filter_)
                and (not wanted or wanted & {t.lower() for t in c.tag_list})
            ]
            # Newest first: a conversation created while a client pages shifts the rest.
            chosen.sort(key=lambda c: c.created_at, reverse=True)
            return JSONResponse(
                self._page("conversations", [self._conversation_json(c) for c in chosen], page)
            )

    async def _get_conversation(self, slug: str) -> JSONResponse:
        with self._lock:
            return JSONResponse(self._conversation_json(self._find(slug)))

    async def _put_conversation(self, slug: str, request: Request) -> JSONResponse:
        payload = await self._body(request)
        with self._lock:
            conversation = self._find(slug)
            changes = payload.get("conversation")
            if not isinstance(changes, dict):
                raise _Reply(_unprocessable("conversation", "must be an object"))
            tags = changes.get("tag_list", conversation.tag_list)
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise _Reply(_unprocessable("tag_list", "must be an array of strings"))
            status = changes.get("status", conversation.status)
            if not isinstance(status, int) or status not in _STATUSES:
                raise _Reply(_unprocessable("status", "is not a valid status"))
            if status == _STATUS_ON_HOLD and not changes.get("hold_until"):
                raise _Reply(_unprocessable("hold_until", "is required when on hold"))
            conversation.tag_list = list(tags)
            conversation.status = status
            return JSONResponse(self._conversation_json(conversation))

    async def _list_messages(self, slug: str, page: str = "1") -> JSONResponse:
        with self._lock:
            conversation = self._find(slug)
            newest_first = sorted(conversation.messages, key=lambda m: m.created_at, reverse=True)
            rendered = [self._message_json(conversation, m) for m in newest_first]
            return JSONResponse(self._page("messages", rendered, page))

    async def _post_message(self, slug: str, request: Request) -> JSONResponse:
        payload = await self._body(request)
        with self._lock:
            conversation = self._find(slug)
            message = payload.get("message")
            if not isinstance(message, dict):
                raise _Reply(_unprocessable("message", "must be an object"))
            body = message.get("body")
            if not isinstance(body, str) or not body.strip():
                raise _Reply(_unprocessable("body", "can't be blank"))
            visibility = message.get("visibility", 0)
            if visibility not in (0, 1):
                raise _Reply(_unprocessable("visibility", "must be 0 or 1"))
            origin_id = message.get("origin_id")
            posted = FakeMessage(
                body=body,
                created_at=self._tick(),
                user=_user("Nudge", self.login_email, staff=True, bot=False),
                visibility=visibility,
                origin_id=None if origin_id is None else str(origin_id),
            )
            conversation.messages.append(posted)
            if message.get("suppress_autoresolve") is not True:
                conversation.status = _STATUS_RESOLVED
            self.posts.append(payload)
            self._post_slugs.append(slug)
            hold, self._hold_next_post = self._hold_next_post, None
            answer = self._message_json(conversation, posted)
        self.post_accepted.set()
        if hold:
            await _hold(request, hold)
        return JSONResponse(answer)

    # -- helpers (call with the lock held) --------------------------------------------------

    def _tick(self) -> datetime:
        """Now, but strictly after the previous tick, so default orderings are unambiguous."""
        self._clock = max(datetime.now(UTC), self._clock + timedelta(milliseconds=1))
        return self._clock

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method == method and path.startswith(fault.path_prefix):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _authorized(self, header: str | None) -> bool:
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        email, _, token = decoded.partition(":")
        return email == self.login_email and token == self.api_token

    def _find(self, slug: str) -> FakeConversation:
        conversation = self.conversations.get(slug)
        if conversation is None:
            raise _Reply(JSONResponse({"error": "Not Found"}, 404))
        return conversation

    @staticmethod
    def _listed(conversation: FakeConversation, filter_: str | None) -> bool:
        """Without ``filter`` archived conversations are left out, as documented."""
        if filter_ == "all":
            return True
        if filter_ == "archived":
            return conversation.status == _STATUS_ARCHIVED
        if filter_ == "open":
            return conversation.status == 0
        return conversation.status != _STATUS_ARCHIVED

    def _page(self, key: str, items: list[dict[str, Any]], page: str) -> dict[str, Any]:
        try:
            number = max(1, int(page))
        except ValueError:
            number = 1
        size = self.page_size
        start = (number - 1) * size
        return {
            "page_size": size,
            "page_count": math.ceil(len(items) / size),
            "total_count": len(items),
            key: items[start : start + size],
        }

    def _conversation_json(self, conversation: FakeConversation) -> dict[str, Any]:
        messages = sorted(conversation.messages, key=lambda m: m.created_at)
        from_customer = [m for m in messages if not m.user["staff?"]]
        from_staff = [m for m in messages if m.user["staff?"]]
        return {
            "subject": conversation.subject,
            "slug": conversation.slug,
            "status": conversation.status,
            "created_at": _timestamp(conversation.created_at),
            "tag_list": list(conversation.tag_list),
            "message": {"body": messages[0].body if messages else ""},
            "last_customer_message": _last(from_customer),
            "last_staff_message": _last(from_staff),
            "author": dict(conversation.author),
            "assignee": None,
            "category": dict(_CATEGORY),
            "data": {},
            "followers": [dict(conversation.author)],
        }

    def _message_json(self, conversation: FakeConversation, message: FakeMessage) -> dict[str, Any]:
        return {
            "body": message.body,
            "visibility": message.visibility,
            "origin": 0,
            "origin_id": message.origin_id,
            "created_at": _timestamp(message.created_at),
            "user": dict(message.user),
            "recipients": [],
            "attachments": [],
            "conversation": {
                "subject": conversation.subject,
                "slug": conversation.slug,
                "created_at": _timestamp(conversation.created_at),
                "category": dict(_CATEGORY),
            },
        }

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        try:
            payload = await request.json()
        except ValueError:
            raise _Reply(JSONResponse({"error": "body is not JSON"}, 400)) from None
        if not isinstance(payload, dict):
            raise _Reply(JSONResponse({"error": "body must be a JSON object"}, 400))
        return payload


def _last(messages: list[FakeMessage]) -> dict[str, Any] | None:
    if not messages:
        return None
    return {"body": messages[-1].body, "created_at": _timestamp(messages[-1].created_at)}


def _unprocessable(field_name: str, problem: str) -> JSONResponse:
    return JSONResponse({"errors": {field_name: [problem]}}, 422)


async def _hold(request: Request, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.05)
