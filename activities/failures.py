"""Turn ``integrations`` errors into Temporal failures a workflow (and an operator) can read.

Error types are strings a reader can grep for: ``RetryLater``, ``Rejected``, ``NotFound``.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.exceptions import ApplicationError

from integrations.errors import NotFound, ProviderError, Rejected, RetryLater


def as_application_error(error: ProviderError) -> ApplicationError:
    if isinstance(error, RetryLater):
        delay = timedelta(seconds=error.retry_after) if error.retry_after else None
        return ApplicationError(str(error), type="RetryLater", next_retry_delay=delay)
    if isinstance(error, NotFound):
        return ApplicationError(str(error), type="NotFound", non_retryable=True)
    if isinstance(error, Rejected):
        return ApplicationError(str(error), type="Rejected", non_retryable=True)
    return ApplicationError(str(error), type="ProviderError")
