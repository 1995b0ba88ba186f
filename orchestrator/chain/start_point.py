"""Checkpoints a chain continues from outside its own runs (`--from`): a pulled run's kernel
output, or a verified local checkpoint dir uploaded as a private Kaggle dataset.

A run is attached as a parent kernel (`kernel_sources`), as the chain's own segments are.
A local dir is zipped as `artifacts.zip` (holding `checkpoints/<step>/`, the layout a
kernel's own output has), uploaded through the API, and attached as a dataset
(`dataset_sources`) once Kaggle has processed it: a dataset is not attachable at once,
so the step that would push waits for GetDatasetStatus to say READY.

Everything is checked locally before anything is uploaded: the checkpoint verifies (every
file against its manifest), and it was made under this chain's config (result fields)
or one that differs only where the config allows.
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from kernel_template import layout
from kernel_template.config import RunConfig, changes_allowed, diff_result_fields
from orchestrator.errors import UserError
from orchestrator.kaggle.models import VISIBILITY_GRACE_S
from orchestrator.ledger import ChainRecord, Ledger, StartPoint, seconds_since
from orchestrator.settings import Settings

DATASET_SLUG_PREFIX = "ckpt-"
UPLOAD_NAME = layout.ARTIFACTS_ZIP


@dataclass(frozen=True)
class LocalCheckpoint:
    directory: Path
    manifest: layout.CheckpointManifest
    manifest_sha256: str

    @property
    def step(self) -> int:
        return self.manifest.num_timesteps


@dataclass(frozen=True)
class CheckpointSource:
    """What `--from` named, resolved and verified locally; nothing uploaded yet."""

    label: str  # as the user wrote it
    checkpoint: LocalCheckpoint | None  # the local copy (None: a run whose copy is gone)
    slug: str | None = None  # a pulled run: attached as a parent kernel
    owner: str | None = None
    manifest_sha256: str = ""
    step: int = 0
    config_hash: str | None = None

    @property
    def kind(self) -> str:
        return "kernel" if self.slug else "dataset"

    @property
    def ref(self) -> layout.CheckpointRef:
        return layout.CheckpointRef(step=self.step, manifest_sha256=self.manifest_sha256)


# -- finding and verifying ---------------------------------------------------------------


def _read_checkpoint(directory: Path) -> tuple[LocalCheckpoint | None, list[str]]:
    manifest, manifest_sha256, problems = layout.verify_checkpoint(directory)
    if manifest is None or manifest_sha256 is None or problems:
        return None, problems
    return LocalCheckpoint(directory, manifest, manifest_sha256), []


def verified_local_checkpoint(path: Path) -> LocalCheckpoint:
    """A checkpoint dir (with MANIFEST.json) that verifies, or the newest verifying one in a
    run's output dir (with `checkpoints/`); UserError naming what is wrong otherwise."""
    path = path.expanduser()
    if layout.is_temporary(path.name):
        raise UserError(
            f"--from {path}: a checkpoint being written or removed (a temp dir), never a "
            "checkpoint; name its run's output dir or a committed checkpoints/<step> dir"
        )
    if (path / layout.MANIFEST_NAME).is_file():
        checkpoint, problems = _read_checkpoint(path)
        if checkpoint is None:
            raise UserError(
                f"--from {path}: the checkpoint does not verify ({'; '.join(problems[:3])}); "
                "name another checkpoint dir"
            )
        return checkpoint
    paths = layout.SessionPaths(path)
    root = paths.checkpoints
    if not root.is_dir():
        raise UserError(
            f"--from {path}: not a checkpoint dir (no {layout.MANIFEST_NAME}) nor a run's output "
            f"dir (no {layout.CHECKPOINTS_DIR}/); name one, e.g. runs/<slug>/checkpoints/<step>"
        )
    for directory in reversed(paths.checkpoint_dirs()):
        checkpoint, _ = _read_checkpoint(directory)
        if checkpoint is not None:
            return checkpoint
    raise UserError(f"--from {path}: no checkpoint under {root} verifies; name another dir")


def resolve_source(ledger: Ledger, text: str) -> CheckpointSource:
    """`--from RUN_OR_CHECKPOINT_DIR`: a pulled run in the ledger, else a local dir."""
    run = ledger.get(text)
    if run is not None:
        if run.state != "pulled" or run.checkpoint is None:
            raise UserError(
                f"--from {text}: run {run.ref} left no verified checkpoint in the ledger "
                f"(state {run.state}); name a pulled run with a checkpoint, or a checkpoint dir"
            )
        local = None
        if run.pulled_dir:
            directory = layout.SessionPaths(run.pulled_dir).checkpoint(run.checkpoint.step)
            local, _ = _read_checkpoint(directory)
        return CheckpointSource(
            label=text,
            checkpoint=local,
            slug=run.slug,
            owner=run.owner,
            manifest_sha256=run.checkpoint.manifest_sha256,
            step=run.checkpoint.step,
            config_hash=run.config_hash,
        )
    path = Path(text)
    if not path.exists():
        raise UserError(
            f"--from {text!r} is neither a run in {ledger.path} nor a directory; name a pulled "
            "run (see `orchestrate runs`) or a checkpoint dir such as runs/<slug>/checkpoints/<step>"
        )
    checkpoint = verified_local_checkpoint(path)
    return CheckpointSource(
        label=text,
        checkpoint=checkpoint,
        manifest_sha256=checkpoint.manifest_sha256,
        step=checkpoint.step,
        config_hash=checkpoint.manifest.config_hash,
    )


def config_changes(source: CheckpointSource, run_config: RunConfig) -> list[str]:
    """Result fields the checkpoint's config has other than `run_config` (allowed ones left
    out); UserError when that cannot be told (a manifest without its result fields)."""
    config_hash = run_config.config_hash()
    if source.config_hash == config_hash:
        return []
    manifest = source.checkpoint.manifest if source.checkpoint else None
    stored = getattr(manifest, "result_fields", None)
    if not isinstance(stored, dict):
        raise UserError(
            f"--from {source.label}: the checkpoint was made with config hash "
            f"{(source.config_hash or '?')[:12]}, this chain has {config_hash[:12]}; "
            "use the original [run] settings"
        )
    differing = diff_result_fields(stored, run_config.result_fields())
    return changes_allowed(differing, run_config.allow_config_change)


def refuse_changes(source: CheckpointSource, changed: list[str]) -> None:
    if changed:
        raise UserError(
            f"--from {source.label}: the checkpoint was made with a different config (fields: "
            f"{', '.join(changed)}); set them back in orchestrate.toml, or list them in [run] "
            "allow_config_change if the change is intended"
        )


def allowing_total_change(run_config: RunConfig) -> RunConfig:
    """The config with `total_timesteps` among the changes a resume may make (the schedule
    horizon follows the new total from the resumed step on)."""
    if "total_timesteps" in run_config.allow_config_change:
        return run_config
    allowed = [*run_config.allow_config_change, "total_timesteps"]
    return run_config.with_changes(allow_config_change=allowed)


# -- uploading ---------------------------------------------------------------------------


def dataset_slug(manifest_sha256: str) -> str:
    """Named by content: uploading the same checkpoint again finds the earlier dataset."""
    return f"{DATASET_SLUG_PREFIX}{manifest_sha256[:24]}"


def zip_checkpoint(checkpoint: LocalCheckpoint, dest: Path) -> Path:
    """`artifacts.zip` holding `checkpoints/<step>/...`, the layout of a kernel's own output."""
    prefix = layout.SessionPaths("").checkpoint(checkpoint.step).as_posix()  # inside the zip
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(checkpoint.directory.rglob("*")):
            if path.is_file():
                relative = path.relative_to(checkpoint.directory).as_posix()
                archive.write(path, f"{prefix}/{relative}")
    return dest


def upload_start_point(client, owner: str, source: CheckpointSource) -> StartPoint:
    """The StartPoint for a resolved source: a run as it is; a local dir uploaded first."""
    if source.slug is not None:
        return StartPoint(
            kind="kernel",
            owner=source.owner or owner,
            slug=source.slug,
            checkpoint=source.ref,
            source=source.label,
            created_at=layout.utc_now_iso(),
        )
    assert source.checkpoint is not None
    slug = dataset_slug(source.manifest_sha256)
    title = f"Checkpoint step {source.step} {source.manifest_sha256[:8]}"
    with tempfile.TemporaryDirectory(prefix="orchestrate-upload-") as tmp:
        archive = zip_checkpoint(source.checkpoint, Path(tmp) / UPLOAD_NAME)
        client.create_dataset(owner, slug, title, [archive], private=True)
    return StartPoint(
        kind="dataset",
        owner=owner,
        slug=slug,
        checkpoint=source.ref,
        source=str(source.checkpoint.directory),
        ready=False,
        created_at=layout.utc_now_iso(),  # Kaggle's processing is timed from here
    )


# -- during a step -----------------------------------------------------------------------


def with_dataset_sources(settings: Settings, refs: list[str]) -> Settings:
    sources = list(dict.fromkeys([*settings.kernel.dataset_sources, *refs]))
    kernel = settings.kernel.model_copy(update={"dataset_sources": sources})
    return settings.model_copy(update={"kernel": kernel})


def dataset_gate(stepper, chain: ChainRecord):
    """None once the start dataset is READY; else a waiting StepResult (Kaggle attaches a
    dataset only once processed: a kernel pushed before gets nothing)."""
    from orchestrator.chain.states import StepOutcome, StepResult
    from orchestrator.kaggle.datasets import NOT_VISIBLE, READY
    from orchestrator.kaggle.errors import AuthenticationError, KaggleError

    start = chain.start_from
    if start is None or start.kind != "dataset" or start.ready:
        return None
    try:
        status = stepper.client.dataset_status(start.owner, start.slug)
    except AuthenticationError:
        raise
    except KaggleError as error:
        return stepper._unknown(chain, f"status of dataset {start.ref} unreadable", error)
    stepper._known(chain)
    if status == READY:
        chain = stepper.ledger.get_chain(chain.name)
        chain.start_from = start.model_copy(update={"ready": True})
        chain.note(f"dataset {start.ref} is READY: the next segment resumes from it")
        stepper.ledger.save_chain(chain)
        return None
    age = seconds_since(start.created_at)
    if status == NOT_VISIBLE and age > VISIBILITY_GRACE_S:
        return stepper._alert(
            chain,
            f"dataset {start.ref} has been denied (403) for {age:.0f} s since its upload: was "
            f"it deleted on kaggle.com? upload the checkpoint again with `orchestrate chain "
            f"resume {chain.name} --from {start.source}`",
        )
    return StepResult(
        chain.name,
        StepOutcome.WAITING,
        f"dataset {start.ref} is {status} ({age:.0f} s since its upload): Kaggle processes a "
        "new dataset before it can be attached; checking again",
    )
