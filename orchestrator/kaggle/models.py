"""What the client's calls return: small frozen records, free of kagglesdk types."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

# The statuses a session ends in: written once, for the client, the emulator and the orchestrator.
TERMINAL_STATUSES = frozenset({"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"})


# How long a just-pushed kernel may stay denied (403) and unlisted on kaggle.com before its
# absence means anything: the read-after-write lag is seconds to minutes.
VISIBILITY_GRACE_S = 300.0


@dataclass(frozen=True)
class PushResult:
    ref: str  # owner/slug (Kaggle's `/code/` prefix removed)
    url: str
    version_number: int | None
    # Sources Kaggle could not attach (the push still went through); keyed by kind, e.g. "kernel".
    invalid_sources: dict[str, list[str]] = field(default_factory=dict)
    # True when the push was ambiguous and GetKernel showed it had been accepted.
    confirmed_by_check: bool = False


@dataclass(frozen=True)
class KernelStatus:
    status: str  # a KernelWorkerStatus name: QUEUED, RUNNING, COMPLETE, ERROR, ...
    failure_message: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class OutputFile:
    name: str
    url: str
    size: int | None = None  # Kaggle's listing carries no size; known only once downloaded


@dataclass(frozen=True)
class LogEntry:
    stream_name: str
    time: float | None
    data: str


@dataclass(frozen=True)
class OutputListing:
    files: list[OutputFile]
    log: list[LogEntry]


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class KernelInfo:
    ref: str
    slug: str
    author: str
    title: str
    current_version_number: int | None
    last_run_time: datetime | None
    language: str | None
    kernel_type: str | None
    is_private: bool | None
    enable_gpu: bool | None
    enable_internet: bool | None
    machine_shape: str | None
    kernel_sources: list[str]
    dataset_sources: list[str]
    source: str | None  # the pushed code text, when the server returns it


@dataclass(frozen=True)
class AcceleratorQuota:
    time_used_s: float
    total_allowed_s: float
    refresh_time: datetime | None  # timezone-aware UTC

    @property
    def remaining_s(self) -> float:
        return max(self.total_allowed_s - self.time_used_s, 0.0)
