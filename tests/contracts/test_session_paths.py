"""SessionPaths: the one rule for a committed checkpoint dir, applied by every reader.

A session's `checkpoints/` may hold `.tmp-*` dirs with a MANIFEST.json in them: a commit killed
between its manifest and its rename (complete, even newer than any committed one), or an old
checkpoint killed half-way through pruning (files missing). Neither is a checkpoint. Each
reader below (kernel resume, finalize, artifact verification, the chain's step, parent and
start-point lookups) must see the committed checkpoint only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from kernel_template import layout
from kernel_template.config import RunConfig
from kernel_template.finalize import artifact_files
from kernel_template.resume import find_resume_point
from orchestrator.artifacts import PullMarker, verify_checkpoints
from orchestrator.chain.parent import local_checkpoint
from orchestrator.chain.start_point import verified_local_checkpoint
from orchestrator.errors import UserError

CONFIG = RunConfig()
COMMITTED_STEP = 100
TORN_STEP = 200  # killed after its manifest, before the rename that commits it
PRUNED_STEP = 50  # killed half-way through deleting it


def write_checkpoint(directory: Path, step: int) -> str:
    """A checkpoint dir in the kernel's format; returns its manifest hash."""
    directory.mkdir(parents=True)
    data = f"weights at step {step}".encode()
    (directory / "model.zip").write_bytes(data)
    manifest = layout.CheckpointManifest(
        config_hash=CONFIG.config_hash(),
        num_timesteps=step,
        episode_count=step // 10,
        created_at=layout.utc_now_iso(),
        algo=CONFIG.algo,
        files={
            "model.zip": layout.FileEntry(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        },
    )
    raw = manifest.model_dump_json(indent=1).encode()
    (directory / layout.MANIFEST_NAME).write_bytes(raw)
    return hashlib.sha256(raw).hexdigest()


@dataclass
class Outputs:
    root: Path
    committed: str  # manifest hashes
    torn: str
    pruned: str


@pytest.fixture
def outputs(tmp_path) -> Outputs:
    """A session's output dir, literal names only (as a killed kernel leaves it)."""
    root = tmp_path / "out"
    checkpoints = root / layout.CHECKPOINTS_DIR
    committed = write_checkpoint(checkpoints / f"{COMMITTED_STEP:012d}", COMMITTED_STEP)
    torn = write_checkpoint(checkpoints / f".tmp-{TORN_STEP:012d}-4242-0a1b2c3d", TORN_STEP)
    pruned_dir = checkpoints / f".tmp-pruned-{PRUNED_STEP:012d}-4242-0a1b2c3d"
    pruned = write_checkpoint(pruned_dir, PRUNED_STEP)
    (pruned_dir / "model.zip").unlink()
    return Outputs(root, committed, torn, pruned)


def test_kernel_resume_takes_the_committed_checkpoint(outputs, tmp_path):
    warnings: list[str] = []
    point = find_resume_point(outputs.root, tmp_path / "no-input", CONFIG, warn=warnings.append)
    assert point is not None
    assert (point.manifest.num_timesteps, point.manifest_sha256) == (
        COMMITTED_STEP,
        outputs.committed,
    )
    assert warnings == []  # the pruned remains are not even looked at


def test_finalize_archives_the_committed_checkpoint_only(outputs):
    names = [p.as_posix() for p in artifact_files(outputs.root)]
    prefix = f"{layout.CHECKPOINTS_DIR}/{COMMITTED_STEP:012d}/"
    assert names == [prefix + layout.MANIFEST_NAME, prefix + "model.zip"]


def test_artifact_verification_takes_the_committed_checkpoint(outputs):
    ref = layout.CheckpointRef(step=COMMITTED_STEP, manifest_sha256=outputs.committed)
    assert verify_checkpoints(outputs.root) == (ref, [])


def test_an_older_pull_marker_finds_the_step_of_committed_checkpoints_only(outputs):
    def marker(digest: str) -> PullMarker:
        return PullMarker(
            owner="alice", slug="s", artifacts_sha256="a", checkpoint_hash=digest, files=[],
            pulled_at="2030-01-01T00:00:00Z",
        )  # fmt: skip

    assert marker(outputs.committed).checkpoint_in(outputs.root).step == COMMITTED_STEP
    assert marker(outputs.torn).checkpoint_in(outputs.root) is None


def test_chain_parent_offers_committed_local_checkpoints_only(outputs):
    committed = layout.CheckpointRef(step=COMMITTED_STEP, manifest_sha256=outputs.committed)
    found = local_checkpoint(outputs.root, committed)
    assert found is not None and found.name == f"{COMMITTED_STEP:012d}"
    torn = layout.CheckpointRef(step=TORN_STEP, manifest_sha256=outputs.torn)
    assert local_checkpoint(outputs.root, torn) is None


def test_chain_start_point_takes_the_committed_checkpoint(outputs):
    checkpoint = verified_local_checkpoint(outputs.root)
    assert (checkpoint.step, checkpoint.manifest_sha256) == (COMMITTED_STEP, outputs.committed)
    torn_dir = next((outputs.root / layout.CHECKPOINTS_DIR).glob(".tmp-0*"))
    with pytest.raises(UserError, match="temp dir"):
        verified_local_checkpoint(torn_dir)


# -- the paths and the durable writes themselves ------------------------------------------------


def test_session_paths_name_the_layout(tmp_path):
    paths = layout.SessionPaths(tmp_path)
    assert paths.checkpoint(7) == tmp_path / "checkpoints" / "000000000007"
    assert paths.summary == tmp_path / layout.SESSION_SUMMARY_JSON
    assert paths.best_model_info == tmp_path / "models" / "best_model.json"
    assert paths.newest_checkpoint() is None and paths.checkpoint_dirs() == []


def test_temp_names_are_never_outputs(tmp_path):
    target = layout.SessionPaths(tmp_path).checkpoint(300)
    for purpose in ("", "old", "pruned"):
        temp = layout.temporary_sibling(target, purpose)
        assert temp.parent == target.parent and layout.is_temporary(temp.name)
        assert not layout.is_checkpoint_name(temp.name)
    assert layout.temporary_sibling(target) != layout.temporary_sibling(target)


def test_atomic_path_leaves_the_old_file_and_no_temp_on_error(tmp_path):
    target = tmp_path / "summary.json"
    layout.atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), layout.atomic_path(target) as temp:
        temp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_install_dir_replaces_a_dir_whole(tmp_path):
    final = tmp_path / "runs" / "seg-1"
    final.mkdir(parents=True)
    (final / "stale.txt").write_text("old pull")
    staged = layout.temporary_sibling(final, "staging")
    staged.mkdir()
    (staged / "fresh.txt").write_text("new pull")
    layout.install_dir(staged, final)
    assert [p.name for p in final.iterdir()] == ["fresh.txt"]
    assert [p.name for p in final.parent.iterdir()] == ["seg-1"]
