"""One exception hierarchy for every outside service.

Activities only need to know one thing about a failure: may it be retried? ``RetryLater``
says yes (and how long the provider asked us to wait); ``Rejected`` says never (the same
request would fail the same way); ``NotFound`` is the rejection a workflow often treats
as a normal ending (the conversation or device is gone).
"""

from __future__ import annotations


class ProviderError(Exception):
    def __init__(
        self, provider: str, message: str, *, status: int | None = None, body: str = ""
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.status = status
        self.body = body


class RetryLater(ProviderError):
    """Transient: 5xx, 429, timeouts, connection errors."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        body: str = "",
        retry_after: float | None = None,
        maybe_delivered: bool = False,
    ) -> None:
        super().__init__(provider, message, status=status, body=body)
        self.retry_after = retry_after
        self.maybe_delivered = maybe_delivered
        """True when the request may have reached the provider (a read timeout, a dropped
        connection): resending could deliver the message twice."""


class Rejected(ProviderError):
    """Permanent: the provider refused the request as made (4xx other than 429)."""


class NotFound(Rejected):
    """The addressed object (conversation, model, device) does not exist."""
