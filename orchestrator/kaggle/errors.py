"""Typed errors of the Kaggle client, so callers branch on types rather than message text."""

from __future__ import annotations


class KaggleError(Exception):
    """Base of every error the Kaggle client raises."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class CredentialsNotFound(KaggleError):
    """No Kaggle credentials in any of the places the official CLI looks."""


class AuthenticationError(KaggleError):
    """Kaggle refused the credentials (HTTP 401/403)."""


class NotFoundError(KaggleError):
    """The kernel (or other resource) does not exist or is not visible to this user (HTTP 404)."""


class BadRequest(KaggleError):
    """Kaggle rejected the request itself; repeating it unchanged will not help."""


class CapacityRefused(KaggleError):
    """A push was refused because the account already runs its maximum of batch GPU sessions."""

    def __init__(self, message: str, *, limit: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit


class QuotaExhausted(KaggleError):
    """A push was refused because the weekly accelerator quota is spent."""


class Throttled(KaggleError):
    """Still rate limited (HTTP 429) after every retry; `retry_after` is the server's last hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status_code=429)
        self.retry_after = retry_after


class ServiceUnavailable(KaggleError):
    """Kaggle kept failing (5xx, HTML error pages, timeouts, resets) after every retry."""


class AmbiguousPush(KaggleError):
    """A push failed in a way that leaves unknown whether Kaggle accepted it, and a check could not tell.

    Never push the same slug again blindly: look at the kernel (get_kernel) first.
    """

    def __init__(self, message: str, *, ref: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref


class IncompleteDownload(KaggleError):
    """A download ended with fewer or more bytes than the server announced or the caller expected."""
