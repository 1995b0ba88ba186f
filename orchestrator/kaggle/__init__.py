"""Kaggle API client: one httpx client for Kaggle and the local emulator, with typed errors."""

from .client import DEFAULT_API_URL, KaggleClient, resolve_api_url
from .credentials import Credentials, discover_credentials
from .errors import (
    AmbiguousPush,
    AuthenticationError,
    BadRequest,
    CapacityRefused,
    CredentialsNotFound,
    DockerImageRefused,
    IncompleteDownload,
    KaggleError,
    KernelNotVisible,
    NotFoundError,
    QuotaExhausted,
    ServiceUnavailable,
    Throttled,
)
from .models import (
    TERMINAL_STATUSES,
    VISIBILITY_GRACE_S,
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
    "VISIBILITY_GRACE_S",
    "AcceleratorQuota",
    "AmbiguousPush",
    "AuthenticationError",
    "BadRequest",
    "CapacityRefused",
    "Credentials",
    "CredentialsNotFound",
    "DockerImageRefused",
    "DownloadResult",
    "IncompleteDownload",
    "KaggleClient",
    "KaggleError",
    "KernelInfo",
    "KernelNotVisible",
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
