"""Bring a run's outputs home, verified: `orchestrate pull-artifacts`.

Steps, each safe to interrupt:
1. a marker in `runs/<run>/` with the verified sha256 makes a rerun a no-op (no download);
2. every output file is listed (all pages) and streamed to a staging dir next to the
   destination (`.part` files with Range resume and retries: the client does that);
3. `artifacts.zip` must match `artifacts.zip.sha256`; it is extracted by `safe_extract`
   into the staging dir, and every checkpoint's MANIFEST is checked there;
4. only then the staging dir is renamed to `runs/<run>/` (atomic: a reader sees the old
   pull or the new one). A mismatch never reaches `runs/<run>/`: the bad files are moved to
   `runs/<run>.rejected/<time>/` for a look, and the result says verified=False.

Files the session left outside the zip (the kernel was killed before finalizing, or wrote
more) are downloaded as they are, under the same name checks as zip entries.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from kernel_template import layout
from kernel_template.layout import CheckpointRef, SessionSummary
from orchestrator.errors import UserError
from orchestrator.kaggle.errors import KernelNotVisible
from orchestrator.safe_extract import (
    DEFAULT_MAX_TOTAL_BYTES,
    UnsafeArchive,
    checked_name,
    safe_extract,
)

MARKER_NAME = ".orchestrate-pull.json"
REJECTED_SUFFIX = ".rejected"


# What Kaggle's notebook runner writes next to a script's own outputs (see
# docs/kaggle-behaviour.md, runner-files): never ours, never pulled.
RUNNER_FILES = frozenset(
    {"__results__.html", "__output__.json", "__notebook__.ipynb", "custom.css"}
)


@dataclass(frozen=True)
class PulledFile:
    name: str
    size: int
    sha256: str | None = None
    source: str = "download"  # "download" (listed output) or "zip" (inside artifacts.zip)


@dataclass
class PullResult:
    """What a pull brought home: the one shape the ledger, the chain and the report read."""

    dir: Path  # runs/<slug>/ when verified, else where the rejected files were put
    files: list[PulledFile]
    verified: bool
    summary: SessionSummary | None
    artifacts_sha256: str | None
    checkpoint: CheckpointRef | None  # the newest checkpoint that verified
    problems: list[str] = field(default_factory=list)
    skipped: bool = False  # a verified pull was already there: nothing downloaded

    def to_json(self) -> dict:
        return {
            "dir": str(self.dir),
            "verified": self.verified,
            "skipped": self.skipped,
            "artifacts_sha256": self.artifacts_sha256,
            "checkpoint_hash": self.checkpoint.manifest_sha256 if self.checkpoint else None,
            "problems": self.problems,
            "files": [f.__dict__ for f in self.files],
            "summary": self.summary.model_dump(mode="json") if self.summary else None,
        }


class PullMarker(BaseModel):
    owner: str
    slug: str
    artifacts_sha256: str
    checkpoint: CheckpointRef | None = None
    checkpoint_hash: str | None = None  # markers written before checkpoint refs: the hash only
    files: list[dict]
    pulled_at: str

    def checkpoint_in(self, directory: Path) -> CheckpointRef | None:
        """The pull's checkpoint; for an older marker, the step is read from the manifest
        with its hash."""
        if self.checkpoint is not None or self.checkpoint_hash is None:
            return self.checkpoint
        found = layout.SessionPaths(directory).find_checkpoint(self.checkpoint_hash)
        if found is None:
            return None
        step = layout.read_manifest(found).num_timesteps
        return CheckpointRef(step=step, manifest_sha256=self.checkpoint_hash)


def read_marker(dest: Path, owner: str, slug: str) -> PullMarker | None:
    try:
        marker = PullMarker.model_validate_json((dest / MARKER_NAME).read_bytes())
    except (OSError, ValidationError):
        return None
    return marker if (marker.owner, marker.slug) == (owner, slug) else None


def read_summary(directory: Path) -> SessionSummary | None:
    path = layout.SessionPaths(directory).summary
    try:
        return SessionSummary.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def verify_checkpoints(directory: Path) -> tuple[CheckpointRef | None, list[str]]:
    """(the newest checkpoint that verifies, problems of those that do not)."""
    problems: list[str] = []
    newest: CheckpointRef | None = None
    for manifest_path in layout.SessionPaths(directory).checkpoint_manifests():
        where = manifest_path.parent.relative_to(directory)
        manifest, manifest_sha256, bad = layout.verify_checkpoint(manifest_path.parent)
        if manifest is None or bad:
            problems.extend(f"{where}/{item}" for item in bad)
            continue
        if newest is None or manifest.num_timesteps > newest.step:
            newest = CheckpointRef(step=manifest.num_timesteps, manifest_sha256=manifest_sha256)
    return newest, problems


def _rejected(
    staging: Path,
    dest: Path,
    files: list[PulledFile],
    problems: list[str],
    *,
    summary: SessionSummary | None = None,
    artifacts_sha256: str | None = None,
    checkpoint: CheckpointRef | None = None,
) -> PullResult:
    """An unverified pull: the bad download is kept for inspection, beside (never inside) the
    destination, with what it held (a verified zip's summary and checkpoint) for the report."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = dest.with_name(dest.name + REJECTED_SUFFIX) / stamp
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging / "download", target)
    (target / "PROBLEMS.txt").write_text("\n".join(problems) + "\n")
    return PullResult(
        dir=target,
        files=files,
        verified=False,
        summary=summary,
        artifacts_sha256=artifacts_sha256,
        checkpoint=checkpoint,
        problems=problems,
    )


def pull_artifacts(
    client,
    owner: str,
    slug: str,
    dest: Path,
    *,
    force: bool = False,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> PullResult:
    """Download, verify and extract a finished run's outputs into `dest` (= runs/<run>/)."""
    dest = Path(dest)
    marker = None if force else read_marker(dest, owner, slug)
    if marker is not None:
        return PullResult(
            dir=dest,
            files=[PulledFile(**f) for f in marker.files],
            verified=True,
            summary=read_summary(dest),
            artifacts_sha256=marker.artifacts_sha256,
            checkpoint=marker.checkpoint_in(dest),
            skipped=True,
        )

    try:
        status = client.status(owner, slug)
    except KernelNotVisible:
        raise UserError(
            f"Kaggle denies access to {owner}/{slug} (403): if it was just pushed, it is not "
            f"visible yet, so wait with `orchestrate watch {owner}/{slug}`; else check the name "
            "with `orchestrate runs`"
        ) from None
    if not status.is_terminal:
        raise UserError(
            f"{owner}/{slug} is {status.status}: its outputs exist once it ends; "
            f"wait with `orchestrate watch {owner}/{slug}`"
        )
    listing = client.list_output(owner, slug)
    by_name = {f.name: f for f in listing.files}
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = layout.temporary_sibling(dest, "staging")
    downloads = staging / "download"
    tree = staging / "tree"
    tree.mkdir(parents=True)
    try:
        return _pull_into(
            client, owner, slug, dest, staging, downloads, tree, by_name, max_total_bytes
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pull_into(
    client, owner, slug, dest, staging, downloads, tree, by_name, max_total_bytes
) -> PullResult:
    problems: list[str] = []
    files: list[PulledFile] = []
    artifacts_sha = None
    in_zip: set[str] = set()
    zip_file = by_name.get(layout.ARTIFACTS_ZIP)
    sidecar_file = by_name.get(layout.ARTIFACTS_SHA256)

    downloaded = layout.SessionPaths(downloads)
    if zip_file is not None:
        zip_path = downloaded.artifacts_zip
        got = client.download(zip_file.url, zip_path)
        files.append(PulledFile(layout.ARTIFACTS_ZIP, got.size, got.sha256))
        if sidecar_file is None:
            problems.append("artifacts.zip.sha256 is missing: the zip cannot be verified")
        else:
            sidecar_path = downloaded.artifacts_sha256
            side = client.download(sidecar_file.url, sidecar_path)
            files.append(PulledFile(layout.ARTIFACTS_SHA256, side.size, side.sha256))
            try:
                expected, named = layout.read_sha256sum(sidecar_path)
            except (ValueError, IndexError, UnicodeDecodeError):
                problems.append("artifacts.zip.sha256 is not in sha256sum format")
            else:
                if named != layout.ARTIFACTS_ZIP:
                    problems.append(f"artifacts.zip.sha256 names {named!r}, not artifacts.zip")
                elif expected != got.sha256:
                    problems.append(
                        f"artifacts.zip sha256 {got.sha256} != {expected} in artifacts.zip.sha256"
                    )
                else:
                    artifacts_sha = got.sha256
        if not problems:
            try:
                extracted = safe_extract(zip_path, tree, max_total_bytes=max_total_bytes)
            except (UnsafeArchive, zipfile.BadZipFile) as error:
                problems.append(f"artifacts.zip refused: {error}")
            else:
                in_zip = {e.name for e in extracted}
                files.extend(PulledFile(e.name, e.size, None, "zip") for e in extracted)
    else:
        problems.append("no artifacts.zip: the session ended before finalizing; raw outputs only")

    if problems and zip_file is not None:
        return _rejected(staging, dest, files, problems)

    # The rest of the listing: files outside the zip (or everything, without a zip), less the
    # files Kaggle's notebook runner adds to every session's outputs.
    for name, item in sorted(by_name.items()):
        if name in (layout.ARTIFACTS_ZIP, layout.ARTIFACTS_SHA256) or name in in_zip:
            continue
        if name in RUNNER_FILES:
            continue
        try:
            rel = checked_name(name)
        except UnsafeArchive as error:
            problems.append(f"output file refused: {error}")
            continue
        target = tree.joinpath(*rel.parts)
        if target.exists():
            continue
        got = client.download(item.url, target)
        files.append(PulledFile(str(rel), got.size, got.sha256))

    checkpoint, checkpoint_problems = verify_checkpoints(tree)
    problems.extend(checkpoint_problems)
    summary = read_summary(tree)
    verified = artifacts_sha is not None and not problems

    if zip_file is not None:
        # Keep the verified bundle itself beside its contents: it is the thing the hash names.
        for name in (layout.ARTIFACTS_ZIP, layout.ARTIFACTS_SHA256):
            if (downloads / name).exists() and not (tree / name).exists():
                os.replace(downloads / name, tree / name)
    if zip_file is not None and not verified:
        # The zip verified but a checkpoint inside did not: reject the whole pull.
        os.replace(tree, downloads / "extracted")
        return _rejected(
            staging,
            dest,
            files,
            problems,
            summary=summary,
            artifacts_sha256=artifacts_sha,
            checkpoint=checkpoint,
        )
    if verified:
        marker = PullMarker(
            owner=owner,
            slug=slug,
            artifacts_sha256=artifacts_sha,
            checkpoint=checkpoint,
            files=[f.__dict__ for f in files],
            pulled_at=layout.utc_now_iso(),
        )
        layout.atomic_write_text(tree / MARKER_NAME, marker.model_dump_json(indent=1))
    layout.install_dir(tree, dest)  # an older pull there is swapped out, then removed
    return PullResult(
        dir=dest,
        files=files,
        verified=verified,
        summary=summary,
        artifacts_sha256=artifacts_sha,
        checkpoint=checkpoint,
        problems=problems,
    )


# -- the result on screen -----------------------------------------------------------------------------


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render_result(console: Console, ref: str, result: PullResult) -> None:
    """The pull as a table of files, then the session summary's key figures."""
    mark = "verified" if result.verified else "NOT verified"
    title = f"{ref}: {mark}" + (" (already pulled)" if result.skipped else "")
    downloaded = [f for f in result.files if f.source == "download"]
    extracted = [f for f in result.files if f.source == "zip"]
    rows = [(item.name, _size(item.size), (item.sha256 or "")[:16]) for item in downloaded]
    if extracted:
        total = _size(sum(f.size for f in extracted))
        rows.append((f"({len(extracted)} files from artifacts.zip)", total, ""))
    if console.is_terminal:
        table = Table(title=title)
        for column in ("file", "size", "sha256"):
            table.add_column(column, justify="right" if column == "size" else "left")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:  # plain lines when stdout is not a terminal
        console.print(title, markup=False, soft_wrap=True)
        for name, size, digest in rows:
            console.print(f"{name}  {size}  {digest}".rstrip(), markup=False, soft_wrap=True)
    console.print(f"into: {result.dir}", markup=False, soft_wrap=True)
    if result.checkpoint:
        console.print(f"checkpoint: {result.checkpoint.manifest_sha256}", markup=False)
    summary = result.summary
    if summary is not None:
        wall = summary.wall
        sps = f"{summary.seconds_per_step:.4g} s/step" if summary.seconds_per_step else "? s/step"
        console.print(
            f"session: {summary.status} ({summary.reason}); steps {summary.timesteps_start} -> "
            f"{summary.timesteps_end} of {summary.total_timesteps}; {sps}",
            markup=False,
            soft_wrap=True,
        )
        console.print(
            f"wall: total {wall.total:.0f} s = setup {wall.setup:.0f} + training {wall.training:.0f} "
            f"+ checkpointing {wall.checkpointing:.0f} + evaluation {wall.evaluation:.0f} "
            f"+ exporting {wall.exporting:.0f} + finalization {wall.finalization:.0f}",
            markup=False,
            soft_wrap=True,
        )
    for problem in result.problems:
        console.print(f"problem: {problem}", markup=False, soft_wrap=True)
