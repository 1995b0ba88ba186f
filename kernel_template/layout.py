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

`SessionPaths` names each of them, and holds the one rule for a committed checkpoint dir.
Work in progress is named `.tmp-*` (`temporary_sibling`) and committed by a rename
(`atomic_path`, `install_dir`); `fsync` is the one flush to disk.

Standard library and pydantic only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
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
# Every temp name starts with it (`temporary_sibling`): readers skip such names.
TEMP_MARKER = ".tmp-"

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


def is_checkpoint_name(name: str) -> bool:
    """The one rule for a committed checkpoint dir's name: its step, digits only. Work in
    progress (a commit's temp dir, a pruned or replaced one) is named `.tmp-*` and never is."""
    return name.isdigit()


def is_temporary(name: str) -> bool:
    """A file or dir that is work in progress, never an output (see `temporary_sibling`)."""
    return TEMP_MARKER in name


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


def read_manifest(checkpoint_dir: str | Path) -> CheckpointManifest:
    return CheckpointManifest.model_validate_json(
        (Path(checkpoint_dir) / MANIFEST_NAME).read_bytes()
    )


def verify_checkpoint(
    directory: str | Path,
) -> tuple[CheckpointManifest | None, str | None, list[str]]:
    """(manifest, its sha256, problems) of a checkpoint dir; problems name each bad file."""
    manifest_path = Path(directory) / MANIFEST_NAME
    try:
        raw = manifest_path.read_bytes()
        manifest = CheckpointManifest.model_validate_json(raw)
    except FileNotFoundError:
        return None, None, [f"{MANIFEST_NAME}: missing"]
    except (OSError, ValueError) as error:
        return None, None, [f"{MANIFEST_NAME}: unreadable ({str(error).splitlines()[0]})"]
    return manifest, hashlib.sha256(raw).hexdigest(), manifest.problems(Path(directory))


class SessionPaths:
    """Every output path of one session (contract 2), as submitit's `JobPaths` names every
    file of a job. The root is a session's working dir, a parent's output mounted among the
    inputs, or a run pulled to `runs/<slug>/`: the same tree, read and written through here."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / checkpoint_dir_name(step)

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_CSV

    @property
    def learning_curve(self) -> Path:
        return self.root / LEARNING_CURVE_PNG

    @property
    def evaluation_png(self) -> Path:
        return self.root / EVALUATION_PNG

    @property
    def evaluation_csv(self) -> Path:
        return self.root / EVALUATION_CSV

    @property
    def best_model(self) -> Path:
        return self.root / BEST_MODEL_ZIP

    @property
    def best_model_info(self) -> Path:
        """The best model's score and step, beside it."""
        return self.best_model.with_suffix(".json")

    @property
    def events(self) -> Path:
        return self.root / EVENTS_JSONL

    @property
    def tensorboard(self) -> Path:
        """One run dir per algorithm below it, continued across segments."""
        return self.root / TENSORBOARD_DIR

    @property
    def run_config(self) -> Path:
        return self.root / RUN_CONFIG_JSON

    @property
    def summary(self) -> Path:
        return self.root / SESSION_SUMMARY_JSON

    @property
    def artifacts_zip(self) -> Path:
        return self.root / ARTIFACTS_ZIP

    @property
    def artifacts_sha256(self) -> Path:
        return self.root / ARTIFACTS_SHA256

    def continued_outputs(self) -> tuple[Path, ...]:
        """Files a resumed session carries over from its parent's output and goes on with."""
        return (self.metrics, self.best_model, self.best_model_info)

    # -- checkpoints: the one rule (`is_checkpoint_name`) applied for every reader -------------
    def checkpoint_dirs(self) -> list[Path]:
        """The committed checkpoint dirs, oldest first (never a `.tmp-*` one). Whether each
        has a manifest, and whether it verifies, is the caller's question."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(
            p for p in self.checkpoints.iterdir() if is_checkpoint_name(p.name) and p.is_dir()
        )

    def checkpoint_manifests(self) -> list[Path]:
        """The MANIFEST.json of each committed checkpoint dir that has one, oldest first."""
        found = (d / MANIFEST_NAME for d in self.checkpoint_dirs())
        return [path for path in found if path.is_file()]

    def newest_checkpoint(self) -> Path | None:
        """The newest committed checkpoint dir that has its manifest (unverified)."""
        manifests = self.checkpoint_manifests()
        return manifests[-1].parent if manifests else None

    def find_checkpoint(self, manifest_sha256: str) -> Path | None:
        """The committed checkpoint dir whose manifest has this hash (its files unverified)."""
        for path in self.checkpoint_manifests():
            if manifest_hash(path) == manifest_sha256:
                return path.parent
        return None


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
    stopped_early: bool = Field(
        default=False,
        description="the user's loop ended the run on purpose before total_timesteps "
        "(`Session.stop_early`, its reason in `reason`; status `complete`, the last step "
        "checkpointed): the run is finished, a chain is done",
    )

    @property
    def training_done(self) -> bool:
        return self.stopped_early or self.timesteps_end >= self.total_timesteps


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


# -- durable writes: the one fsync, the one temp name, the one atomic write --------------------


def fsync(target: str | Path | int) -> None:
    """Flush a file or a directory (by path) or an open descriptor to disk."""
    if isinstance(target, int):
        os.fsync(target)
        return
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file and directory under `root`, deepest first, then `root` itself."""
    root = Path(root)
    for path in sorted(root.rglob("*"), reverse=True):
        fsync(path)
    fsync(root)


def temporary_sibling(target: str | Path, purpose: str = "") -> Path:
    """A unique name beside `target` (same filesystem: a rename commits it) that no reader takes
    for an output. Unique per call: threads of one process may write the same file."""
    target = Path(target)
    tag = f"{purpose}-" if purpose else ""
    return target.parent / f"{TEMP_MARKER}{tag}{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yields a temp path to write `target` at; then fsyncs it and renames it onto `target`, so
    readers see the old file or the new one, never a torn one (submitit's
    `temporary_save_path`, made durable). On an error the temp file is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_sibling(target)
    try:
        yield temp
        fsync(temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    fsync(target.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as temp:
        # Owner-only, as before: the ledger and the emulator's state are written here too.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def install_dir(staged: str | Path, final: str | Path) -> Path:
    """Rename a complete (already fsynced) dir into place. One already there is renamed aside
    to a temp name first and removed after, so a kill at any point leaves one whole dir."""
    staged, final = Path(staged), Path(final)
    aside = None
    if final.exists():
        aside = temporary_sibling(final, "old")
        os.replace(final, aside)
    os.replace(staged, final)
    fsync(final.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return final


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
