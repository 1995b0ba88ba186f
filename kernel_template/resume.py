"""Find the checkpoint to resume from, verify it, and bring it into this session's outputs.

Searched: the working dir (a restarted session) and the input dir, in both Kaggle mount
layouts (`<input>/notebooks/<owner>/<slug>/` and the legacy `<input>/<slug>/`) and with
the input dir being a parent's output itself; inside an `artifacts.zip` when that is all
a parent left. The newest checkpoint that verifies wins; corrupt ones are skipped with a
warning naming the bad file. A checkpoint made under a different config is refused,
naming the differing fields, unless each is listed in `allow_config_change`.

A chain segment names its parent (`RunConfig.parent`: owner, slug, step, manifest hash,
kind). Then only that checkpoint will do, and only the parent's exact mounts are looked at
(`<input>/notebooks/<owner>/<slug>/` for a kernel, `<input>/datasets/<owner>/<slug>/` for a
dataset, legacy `<input>/<slug>/` for both; never a walk of `<input>`,
which can take minutes on Kaggle), re-checked for `parent_wait_s` since a just-finished
parent may be attached late. Not found in time: `ParentMissing`, and the session trains
nothing. A later segment (segment_index > 1) without a parent is refused the same way.
"""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kernel_template import layout
from kernel_template.config import ParentRef, RunConfig, changes_allowed, diff_result_fields

# How often the parent's mounts are looked at again while waiting for them.
PARENT_POLL_S = 2.0
# Most names listed per directory in a ParentMissing report.
LISTING_LIMIT = 50
# Where a dataset's uploaded artifacts.zip lands when Kaggle decompresses it into a folder.
DATASET_ARCHIVE_DIR = "artifacts"


class ResumeRefused(RuntimeError):
    """The newest sound checkpoint was made under a config this run may not continue."""


class ParentMissing(RuntimeError):
    """The segment cannot prove its lineage: it must stop without training.

    `reason` is `layout.PARENT_MISSING_REASON` or `layout.PARENT_REQUIRED_REASON`;
    `input_seen` is a shallow listing of the input dirs looked at."""

    def __init__(self, message: str, reason: str, input_seen: dict[str, list[str] | None]):
        super().__init__(message)
        self.reason = reason
        self.input_seen = input_seen


@dataclass
class Candidate:
    step: int
    directory: Path | None  # a checkpoint dir on disk, or None for one inside a zip
    zip_path: Path | None = None
    zip_prefix: str = ""  # "checkpoints/<step>/" inside the zip
    origin: str = ""

    @property
    def output_dir(self) -> Path:
        if self.zip_path is not None:
            return self.zip_path.parent
        assert self.directory is not None
        return self.directory.parent.parent

    @property
    def label(self) -> str:
        if self.zip_path:
            return f"{self.zip_path}!{self.zip_prefix}"
        return str(self.directory)


@dataclass
class ResumePoint:
    directory: Path  # verified, inside this session's working dir
    manifest: layout.CheckpointManifest
    manifest_sha256: str
    source: str  # where it was found
    source_output_dir: Path  # the output dir (working dir or a parent's) that held it
    steps_redone: int = 0


def output_dirs(working_dir: Path, input_dir: Path) -> list[tuple[str, Path]]:
    """Directories that may hold a session's outputs, working dir first."""
    found = [("working", working_dir)]
    if input_dir.is_dir():
        found.append(("input", input_dir))
        for child in sorted(input_dir.iterdir()):
            if not child.is_dir():
                continue
            found.append(("input", child))  # legacy <input>/<slug>/
            if child.name in ("notebooks", "datasets", "kernels"):
                for owner in sorted(p for p in child.iterdir() if p.is_dir()):
                    found.extend(
                        ("input", slug) for slug in sorted(owner.iterdir()) if slug.is_dir()
                    )
    return found


def find_candidates(working_dir: Path, input_dir: Path) -> list[Candidate]:
    """Every checkpoint on disk or in an artifacts.zip, newest step first."""
    candidates: list[Candidate] = []
    for origin, directory in output_dirs(working_dir, input_dir):
        paths = layout.SessionPaths(directory)
        on_disk = paths.checkpoint_dirs()
        candidates += [Candidate(int(p.name), p, origin=origin) for p in on_disk]
        archive = paths.artifacts_zip
        if not on_disk and archive.is_file():
            candidates += _zip_candidates(archive, origin)
    # Newest first; at equal steps prefer the working dir (no copy needed), then disk over zip.
    order = {"working": 0, "input": 1}
    candidates.sort(key=lambda c: (-c.step, order.get(c.origin, 2), c.zip_path is not None))
    return candidates


def _zip_candidates(archive: Path, origin: str) -> list[Candidate]:
    try:
        with zipfile.ZipFile(archive) as handle:
            names = handle.namelist()
    except (zipfile.BadZipFile, OSError):
        return []
    found = []
    for name in names:
        parts = PurePosixPath(name).parts
        if (
            len(parts) >= 3
            and parts[-1] == layout.MANIFEST_NAME
            and parts[-3] == layout.CHECKPOINTS_DIR
            and layout.is_checkpoint_name(parts[-2])
        ):
            prefix = str(PurePosixPath(*parts[:-1])) + "/"
            found.append(Candidate(int(parts[-2]), None, archive, prefix, origin))
    return found


def _extract_checkpoint(candidate: Candidate, dest: Path) -> None:
    """Extract only this checkpoint's members, refusing paths that escape `dest`."""
    assert candidate.zip_path is not None
    with zipfile.ZipFile(candidate.zip_path) as handle:
        for info in handle.infolist():
            if not info.filename.startswith(candidate.zip_prefix) or info.is_dir():
                continue
            relative = PurePosixPath(info.filename[len(candidate.zip_prefix) :])
            if relative.is_absolute() or ".." in relative.parts:
                raise ValueError(f"unsafe path {info.filename!r} in {candidate.zip_path}")
            target = dest.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with handle.open(info) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)


def check_config(manifest: layout.CheckpointManifest, config: RunConfig, where: str) -> None:
    config_hash = config.config_hash()
    if manifest.config_hash == config_hash:
        return
    stored = getattr(manifest, "result_fields", None)
    if not isinstance(stored, dict):
        raise ResumeRefused(
            f"checkpoint {where} was made with config hash {manifest.config_hash[:12]}, this run has "
            f"{config_hash[:12]}; start a new run or resume with the original config"
        )
    differing = diff_result_fields(stored, config.result_fields())
    refused = changes_allowed(differing, config.allow_config_change)
    if refused:
        raise ResumeRefused(
            f"checkpoint {where} was made with a different config (fields: {', '.join(refused)}); "
            "resume with the original values, or list the fields in allow_config_change "
            "if the change is intended"
        )


def copy_forward(source: Path, final: Path) -> Path:
    """Copy a checkpoint into this session's outputs (atomically), so they are self-contained."""
    if final.resolve() == source.resolve():
        return final
    tmp = layout.temporary_sibling(final, "copy")
    shutil.copytree(source, tmp)
    layout.fsync_tree(tmp)
    return layout.install_dir(tmp, final)


def _steps_redone(output_dir: Path, resumed_step: int) -> int:
    """Steps the parent session trained past the checkpoint we resume from (work to redo)."""
    summary_path = layout.SessionPaths(output_dir).summary
    try:
        summary = json.loads(summary_path.read_text())
        return max(0, int(summary["timesteps_end"]) - resumed_step)
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _adopt(
    candidate: Candidate,
    paths: layout.SessionPaths,
    warn: Callable[[str], Any],
    *,
    expect_manifest: str | None = None,
) -> tuple[layout.CheckpointManifest, str, Path, Path | None] | None:
    """Extract (when zipped) and verify a candidate; (manifest, hash, dir, extracted) or None."""
    extracted: Path | None = None
    directory = candidate.directory
    if directory is None:
        extracted = layout.temporary_sibling(paths.checkpoint(candidate.step), "extract")
        try:
            _extract_checkpoint(candidate, extracted)
        except (zipfile.BadZipFile, OSError, ValueError) as error:
            warn(f"skipping checkpoint {candidate.label}: cannot extract ({error})")
            shutil.rmtree(extracted, ignore_errors=True)
            return None
        directory = extracted
    manifest, manifest_sha, problems = layout.verify_checkpoint(directory)
    if manifest is not None and expect_manifest and manifest_sha != expect_manifest:
        problems = [
            f"manifest sha256 {manifest_sha[:12]} is not the parent's {expect_manifest[:12]}"
        ]
    if manifest is None or problems:
        warn(f"skipping corrupt checkpoint {candidate.label}: {'; '.join(problems)}")
        if extracted:
            shutil.rmtree(extracted, ignore_errors=True)
        return None
    assert manifest_sha is not None
    return manifest, manifest_sha, directory, extracted


def _bring_in(
    candidate: Candidate,
    adopted: tuple[layout.CheckpointManifest, str, Path, Path | None],
    paths: layout.SessionPaths,
) -> ResumePoint:
    manifest, manifest_sha, directory, extracted = adopted
    redone = _steps_redone(candidate.output_dir, manifest.num_timesteps)
    local = paths.checkpoint(candidate.step)
    if extracted is not None:
        layout.fsync_tree(extracted)
        layout.install_dir(extracted, local)
    else:
        copy_forward(directory, local)
    return ResumePoint(local, manifest, manifest_sha, candidate.label, candidate.output_dir, redone)


def parent_mounts(input_dir: Path, parent: ParentRef) -> list[Path]:
    """Where Kaggle mounts the parent's output (a kernel) or files (a dataset): today's
    layout first, then the legacy flat one."""
    kind_dir = "datasets" if parent.kind == "dataset" else "notebooks"
    return [input_dir / kind_dir / parent.owner / parent.slug, input_dir / parent.slug]


def parent_output_dirs(input_dir: Path, parent: ParentRef) -> list[Path]:
    """The dirs that may hold the parent's `checkpoints/` or `artifacts.zip`. A dataset holds
    an uploaded `artifacts.zip`, which Kaggle may keep as is or decompress, at the top or
    into `artifacts/` (as the CLI's zipped folders come out): all three are looked at."""
    mounts = parent_mounts(input_dir, parent)
    if parent.kind != "dataset":
        return mounts
    return [d for m in mounts for d in (m, m / DATASET_ARCHIVE_DIR)]


def _list_dir(directory: Path) -> list[str] | None:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        return [f"(unreadable: {error})"]
    if len(names) > LISTING_LIMIT:
        names = names[:LISTING_LIMIT] + [f"... and {len(names) - LISTING_LIMIT} more"]
    return names


def input_listing(input_dir: Path, parent: ParentRef | None) -> dict[str, list[str] | None]:
    """One level of each dir a segment looks at: `<input>`, `<input>/notebooks`, and for a
    parent its owner's dir and the expected mounts (None: the dir does not exist)."""
    dirs = [input_dir, input_dir / "notebooks"]
    if parent is not None:
        mounts = parent_mounts(input_dir, parent)
        dirs += [mounts[0].parent, *mounts]
        dirs += [layout.SessionPaths(d).checkpoints for d in parent_output_dirs(input_dir, parent)]
    return {str(d): _list_dir(d) for d in dict.fromkeys(dirs)}


def _parent_candidates(input_dir: Path, parent: ParentRef) -> list[Candidate]:
    found: list[Candidate] = []
    for mount in parent_output_dirs(input_dir, parent):
        paths = layout.SessionPaths(mount)
        directory = paths.checkpoint(parent.step)
        if directory.is_dir():
            found.append(Candidate(parent.step, directory, origin="input"))
        archive = paths.artifacts_zip
        if archive.is_file():
            found += [c for c in _zip_candidates(archive, "input") if c.step == parent.step]
    return found


def find_parent_checkpoint(
    working_dir: Path,
    input_dir: Path,
    config: RunConfig,
    *,
    warn: Callable[[str], Any] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] = time.sleep,
    poll_s: float = PARENT_POLL_S,
) -> ResumePoint:
    """Exactly the parent's checkpoint (step and manifest hash), from its mounts only,
    copied into `<working>/checkpoints/`; raises ParentMissing after `parent_wait_s`."""
    parent = config.parent
    assert parent is not None
    paths = layout.SessionPaths(working_dir)
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    said: set[str] = set()

    def warn_once(message: str) -> None:
        if message not in said:
            said.add(message)
            warn(message)

    deadline = clock() + config.parent_wait_s
    while True:
        for candidate in _parent_candidates(input_dir, parent):
            adopted = _adopt(candidate, paths, warn_once, expect_manifest=parent.manifest_sha256)
            if adopted is None:
                continue
            check_config(adopted[0], config, candidate.label)
            return _bring_in(candidate, adopted, paths)
        left = deadline - clock()
        if left <= 0:
            break
        sleep(min(poll_s, left))
    seen = input_listing(input_dir, parent)
    where = " or ".join(str(m) for m in parent_mounts(input_dir, parent))
    raise ParentMissing(
        f"parent checkpoint {parent.owner}/{parent.slug} step {parent.step} "
        f"(manifest {parent.manifest_sha256[:12]}) not found or not verifying in {where} "
        f"after {config.parent_wait_s:g} s; {_attach_hint(parent)}",
        layout.PARENT_MISSING_REASON,
        seen,
    )


def _attach_hint(parent: ParentRef) -> str:
    if parent.kind == "dataset":
        return "was the dataset attached (dataset_sources) and READY when the kernel was pushed?"
    return "was the parent attached (kernel_sources) and finished?"


def find_resume_point(
    working_dir: Path,
    input_dir: Path,
    config: RunConfig,
    *,
    warn: Callable[[str], Any] = print,
) -> ResumePoint | None:
    """The checkpoint to continue, copied into `<working>/checkpoints/`; None to start fresh.

    With `config.parent`: exactly that checkpoint (see `find_parent_checkpoint`). Without
    one: the newest verifying checkpoint in the working dir or the inputs, but only a first
    segment (segment_index <= 1) may start from scratch that way."""
    if config.parent is not None:
        return find_parent_checkpoint(working_dir, input_dir, config, warn=warn)
    if config.segment_index > 1:
        raise ParentMissing(
            f"segment {config.segment_index} names no parent checkpoint; only a first segment "
            "may start from scratch (the chain sets run config `parent`)",
            layout.PARENT_REQUIRED_REASON,
            input_listing(input_dir, None),
        )
    paths = layout.SessionPaths(working_dir)
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    for candidate in find_candidates(working_dir, input_dir):
        adopted = _adopt(candidate, paths, warn)
        if adopted is None:
            continue
        check_config(adopted[0], config, candidate.label)
        return _bring_in(candidate, adopted, paths)
    return None
