"""Find the checkpoint to resume from, verify it, and bring it into this session's outputs.

Searched: the working dir (a restarted session) and the input dir, in both Kaggle mount
layouts (`<input>/notebooks/<owner>/<slug>/` and the legacy `<input>/<slug>/`) and with
the input dir being a parent's output itself; inside an `artifacts.zip` when that is all
a parent left. The newest checkpoint that verifies wins; corrupt ones are skipped with a
warning naming the bad file. A checkpoint made under a different config is refused,
naming the differing fields, unless each is listed in `allow_config_change`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kernel_template import layout
from kernel_template.checkpoint import TMP_PREFIX
from kernel_template.config import RunConfig, changes_allowed, diff_result_fields


class ResumeRefused(RuntimeError):
    """The newest sound checkpoint was made under a config this run may not continue."""


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
        on_disk = layout.checkpoint_dirs(directory / layout.CHECKPOINTS_DIR)
        candidates += [Candidate(int(p.name), p, origin=origin) for p in on_disk]
        archive = directory / layout.ARTIFACTS_ZIP
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
            and parts[-2].isdigit()
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


def verify(directory: Path) -> tuple[layout.CheckpointManifest | None, str | None, list[str]]:
    """(manifest, its sha256, problems); problems name each bad file."""
    manifest_path = directory / layout.MANIFEST_NAME
    try:
        raw = manifest_path.read_bytes()
        manifest = layout.CheckpointManifest.model_validate_json(raw)
    except FileNotFoundError:
        return None, None, [f"{layout.MANIFEST_NAME}: missing"]
    except (OSError, ValueError) as error:
        return None, None, [f"{layout.MANIFEST_NAME}: unreadable ({str(error).splitlines()[0]})"]
    return manifest, hashlib.sha256(raw).hexdigest(), manifest.problems(directory)


def check_config(manifest: layout.CheckpointManifest, config: RunConfig, where: str) -> None:
    if manifest.config_hash == config.config_hash():
        return
    stored = getattr(manifest, "result_fields", None)
    if not isinstance(stored, dict):
        raise ResumeRefused(
            f"checkpoint {where} was made with config hash {manifest.config_hash[:12]}, this run has "
            f"{config.config_hash()[:12]}; start a new run or resume with the original config"
        )
    differing = diff_result_fields(stored, config.result_fields())
    refused = changes_allowed(differing, config.allow_config_change)
    if refused:
        raise ResumeRefused(
            f"checkpoint {where} was made with a different config (fields: {', '.join(refused)}); "
            "resume with the original values, or list the fields in allow_config_change "
            "if the change is intended"
        )


def copy_forward(source: Path, checkpoints_root: Path) -> Path:
    """Copy a checkpoint into this session's outputs (atomically), so they are self-contained."""
    final = checkpoints_root / source.name
    if final.resolve() == source.resolve():
        return final
    tmp = checkpoints_root / f"{TMP_PREFIX}copy-{source.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    for path in sorted(tmp.rglob("*"), reverse=True):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    layout.fsync_dir(checkpoints_root)
    return final


def _steps_redone(output_dir: Path, resumed_step: int) -> int:
    """Steps the parent session trained past the checkpoint we resume from (work to redo)."""
    summary_path = output_dir / layout.SESSION_SUMMARY_JSON
    try:
        summary = json.loads(summary_path.read_text())
        return max(0, int(summary["timesteps_end"]) - resumed_step)
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def find_resume_point(
    working_dir: Path,
    input_dir: Path,
    config: RunConfig,
    *,
    warn: Callable[[str], Any] = print,
) -> ResumePoint | None:
    """The newest verifying checkpoint, copied into `<working>/checkpoints/`; None to start fresh."""
    checkpoints_root = working_dir / layout.CHECKPOINTS_DIR
    checkpoints_root.mkdir(parents=True, exist_ok=True)
    for candidate in find_candidates(working_dir, input_dir):
        extracted: Path | None = None
        directory = candidate.directory
        if directory is None:
            extracted = checkpoints_root / f"{TMP_PREFIX}extract-{candidate.step}-{os.getpid()}"
            shutil.rmtree(extracted, ignore_errors=True)
            try:
                _extract_checkpoint(candidate, extracted)
            except (zipfile.BadZipFile, OSError, ValueError) as error:
                warn(f"skipping checkpoint {candidate.label}: cannot extract ({error})")
                shutil.rmtree(extracted, ignore_errors=True)
                continue
            directory = extracted
        manifest, manifest_sha, problems = verify(directory)
        if manifest is None or problems:
            warn(f"skipping corrupt checkpoint {candidate.label}: {'; '.join(problems)}")
            if extracted:
                shutil.rmtree(extracted, ignore_errors=True)
            continue
        check_config(manifest, config, candidate.label)
        redone = _steps_redone(candidate.output_dir, manifest.num_timesteps)
        if extracted is not None:
            local = checkpoints_root / layout.checkpoint_dir_name(candidate.step)
            if local.exists():
                shutil.rmtree(local)
            os.rename(extracted, local)
            layout.fsync_dir(checkpoints_root)
        else:
            local = copy_forward(directory, checkpoints_root)
        return ResumePoint(
            local, manifest, manifest_sha, candidate.label, candidate.output_dir, redone
        )
    return None
