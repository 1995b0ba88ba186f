"""File formats shared by the kernel and the orchestrator (DESIGN contracts 2-5).

The working directory of a session holds:

    checkpoints/<step>/MANIFEST.json   newest verifying one is resumed from
    metrics/metrics.csv                append-only, one row per export
    figures/*.png                      learning curve, evaluation chart
    models/best_model.zip              best agent by periodic evaluation
    evaluation/evaluation.csv          final agent-vs-baselines episodes
    logs/events.jsonl                  structured, throttled log
    run_config.json                    the config this session ran with
    session_summary.json               contract 4
    artifacts.zip, artifacts.zip.sha256

Standard library and pydantic only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

WORKING_DIR_ENV = "ORCHESTRATE_WORKING_DIR"
INPUT_DIR_ENV = "ORCHESTRATE_INPUT_DIR"
DEFAULT_WORKING_DIR = "/kaggle/working"
DEFAULT_INPUT_DIR = "/kaggle/input"

CHECKPOINTS_DIR = "checkpoints"
MANIFEST_NAME = "MANIFEST.json"
METRICS_CSV = "metrics/metrics.csv"
FIGURES_DIR = "figures"
LEARNING_CURVE_PNG = "figures/learning_curve.png"
EVALUATION_PNG = "figures/evaluation.png"
EVALUATION_CSV = "evaluation/evaluation.csv"
BEST_MODEL_ZIP = "models/best_model.zip"
EVENTS_JSONL = "logs/events.jsonl"
TENSORBOARD_DIR = "logs/tensorboard"
RUN_CONFIG_JSON = "run_config.json"
SESSION_SUMMARY_JSON = "session_summary.json"
ARTIFACTS_ZIP = "artifacts.zip"
ARTIFACTS_SHA256 = "artifacts.zip.sha256"

# Columns of metrics/metrics.csv, in order. Empty cells where a value is unknown.
METRICS_COLUMNS = (
    "step",
    "segment",
    "wall_time",
    "episodes",
    "episode_reward",
    "episode_length",
    "loss",
    "exploration",
    "queue",
    "delay",
    "sps",
    "rss_mb",
    "gpu_mem_mb",
)

EVENT_PREFIX = "@@orchestrate "

# Session-summary reasons of a segment that cannot prove its lineage (status `error`, no training):
# its `parent` checkpoint was not found (or did not verify) in its inputs in time ...
PARENT_MISSING_REASON = "parent checkpoint missing"
# ... or it is a later segment (segment_index > 1) with no `parent` named at all.
PARENT_REQUIRED_REASON = "parent checkpoint required"


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_dir_name(num_timesteps: int) -> str:
    """Zero-padded so lexical order is step order."""
    return f"{num_timesteps:012d}"


def checkpoint_dirs(root: str | Path) -> list[Path]:
    """The committed checkpoint dirs under `root` (digit names; temp and pruned ones start
    with a dot), oldest first. Whether each verifies is the caller's question."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit())


class FileEntry(BaseModel):
    sha256: str
    size: int


class CheckpointManifest(BaseModel):
    """Contract 3. Written last, after every listed file is fsynced."""

    model_config = ConfigDict(extra="allow")

    format_version: int = 1
    config_hash: str
    num_timesteps: int
    episode_count: int
    created_at: str
    algo: str
    files: dict[str, FileEntry]
    parent: str | None = Field(
        default=None, description="manifest hash of the checkpoint this one continues"
    )

    def problems(self, directory: Path) -> list[str]:
        """Files that are missing or do not match their recorded size and hash (empty if sound)."""
        found = []
        for name, entry in self.files.items():
            path = directory / name
            if not path.is_file():
                found.append(f"{name}: missing")
            elif path.stat().st_size != entry.size:
                found.append(f"{name}: size {path.stat().st_size} != {entry.size}")
            elif sha256_file(path) != entry.sha256:
                found.append(f"{name}: sha256 mismatch")
        return found


def manifest_hash(manifest_path: str | Path) -> str:
    """A checkpoint's identity: the sha256 of its MANIFEST.json bytes."""
    return sha256_file(manifest_path)


class CheckpointRef(BaseModel):
    """A checkpoint's identity: its step and the sha256 of its MANIFEST.json. The kernel adds
    where it found or wrote it; the orchestrator's refs (ledger, pulls) carry no path."""

    step: int
    manifest_sha256: str
    path: str | None = None


class WallClock(BaseModel):
    setup: float = 0.0
    training: float = 0.0
    checkpointing: float = 0.0
    evaluation: float = 0.0
    exporting: float = 0.0
    finalization: float = 0.0
    total: float = 0.0


SummaryStatus = Literal["complete", "budget_stop", "signal_stop", "error"]


class SessionSummary(BaseModel):
    """Contract 4: what one session did, read by `plan`, `pull-artifacts` and `chain`."""

    model_config = ConfigDict(extra="allow")

    status: SummaryStatus
    reason: str
    config_hash: str
    segment_index: int = 0
    total_timesteps: int
    timesteps_start: int
    timesteps_end: int
    wall: WallClock
    seconds_per_step: float | None = None
    log_lines_per_step: float | None = None
    log_lines: int = 0
    log_lines_suppressed: int = 0
    checkpoints_written: int = 0
    resumed_from: CheckpointRef | None = None
    left_checkpoint: CheckpointRef | None = None
    steps_redone: int = 0
    started_at: str
    ended_at: str
    session_limit_s: float
    device: str = "cpu"
    evaluation: dict[str, Any] | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    embedded: dict[str, str] = Field(
        default_factory=dict, description="packages the script carried and imported, with versions"
    )
    input_seen: dict[str, list[str] | None] | None = Field(
        default=None,
        description="when the parent was missing: a shallow listing of the input dirs looked at "
        "(None for a dir that does not exist)",
    )

    @property
    def training_done(self) -> bool:
        return self.timesteps_end >= self.total_timesteps


class SummaryEvent(BaseModel):
    """The `summary` progress event (contract 5): the session summary's first words, printed
    when training stops, before the files are written. What `watch` sees from the log."""

    model_config = ConfigDict(extra="allow")

    status: SummaryStatus
    reason: str = ""
    step: int | None = Field(default=None, description="the summary's timesteps_end")
    total: int | None = None


def format_event(event: str, **fields: Any) -> str:
    """One progress-event line (contract 5), e.g. `@@orchestrate {"event":"progress",...}`."""
    return EVENT_PREFIX + json.dumps({"event": event, **fields}, separators=(",", ":"), default=str)


def parse_event(line: str) -> dict[str, Any] | None:
    """The event carried by a log line, or None if the line is not one."""
    start = line.find(EVENT_PREFIX)
    if start < 0:
        return None
    try:
        data = json.loads(line[start + len(EVENT_PREFIX) :].strip())
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and "event" in data else None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temp file, fsync, rename: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temp name per call: threads of one process may write the same file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def fsync_dir(directory: str | Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_sha256sum(target: str | Path, sidecar: str | Path | None = None) -> str:
    """Write `<hash>  <name>` (sha256sum format) next to target; returns the hash."""
    target = Path(target)
    digest = sha256_file(target)
    sidecar = Path(sidecar) if sidecar else target.with_name(target.name + ".sha256")
    atomic_write_text(sidecar, f"{digest}  {target.name}\n")
    return digest


def read_sha256sum(sidecar: str | Path) -> tuple[str, str]:
    """(hash, file name) from a sha256sum-format line."""
    line = Path(sidecar).read_text().strip().splitlines()[0]
    digest, _, name = line.partition("  ")
    if len(digest) != 64 or not name:
        raise ValueError(f"{sidecar} is not in sha256sum format")
    return digest.lower(), name.lstrip("*")
