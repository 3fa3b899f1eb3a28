"""The one place where HTTP outcomes become ``RetryLater`` / ``Rejected`` / ``NotFound``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Self

import httpx

from integrations.errors import NotFound, Rejected, RetryLater


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` is either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def raise_for_status(provider: str, response: httpx.Response) -> None:
    if response.is_success:
        return
    status = response.status_code
    body = response.text[:2000]
    reason = f"HTTP {status} from {response.request.method} {response.request.url.path}"
    if status in (408, 429) or status >= 500:
        raise RetryLater(
            provider,
            reason,
            status=status,
            body=body,
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
    if status == 404:
        raise NotFound(provider, reason, status=status, body=body)
    raise Rejected(provider, f"{reason}: {body[:300]}", status=status, body=body)


async def send(provider: str, call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """Run one request; transport failures become ``RetryLater``, statuses are classified."""
    try:
        response = await call()
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise RetryLater(provider, f"connection failed (not sent): {exc!r}") from exc
    except httpx.TimeoutException as exc:
        raise RetryLater(provider, f"timed out: {exc!r}", maybe_delivered=True) from exc
    except httpx.TransportError as exc:
        raise RetryLater(provider, f"connection failed: {exc!r}", maybe_delivered=True) from exc
    raise_for_status(provider, response)
    return response


class HttpClient:
    """Base of our provider clients: one ``httpx.AsyncClient``, closed by ``aclose`` or by
    leaving ``async with``."""

    _http: httpx.AsyncClient

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
