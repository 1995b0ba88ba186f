"""The emulator's persistent state: kernels, their versions, and GPU quota, as JSON under --root.

Every write replaces a whole file atomically (temp file + rename), so a killed emulator
never leaves a half-written record behind.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from kernel_template import layout

ACTIVE_STATUSES = frozenset({"NEW_SCRIPT", "QUEUED", "RUNNING", "CANCEL_REQUESTED"})


def write_json_atomic(path: Path, data: object) -> None:
    layout.atomic_write_text(path, json.dumps(data, indent=1))


def remove_tree(path: Path) -> None:
    """rmtree that also removes the read-only copies of mounted kernel sources."""

    def make_writable_and_retry(func, p, _exc):
        os.chmod(os.path.dirname(p), stat.S_IRWXU)
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, stat.S_IRWXU)
        func(p)

    if path.exists():
        shutil.rmtree(path, onerror=make_writable_and_retry)  # onexc needs 3.12


class Version(BaseModel):
    number: int
    status: str = "NEW_SCRIPT"
    failure_message: str | None = None
    gpu: bool = False
    tpu: bool = False
    internet: bool = True  # enableInternet at push time (off: pip cannot install anything)
    machine_shape: str | None = None
    session_limit_s: float
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    pid: int | None = None
    exit_code: int | None = None
    run: bool = True
    output_token: str = Field(default_factory=lambda: secrets.token_urlsafe(16))
    kernel_sources: list[str] = []
    dataset_sources: list[str] = []
    # What SaveKernel's dockerImage asked for (None: nothing), and the image the session runs
    # on, given to the kernel as KAGGLE_DOCKER_IMAGE.
    pushed_docker_image: str | None = None
    docker_image: str | None = None

    @property
    def label(self) -> str:
        return f"v{self.number}"


class Kernel(BaseModel):
    id: int
    owner: str
    slug: str
    title: str
    is_private: bool = True
    language: str = "python"
    kernel_type: str = "script"
    enable_gpu: bool = False
    enable_tpu: bool = False
    enable_internet: bool = True
    machine_shape: str | None = None
    docker_image: str | None = None  # the image of the latest version
    dataset_sources: list[str] = []
    kernel_sources: list[str] = []
    competition_sources: list[str] = []
    model_sources: list[str] = []
    category_ids: list[str] = []
    versions: list[Version] = []
    # Read-after-write lag: reads are denied (403) and ListKernels omits the kernel until
    # this time (epoch seconds). 0 for records older than the lag.
    visible_at: float = 0.0

    def visible(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.visible_at

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.slug}"

    @property
    def latest(self) -> Version | None:
        return self.versions[-1] if self.versions else None

    def version(self, number: int) -> Version | None:
        return next((v for v in self.versions if v.number == number), None)


def next_quota_refresh(now: datetime) -> datetime:
    """Kaggle's weekly GPU quota refreshes on Saturday 00:00 UTC (naive UTC returned)."""
    now = now.astimezone(timezone.utc).replace(tzinfo=None)
    days_ahead = (5 - now.weekday()) % 7 or 7
    return (now + timedelta(days=days_ahead)).replace(hour=0, minute=0, second=0, microsecond=0)


class Store:
    """All kernels in memory, mirrored to `root/kernels/<owner>/<slug>/kernel.json`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.lock = threading.RLock()
        self.kernels: dict[tuple[str, str], Kernel] = {}
        self._load()

    # -- paths -------------------------------------------------------------------------
    def kernel_dir(self, owner: str, slug: str) -> Path:
        return self.root / "kernels" / owner / slug

    def version_dir(self, owner: str, slug: str, number: int) -> Path:
        return self.kernel_dir(owner, slug) / f"v{number}"

    def working_dir(self, owner: str, slug: str, number: int) -> Path:
        return self.version_dir(owner, slug, number) / "working"

    def input_dir(self, owner: str, slug: str, number: int) -> Path:
        return self.version_dir(owner, slug, number) / "input"

    def log_path(self, owner: str, slug: str, number: int) -> Path:
        return self.version_dir(owner, slug, number) / "log.jsonl"

    def script_path(self, owner: str, slug: str, number: int) -> Path:
        return self.version_dir(owner, slug, number) / "script.py"

    # -- kernels -----------------------------------------------------------------------
    def _load(self) -> None:
        for meta in sorted((self.root / "kernels").glob("*/*/kernel.json")):
            kernel = Kernel.model_validate_json(meta.read_text(encoding="utf-8"))
            self.kernels[(kernel.owner, kernel.slug)] = kernel

    def save(self, kernel: Kernel) -> None:
        with self.lock:
            self.kernels[(kernel.owner, kernel.slug)] = kernel
            write_json_atomic(
                self.kernel_dir(kernel.owner, kernel.slug) / "kernel.json", kernel.model_dump()
            )

    def all(self) -> list[Kernel]:
        """A snapshot, safe to iterate while session threads add versions."""
        with self.lock:
            return list(self.kernels.values())

    def get(self, owner: str, slug: str) -> Kernel | None:
        return self.kernels.get((owner, slug))

    def by_id(self, kernel_id: int) -> Kernel | None:
        return next((k for k in self.all() if k.id == kernel_id), None)

    def next_id(self) -> int:
        return max((k.id for k in self.all()), default=0) + 1

    def delete(self, owner: str, slug: str) -> None:
        with self.lock:
            self.kernels.pop((owner, slug), None)
            remove_tree(self.kernel_dir(owner, slug))

    def find_output(self, token: str) -> tuple[Kernel, Version] | None:
        for kernel in self.all():
            for version in list(kernel.versions):
                if secrets.compare_digest(version.output_token, token):
                    return kernel, version
        return None

    def update_version(self, owner: str, slug: str, number: int, **fields) -> Version | None:
        with self.lock:
            kernel = self.get(owner, slug)
            version = kernel.version(number) if kernel else None
            if version is None:
                return None  # deleted meanwhile
            for name, value in fields.items():
                setattr(version, name, value)
            self.save(kernel)
            return version

    # -- images ever run ------------------------------------------------------------------
    def _images_path(self) -> Path:
        return self.root / "images.json"

    def images_ever_run(self) -> set[str]:
        """Every docker image a version of this emulator ran on (kept across restarts)."""
        with self.lock:
            path = self._images_path()
            known = set(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else set()
            return known | {
                v.docker_image for k in self.all() for v in k.versions if v.docker_image
            }

    def remember_image(self, image: str) -> None:
        with self.lock:
            path = self._images_path()
            known = set(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else set()
            if image not in known:
                write_json_atomic(path, sorted(known | {image}))

    # -- GPU quota ---------------------------------------------------------------------
    def _quota_path(self) -> Path:
        return self.root / "quota.json"

    def _read_quota(self) -> dict:
        path = self._quota_path()
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        now = datetime.now(timezone.utc)
        refresh = data.get("refresh_at")
        if refresh is None or now.replace(tzinfo=None) >= datetime.fromisoformat(refresh):
            data = {"refresh_at": next_quota_refresh(now).isoformat(), "used_s": {}}
        return data

    def quota_refresh_time(self) -> datetime:
        with self.lock:
            return datetime.fromisoformat(self._read_quota()["refresh_at"])

    def gpu_seconds_banked(self, user: str) -> float:
        with self.lock:
            return float(self._read_quota()["used_s"].get(user, 0.0))

    def add_gpu_seconds(self, user: str, seconds: float) -> None:
        with self.lock:
            data = self._read_quota()
            data["used_s"][user] = data["used_s"].get(user, 0.0) + seconds
            write_json_atomic(self._quota_path(), data)

    def tpu_seconds_banked(self, user: str) -> float:
        with self.lock:
            return float(self._read_quota().get("tpu_used_s", {}).get(user, 0.0))

    def add_tpu_seconds(self, user: str, seconds: float) -> None:
        with self.lock:
            data = self._read_quota()
            used = data.setdefault("tpu_used_s", {})
            used[user] = used.get(user, 0.0) + seconds
            write_json_atomic(self._quota_path(), data)

    def set_gpu_seconds(self, user: str, seconds: float) -> None:
        with self.lock:
            data = self._read_quota()
            data["used_s"][user] = float(seconds)
            write_json_atomic(self._quota_path(), data)
