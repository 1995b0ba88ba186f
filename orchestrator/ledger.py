"""The ledger: the orchestrator's memory of every run and chain, in `.orchestrate/ledger.json`.

One JSON document, replaced atomically (temp file, fsync, rename) under an fcntl lock on
`.orchestrate/ledger.lock`. A SIGKILL at any point leaves either the old document or the new
one, and the kernel drops a dead process's lock by itself, so nothing needs cleaning up.
Reads need no lock; read-decide-write steps hold `locked()` around all three.

The lock is re-entrant within a process (`launch()` writes its intent while `chain step`
already holds it), and `locked(timeout=...)` lets a second scheduler invocation give up quickly.

Nothing here ever holds a credential: records carry slugs, hashes, statuses and figures only.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kernel_template import layout
from kernel_template.layout import CheckpointRef, SessionSummary, atomic_write_text, utc_now_iso
from orchestrator.chain.states import ChainState
from orchestrator.errors import InfrastructureError, UserError
from orchestrator.kaggle.models import VISIBILITY_GRACE_S

LEDGER_DIR = ".orchestrate"
LEDGER_FILE = "ledger.json"
RUNS_DIR = "runs"  # runs/<slug>/: where a run's verified outputs are pulled to
LOCK_FILE = "ledger.lock"
FORMAT_VERSION = 1

RunState = Literal["intent", "pushed", "running", "terminal", "pulled", "failed_push"]
# GPU quota a chain keeps free (`[chain] quota_reserve_h` in orchestrate.toml, in hours there).
DEFAULT_QUOTA_RESERVE_S = 1800.0


def seconds_since(iso_time: str | None) -> float:
    """Seconds from a ledger timestamp (ISO, UTC) to now; infinity for none."""
    if not iso_time:
        return float("inf")
    moment = datetime.fromisoformat(iso_time.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - moment).total_seconds()


def upgrade_run_record(data: dict[str, Any]) -> dict[str, Any]:
    """A run record as older ledgers wrote it, in today's words: `run` was the slug; the
    checkpoint was `checkpoint_hash` + `checkpoint_step`; a run pulled by hand kept only
    some figures of its summary (the rest is unknown: empty, zero)."""
    if not {"run", "checkpoint_hash", "checkpoint_step"} & data.keys() and not _partial(
        data.get("summary")
    ):
        return data
    data = {**data}
    if "run" in data and "slug" not in data:
        data["slug"] = data.pop("run")
    digest, step = data.pop("checkpoint_hash", None), data.pop("checkpoint_step", None)
    summary = data.get("summary")
    if _partial(summary):
        summary = data["summary"] = {
            "config_hash": data.get("config_hash") or "",
            "started_at": "",
            "ended_at": "",
            "session_limit_s": 0.0,
            **summary,
        }
    if step is None and isinstance(summary, dict):
        left = summary.get("left_checkpoint") or {}
        step = left.get("step") if left.get("manifest_sha256") == digest else None
    if digest and step is not None and "checkpoint" not in data:
        data["checkpoint"] = {"step": step, "manifest_sha256": digest}
    return data


def _partial(summary: Any) -> bool:
    """The figures `pull-artifacts` used to keep instead of the whole summary."""
    return isinstance(summary, dict) and "started_at" not in summary


class LedgerBusy(InfrastructureError):
    """Another process holds the ledger lock (e.g. an overlapping `chain step`)."""


class RunRecord(BaseModel):
    """One kernel session we pushed (or were about to push): one slug, one record."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    slug: str = Field(description="the kernel's slug; unique per session, so it names the run")
    owner: str
    chain: str | None = None
    segment: int | None = None
    attempt: int = 0
    state: RunState = "intent"
    kernel_status: str | None = None
    config_hash: str | None = None
    machine_shape: str | None = None
    created_at: str = Field(default_factory=utc_now_iso)
    pushed_at: str | None = None
    version: int | None = None
    url: str | None = None
    pulled_dir: str | None = None
    artifacts_sha256: str | None = None
    checkpoint: CheckpointRef | None = Field(
        default=None, description="the newest verified checkpoint the run left"
    )
    summary: SessionSummary | None = Field(
        default=None, description="the run's session_summary.json, as pulled"
    )
    gpu_seconds: float | None = None
    failure_message: str | None = None
    refusal: str | None = Field(
        default=None,
        description="why Kaggle refused the push (failed_push): capacity, quota, throttled, "
        "image or rejected",
    )
    pull_failures: int = 0
    early_error: str | None = Field(
        default=None,
        description="the error the session stopped on before its first training step (its "
        "summary's, else its log's): the chain stops on it instead of retrying",
    )
    terminal_at: str | None = Field(default=None, description="when we first saw it terminal")
    pulled_at: str | None = None
    docker_image: str | None = Field(
        default=None, description="the image the push asked for; None: Kaggle's choice"
    )
    progress_watch: dict[str, Any] | None = Field(
        default=None, description="what a chain's progress checks saw (orchestrator.chain.stall)"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_older_ledgers(cls, data: Any) -> Any:
        return upgrade_run_record(data) if isinstance(data, dict) else data

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.slug}"

    def cli_json(self) -> dict[str, Any]:
        """The record as `--json` has always printed it: `run` for the slug, the checkpoint
        as `checkpoint_hash` and `checkpoint_step` (scripts read those keys)."""
        data = self.model_dump(mode="json")
        checkpoint = data.pop("checkpoint") or {}
        return {
            "run": data.pop("slug"),
            **data,
            "checkpoint_hash": checkpoint.get("manifest_sha256"),
            "checkpoint_step": checkpoint.get("step"),
        }

    def seconds_since_push(self) -> float:
        """Since the push (or, unconfirmed, the intent before it): Kaggle's read lag counts
        from there."""
        return seconds_since(self.pushed_at or self.created_at)


class Note(BaseModel):
    """A line in a chain's history: decisions worth keeping, and alerts."""

    time: str = Field(default_factory=utc_now_iso)
    level: Literal["info", "warning", "alert"] = "info"
    message: str


class StartPoint(BaseModel):
    """The verified checkpoint a segment starts from, and the output that holds it: a run's
    kernel output (a segment of this chain or another run), or a dataset uploaded from a
    local checkpoint dir. A chain's `start_from` is one from outside its own runs."""

    kind: Literal["kernel", "dataset"] = "kernel"
    owner: str
    slug: str = Field(description="the kernel's or the dataset's slug")
    checkpoint: CheckpointRef
    source: str | None = Field(
        default=None, description="`--from`: what the user named, a run or a local checkpoint dir"
    )
    ready: bool = Field(
        default=True, description="a dataset: Kaggle has processed it (READY), so it attaches"
    )
    created_at: str | None = Field(default=None, description="when `--from` recorded it")

    @model_validator(mode="before")
    @classmethod
    def _from_older_ledgers(cls, data: Any) -> Any:
        if isinstance(data, dict) and "checkpoint_hash" in data:  # before checkpoint refs
            data = {**data}
            data["checkpoint"] = {
                "step": data.pop("step"),
                "manifest_sha256": data.pop("checkpoint_hash"),
            }
        return data

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.slug}"

    @property
    def step(self) -> int:
        return self.checkpoint.step


class ChainRecord(BaseModel):
    """A training run split into segments that each fit one session."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str
    owner: str | None = None
    run_config: dict[str, Any] = Field(description="RunConfig as JSON, without segment fields")
    config_hash: str
    total_timesteps: int
    segments: list[int] = Field(description="planned timesteps per segment, summing to the total")
    segment_seconds: list[float] | None = Field(
        default=None, description="planned wall s per segment"
    )
    quota_reserve_s: float = Field(
        default=DEFAULT_QUOTA_RESERVE_S, ge=0, description="GPU quota kept free"
    )
    state: ChainState = ChainState.ACTIVE
    created_at: str = Field(default_factory=utc_now_iso)
    updated_at: str = Field(default_factory=utc_now_iso)
    max_retries: int = 2
    max_unknowns: int = 5
    consecutive_unknowns: int = 0
    intent_grace_s: float = Field(
        default=VISIBILITY_GRACE_S,
        ge=0,
        description="how long an unconfirmed push may stay unlisted before it is declared lost",
    )
    parent_retry_s: float = Field(
        default=120.0,
        ge=0,
        description="delay before a segment that found no parent checkpoint is pushed again "
        "(a just-finished kernel's output may take a while to be attachable)",
    )
    wait_until: str | None = Field(
        default=None, description="ISO time before which no push is tried"
    )
    waiting_reason: str | None = None
    docker_image: str | None = Field(
        default=None,
        description="the image every later segment is pushed with: [kernel] docker_image, "
        "else the one the first segment reported",
    )
    image_unpinned: bool = Field(
        default=False,
        description="Kaggle refused the pinned image once: pushes go without a pin since",
    )
    reference_versions: dict[str, str] | None = Field(
        default=None,
        description="the first pulled segment's versions, which later segments must match",
    )
    reference_run: str | None = Field(default=None, description="the run they came from")
    start_from: StartPoint | None = Field(
        default=None, description="`chain start --from` / `chain resume --from`"
    )
    runtime_sha256: str | None = Field(
        default=None,
        description="the runtime bundle rendered at chain start (orchestrator.chain.bundle); "
        "None: a chain from before, whose pushes render their own",
    )
    forgiven_runs: list[str] = Field(
        default_factory=list,
        description="runs whose failures `chain resume` forgave: no longer counted in max_retries",
    )
    notes: list[Note] = Field(default_factory=list)

    @field_validator("state", mode="before")
    @classmethod
    def _no_waiting_state(cls, value: Any) -> Any:
        # Older code declared a "waiting" chain state; a waiting chain is active.
        return ChainState.ACTIVE if value == "waiting" else value

    def note(self, message: str, level: Literal["info", "warning", "alert"] = "info") -> None:
        self.notes = [*self.notes[-199:], Note(level=level, message=message)]

    def cli_json(self) -> dict[str, Any]:
        """The record as `--json` has always printed it: the start point's checkpoint as
        `checkpoint_hash` and `step`."""
        data = self.model_dump(mode="json")
        start = data.get("start_from")
        if start is not None:
            checkpoint = start.pop("checkpoint")
            data["start_from"] = {
                "kind": start.pop("kind"),
                "owner": start.pop("owner"),
                "slug": start.pop("slug"),
                "checkpoint_hash": checkpoint["manifest_sha256"],
                "step": checkpoint["step"],
                **start,
            }
        return data


class LedgerDocument(BaseModel):
    format_version: int = FORMAT_VERSION
    runs: dict[str, RunRecord] = Field(default_factory=dict)
    chains: dict[str, ChainRecord] = Field(default_factory=dict)


# One lock holder per ledger path per process: flock on a second descriptor of the same
# file would block against ourselves, so nested `locked()` calls share the first one.
# Other threads get their own descriptor, so flock serialises them like other processes.
_held: dict[tuple[str, int], tuple[int, int]] = {}  # (lock path, thread) -> (fd, depth)
_held_guard = threading.RLock()


class Ledger:
    def __init__(self, project_dir: str | Path) -> None:
        self.project_dir = Path(project_dir)
        self.dir = self.project_dir / LEDGER_DIR
        self.path = self.dir / LEDGER_FILE
        self.lock_path = self.dir / LOCK_FILE

    # -- paths -----------------------------------------------------------------------------
    # Paths are stored relative to the project, so a ledger still finds its files after the
    # project moved or on a fresh checkout (a CI runner). Older ledgers hold absolute ones.

    def project_relative(self, path: str | Path) -> str:
        """`path` relative to the project when it lies inside it, else absolute."""
        absolute = Path(path).resolve()
        try:
            return absolute.relative_to(self.project_dir.resolve()).as_posix()
        except ValueError:
            return str(absolute)

    def pulled_path(self, run: RunRecord) -> Path | None:
        """Where the run's pulled outputs are now (they may have been deleted since)."""
        if not run.pulled_dir:
            return None
        stored = Path(run.pulled_dir)
        if not stored.is_absolute():
            return self.project_dir / stored
        moved = self.project_dir / RUNS_DIR / run.slug  # an absolute path from before a move
        return moved if not stored.exists() and moved.exists() else stored

    def _relative_paths(self, fields: dict[str, Any]) -> dict[str, Any]:
        if fields.get("pulled_dir"):
            fields = {**fields, "pulled_dir": self.project_relative(fields["pulled_dir"])}
        return fields

    # -- locking ---------------------------------------------------------------------------

    @contextmanager
    def locked(self, timeout: float | None = None, poll: float = 0.05) -> Iterator[Ledger]:
        """Hold the ledger lock; `timeout=None` waits, otherwise LedgerBusy after `timeout` s."""
        self.dir.mkdir(parents=True, exist_ok=True)
        key = (str(self.dir.resolve() / LOCK_FILE), threading.get_ident())
        with _held_guard:
            if key in _held:
                fd, depth = _held[key]
                _held[key] = (fd, depth + 1)
                nested = True
            else:
                nested = False
        if nested:
            try:
                yield self
            finally:
                with _held_guard:
                    fd, depth = _held[key]
                    _held[key] = (fd, depth - 1)
            return

        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._acquire(fd, timeout, poll)
        except BaseException:
            os.close(fd)
            raise
        with _held_guard:
            _held[key] = (fd, 1)
        try:
            yield self
        finally:
            with _held_guard:
                del _held[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _acquire(self, fd: int, timeout: float | None, poll: float) -> None:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LedgerBusy(
                        f"another orchestrate process holds {self.lock_path}; "
                        "it is probably a chain step still running, try again shortly"
                    ) from None
                time.sleep(poll)

    # -- document --------------------------------------------------------------------------

    def _read(self) -> LedgerDocument:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return LedgerDocument()
        try:
            document = LedgerDocument.model_validate(self._with_legacy_steps(json.loads(text)))
        except (json.JSONDecodeError, ValidationError) as error:
            first = str(error).splitlines()[0]
            raise UserError(
                f"ledger {self.path} is unreadable ({first}); restore it from a backup or move it aside"
            ) from None
        if document.format_version > FORMAT_VERSION:
            raise UserError(
                f"ledger {self.path} has format {document.format_version}, newer than this "
                f"orchestrate understands ({FORMAT_VERSION}); upgrade kaggle-orchestrate"
            )
        return document

    def _with_legacy_steps(self, data: Any) -> Any:
        """Older `pull-artifacts` kept a run's checkpoint hash without its step: read the step
        from the pulled checkpoint with that manifest hash, if the pull is still there."""
        runs = data.get("runs") if isinstance(data, dict) else None
        for record in (runs or {}).values():
            if not isinstance(record, dict) or record.get("checkpoint_step") is not None:
                continue
            digest, pulled = record.get("checkpoint_hash"), record.get("pulled_dir")
            if not digest or not pulled:
                continue
            found = layout.SessionPaths(self.project_dir / pulled).find_checkpoint(digest)
            try:
                step = layout.read_manifest(found).num_timesteps if found else None
            except (OSError, ValueError):  # a damaged pull: the step stays unknown
                step = None
            record["checkpoint_step"] = step
        return data

    def _write(self, document: LedgerDocument) -> None:
        atomic_write_text(self.path, document.model_dump_json(indent=1) + "\n")

    @contextmanager
    def _modify(self) -> Iterator[LedgerDocument]:
        with self.locked():
            document = self._read()
            yield document
            self._write(document)

    # -- runs ------------------------------------------------------------------------------

    def record_intent(self, record: RunRecord) -> RunRecord:
        """Write a run before its push. A slug already in the ledger is never reused."""
        with self._modify() as document:
            if record.slug in document.runs:
                raise UserError(
                    f"run {record.slug!r} is already in the ledger; pick a new slug "
                    "(Kaggle shows only the latest session of a slug)"
                )
            record = record.model_copy(
                update=self._relative_paths({"state": "intent", "pulled_dir": record.pulled_dir})
            )
            document.runs[record.slug] = record
        return record

    def update(self, slug: str, **fields: Any) -> RunRecord:
        with self._modify() as document:
            current = document.runs.get(slug)
            if current is None:
                raise KeyError(f"run {slug!r} is not in the ledger")
            updated = RunRecord.model_validate(
                {**current.model_dump(), **self._relative_paths(fields)}
            )
            document.runs[slug] = updated
        return updated

    def get(self, slug: str) -> RunRecord | None:
        return self._read().runs.get(slug)

    def runs(self, chain: str | None = None) -> list[RunRecord]:
        """Runs in creation order; with `chain`, only that chain's, by segment and attempt."""
        records = list(self._read().runs.values())
        if chain is None:
            return records
        mine = [r for r in records if r.chain == chain]
        return sorted(mine, key=lambda r: (r.segment or 0, r.attempt))

    # -- chains ----------------------------------------------------------------------------

    def create_chain(self, record: ChainRecord) -> ChainRecord:
        with self._modify() as document:
            if record.name in document.chains:
                raise UserError(
                    f"chain {record.name!r} already exists; use `orchestrate chain step {record.name}` "
                    "to continue it or pick another name"
                )
            document.chains[record.name] = record
        return record

    def get_chain(self, name: str) -> ChainRecord | None:
        return self._read().chains.get(name)

    def chains(self) -> list[ChainRecord]:
        return list(self._read().chains.values())

    def update_chain(self, name: str, **fields: Any) -> ChainRecord:
        with self._modify() as document:
            current = document.chains.get(name)
            if current is None:
                raise KeyError(f"chain {name!r} is not in the ledger")
            data = {**current.model_dump(), **fields, "updated_at": utc_now_iso()}
            document.chains[name] = ChainRecord.model_validate(data)
        return document.chains[name]

    def save_chain(self, record: ChainRecord) -> ChainRecord:
        """Replace a chain record wholesale (after editing a copy under `locked()`)."""
        with self._modify() as document:
            if record.name not in document.chains:
                raise KeyError(f"chain {record.name!r} is not in the ledger")
            record = record.model_copy(update={"updated_at": utc_now_iso()})
            document.chains[record.name] = record
        return record

    def note(
        self, chain: str, message: str, level: Literal["info", "warning", "alert"] = "info"
    ) -> ChainRecord:
        with self._modify() as document:
            record = document.chains[chain]
            record.note(message, level)
            record.updated_at = utc_now_iso()
        return record
