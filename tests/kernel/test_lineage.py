"""A segment proves its lineage: it resumes from exactly its parent's checkpoint, found at the
parent's mounts only, or stops at once without training and says what its inputs held."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from kernel_template import layout
from kernel_template.config import RunConfig
from kernel_template.resume import ParentMissing, find_parent_checkpoint, find_resume_point
from tests.support.kernel import DQN_CONFIG, config_with, run_kernel, summary_of

BASE = config_with(DQN_CONFIG, total_timesteps=900, checkpoint_every=300, keep_checkpoints=3)


@pytest.fixture(scope="module")
def parent_run(tmp_path_factory):
    """A finished first segment: checkpoints at 300, 600 and 900 steps, and artifacts.zip."""
    root = tmp_path_factory.mktemp("parent")
    working = root / "out"
    result = run_kernel(config_with(BASE, segment_index=1), working, root / "none")
    assert result.returncode == 0, result.stdout[-3000:]
    return working


def ref_of(working, step, owner="alice", slug="run-s1"):
    manifest = working / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(step)
    return {
        "owner": owner,
        "slug": slug,
        "step": step,
        "manifest_sha256": layout.manifest_hash(manifest / layout.MANIFEST_NAME),
    }


def mount(tmp_path, parent_run, *, legacy=False, only_zip=False, slug="run-s1"):
    input_dir = tmp_path / "input"
    target = input_dir / slug if legacy else input_dir / "notebooks" / "alice" / slug
    if only_zip:
        target.mkdir(parents=True)
        shutil.copy(parent_run / layout.ARTIFACTS_ZIP, target / layout.ARTIFACTS_ZIP)
    else:
        shutil.copytree(parent_run, target)
    return input_dir


def child_config(parent, **changes):
    return RunConfig.model_validate(
        config_with(BASE, **{"segment_index": 2, "parent": parent, "parent_wait_s": 0.2, **changes})
    )


def resume(tmp_path, input_dir, config):
    warnings: list[str] = []
    working = tmp_path / "working"
    working.mkdir(exist_ok=True)
    return find_resume_point(working, input_dir, config, warn=warnings.append), warnings


@pytest.mark.parametrize("legacy", [False, True])
def test_exactly_the_named_checkpoint_is_resumed_not_the_newest(tmp_path, parent_run, legacy):
    input_dir = mount(tmp_path, parent_run, legacy=legacy)
    parent = ref_of(parent_run, 600)
    point, warnings = resume(tmp_path, input_dir, child_config(parent))
    assert warnings == []
    assert point.manifest.num_timesteps == 600  # 900 is newer, but not the parent's
    assert point.manifest_sha256 == parent["manifest_sha256"]
    assert point.directory.parent == tmp_path / "working" / layout.CHECKPOINTS_DIR


def test_the_parent_checkpoint_is_found_inside_its_artifacts_zip(tmp_path, parent_run):
    input_dir = mount(tmp_path, parent_run, only_zip=True)
    parent = ref_of(parent_run, 900)  # the zip keeps the newest checkpoint only
    point, _ = resume(tmp_path, input_dir, child_config(parent))
    assert point.manifest_sha256 == parent["manifest_sha256"] and "artifacts.zip" in point.source


def test_a_wrong_manifest_hash_is_refused_and_listed(tmp_path, parent_run):
    input_dir = mount(tmp_path, parent_run)
    parent = {**ref_of(parent_run, 600), "manifest_sha256": "0" * 64}
    with pytest.raises(ParentMissing) as info:
        resume(tmp_path, input_dir, child_config(parent))
    assert info.value.reason == layout.PARENT_MISSING_REASON
    seen = info.value.input_seen
    assert seen[str(input_dir / "notebooks" / "alice")] == ["run-s1/"]
    assert seen[str(input_dir / "run-s1")] is None  # the legacy mount does not exist


def test_another_kernels_checkpoint_elsewhere_in_the_input_is_not_taken(tmp_path, parent_run):
    input_dir = mount(tmp_path, parent_run, slug="someone-else")
    with pytest.raises(ParentMissing):
        resume(tmp_path, input_dir, child_config(ref_of(parent_run, 600)))


def test_a_late_mount_is_waited_for(tmp_path, parent_run):
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    config = child_config(ref_of(parent_run, 600), parent_wait_s=30)
    looks: list[float] = []

    def sleep(seconds):  # the parent appears on the third look
        looks.append(seconds)
        if len(looks) == 2:
            mount(tmp_path, parent_run)

    (tmp_path / "working").mkdir()
    point = find_parent_checkpoint(
        tmp_path / "working", input_dir, config, warn=lambda m: None, sleep=sleep
    )
    assert point.manifest.num_timesteps == 600 and len(looks) == 2


def test_a_later_segment_without_a_parent_is_refused(tmp_path, parent_run):
    input_dir = mount(tmp_path, parent_run)
    config = RunConfig.model_validate(config_with(BASE, segment_index=2))
    with pytest.raises(ParentMissing) as info:
        resume(tmp_path, input_dir, config)
    assert info.value.reason == layout.PARENT_REQUIRED_REASON


def test_kernel_with_a_missing_parent_stops_at_once_without_training(tmp_path, parent_run):
    input_dir = tmp_path / "input"
    (input_dir / "notebooks" / "alice" / "other-run").mkdir(parents=True)
    config = config_with(BASE, segment_index=2, parent=ref_of(parent_run, 600), parent_wait_s=1.0)
    began = time.monotonic()
    result = run_kernel(config, tmp_path / "out", input_dir)
    elapsed = time.monotonic() - began
    assert result.returncode == 1, result.stdout[-3000:]
    summary = summary_of(tmp_path / "out")
    assert summary.status == "error" and summary.reason == layout.PARENT_MISSING_REASON
    assert summary.timesteps_end == 0 and summary.checkpoints_written == 0
    assert summary.input_seen[str(input_dir / "notebooks" / "alice")] == ["other-run/"]
    assert not any((tmp_path / "out" / layout.CHECKPOINTS_DIR).glob("0*"))
    assert (tmp_path / "out" / layout.ARTIFACTS_SHA256).is_file()
    assert "parent checkpoint missing" in result.stdout
    assert elapsed < 30, f"took {elapsed:.1f} s"  # imports + 1 s of waiting, no training


@pytest.mark.slow
def test_kernel_resumes_from_exactly_its_parent(tmp_path, parent_run):
    input_dir = mount(tmp_path, parent_run)
    parent = ref_of(parent_run, 600)
    config = config_with(BASE, segment_index=2, parent=parent)
    result = run_kernel(config, tmp_path / "out", input_dir)
    assert result.returncode == 0, result.stdout[-3000:]
    summary = summary_of(tmp_path / "out")
    assert summary.status == "complete" and summary.timesteps_start == 600
    assert summary.resumed_from.manifest_sha256 == parent["manifest_sha256"]
    assert summary.resumed_from.step == 600
    assert "notebooks/alice/run-s1" in summary.resumed_from.path
    recorded = json.loads((tmp_path / "out" / layout.RUN_CONFIG_JSON).read_text())["parent"]
    assert recorded == {**parent, "kind": "kernel"}
