"""Kaggle API client: one httpx client for Kaggle and the local emulator, with typed errors."""

from .client import DEFAULT_API_URL, KaggleClient, resolve_api_url
from .credentials import Credentials, discover_credentials
from .errors import (
    AmbiguousPush,
    AuthenticationError,
    BadRequest,
    CapacityRefused,
    CredentialsNotFound,
    IncompleteDownload,
    KaggleError,
    NotFoundError,
    QuotaExhausted,
    ServiceUnavailable,
    Throttled,
)
from .models import (
    TERMINAL_STATUSES,
    AcceleratorQuota,
    DownloadResult,
    KernelInfo,
    KernelStatus,
    LogEntry,
    OutputFile,
    OutputListing,
    PushResult,
)
from .push_spec import PushSpec
from .retry import RetryPolicy

__all__ = [
    "DEFAULT_API_URL",
    "TERMINAL_STATUSES",
    "AcceleratorQuota",
    "AmbiguousPush",
    "AuthenticationError",
    "BadRequest",
    "CapacityRefused",
    "Credentials",
    "CredentialsNotFound",
    "DownloadResult",
    "IncompleteDownload",
    "KaggleClient",
    "KaggleError",
    "KernelInfo",
    "KernelStatus",
    "LogEntry",
    "NotFoundError",
    "OutputFile",
    "OutputListing",
    "PushResult",
    "PushSpec",
    "QuotaExhausted",
    "RetryPolicy",
    "ServiceUnavailable",
    "Throttled",
    "discover_credentials",
    "resolve_api_url",
]
