"""Typed errors of the Kaggle client, so callers branch on types rather than message text.

Each carries the exit code the CLI ends with (the tree: `orchestrator/errors.py`): Kaggle
failing is infrastructure (3, retry later); what the user must fix is bad input (2).
"""

from __future__ import annotations

from orchestrator.errors import ExitCode


class KaggleError(Exception):
    """Base of every error the Kaggle client raises."""

    exit_code = ExitCode.INFRASTRUCTURE

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class CredentialsNotFound(KaggleError):
    """No Kaggle credentials in any of the places the official CLI looks."""

    exit_code = ExitCode.BAD_INPUT


# What a user does about refused credentials; the CLI adds it to every such error (exit 2).
CREDENTIALS_FIX = (
    "check KAGGLE_USERNAME/KAGGLE_KEY, KAGGLE_API_TOKEN or kaggle.json, or create a new API "
    "token at https://www.kaggle.com/settings"
)


class AuthenticationError(KaggleError):
    """Kaggle refused the credentials (HTTP 401, or 403 on a call that cannot be confused).

    A 403 on a read of one kernel is `KernelNotVisible` instead: kaggle.com answers that
    for kernels that do not exist (yet), so it proves nothing about the credentials.
    Never "retry later": a wrong or revoked key stays refused, so it is bad input (exit 2).
    """

    exit_code = ExitCode.BAD_INPUT


class NotFoundError(KaggleError):
    """The kernel (or other resource) does not exist or is not visible to this user (HTTP 404)."""

    exit_code = ExitCode.BAD_INPUT


class KernelNotVisible(KaggleError):
    """Kaggle denied a read of one kernel (HTTP 403 `Permission 'kernels.get' was denied`).

    kaggle.com answers this for a kernel that does not exist, for one pushed seconds ago
    (read-after-write lag) and for another account's private kernel alike: it means
    "absent or not visible yet", never "bad credentials". Whether a slug exists is learned
    by listing one's own kernels (`KaggleClient.find_own_kernel`).
    """

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, message: str, *, status_code: int | None = 403) -> None:
        super().__init__(message, status_code=status_code)


class BadRequest(KaggleError):
    """Kaggle rejected the request itself; repeating it unchanged will not help."""

    exit_code = ExitCode.BAD_INPUT


class CapacityRefused(KaggleError):
    """A push was refused because the account already runs its maximum of sessions of that
    kind (`Maximum batch GPU session count of 2 reached.`, CPU and TPU alike): wait."""

    def __init__(
        self, message: str, *, limit: int | None = None, accelerator: str | None = None
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.accelerator = accelerator  # "GPU", "CPU" or "TPU" when Kaggle named it


class DockerImageRefused(BadRequest):
    """A push was refused because Kaggle does not (or no longer) offer the pinned image."""


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
