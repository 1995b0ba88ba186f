"""Which checkpoint a session resumes from: newest sound one, never a corrupt one, and
never one made under a config this run may not continue."""

from __future__ import annotations

import shutil
import zipfile

import pytest

from kernel_template import layout
from kernel_template.config import RunConfig
from kernel_template.resume import ResumeRefused, find_resume_point
from tests.support.kernel import DQN_CONFIG, config_with, run_kernel

BASE = config_with(DQN_CONFIG, total_timesteps=900, checkpoint_every=300, keep_checkpoints=3)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real session's outputs: checkpoints at 300, 600 and 900 steps, and artifacts.zip."""
    root = tmp_path_factory.mktemp("run")
    working = root / "out"
    result = run_kernel(BASE, working, root / "none")
    assert result.returncode == 0, result.stdout[-3000:]
    return working


def kaggle_input(tmp_path, finished_run, *, layout_kind="notebooks", only_zip=False):
    """The run's outputs mounted as Kaggle mounts a kernel source."""
    input_dir = tmp_path / "input"
    mount = (
        input_dir / "notebooks" / "alice" / "seg-0"
        if layout_kind == "notebooks"
        else input_dir / "seg-0"
    )
    if only_zip:
        mount.mkdir(parents=True)
        shutil.copy(finished_run / layout.ARTIFACTS_ZIP, mount / layout.ARTIFACTS_ZIP)
    else:
        shutil.copytree(finished_run, mount)
    return input_dir, mount


def resume(tmp_path, input_dir, config=BASE):
    warnings: list[str] = []
    working = tmp_path / "working"
    working.mkdir(exist_ok=True)
    point = find_resume_point(
        working, input_dir, RunConfig.model_validate(config), warn=warnings.append
    )
    return point, warnings


@pytest.mark.parametrize("layout_kind", ["notebooks", "legacy"])
def test_newest_sound_checkpoint_is_chosen_and_copied_forward(tmp_path, finished_run, layout_kind):
    input_dir, _ = kaggle_input(tmp_path, finished_run, layout_kind=layout_kind)
    point, warnings = resume(tmp_path, input_dir)
    assert warnings == []
    assert point.manifest.num_timesteps == 900
    assert point.directory.parent == tmp_path / "working" / layout.CHECKPOINTS_DIR
    assert (
        layout.CheckpointManifest.model_validate_json(
            (point.directory / layout.MANIFEST_NAME).read_text()
        ).problems(point.directory)
        == []
    )


def test_truncated_file_is_detected_and_skipped(tmp_path, finished_run):
    input_dir, mount = kaggle_input(tmp_path, finished_run)
    model = mount / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(900) / "model.zip"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    point, warnings = resume(tmp_path, input_dir)
    assert point.manifest.num_timesteps == 600
    assert len(warnings) == 1 and "model.zip" in warnings[0] and "000000000900" in warnings[0]


def test_bit_flip_in_a_buffer_chunk_is_detected_and_skipped(tmp_path, finished_run):
    input_dir, mount = kaggle_input(tmp_path, finished_run)
    newest = mount / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(900)
    chunk = sorted((newest / "buffer").glob("chunk-*.npz"))[-1]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    point, warnings = resume(tmp_path, input_dir)
    assert point.manifest.num_timesteps == 600
    assert len(warnings) == 1 and chunk.name in warnings[0]


def test_a_checkpoint_without_manifest_does_not_exist(tmp_path, finished_run):
    input_dir, mount = kaggle_input(tmp_path, finished_run)
    (
        mount / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(900) / layout.MANIFEST_NAME
    ).unlink()
    point, warnings = resume(tmp_path, input_dir)
    assert point.manifest.num_timesteps == 600
    assert "MANIFEST.json" in warnings[0]


def test_config_mismatch_is_refused_naming_the_fields(tmp_path, finished_run):
    input_dir, _ = kaggle_input(tmp_path, finished_run)
    changed = config_with(BASE, seed=7)
    changed["hyperparams"]["learning_rate"] = 0.01
    with pytest.raises(ResumeRefused) as refused:
        resume(tmp_path, input_dir, changed)
    assert "hyperparams.learning_rate" in str(refused.value) and "seed" in str(refused.value)
    assert "allow_config_change" in str(refused.value)


def test_allow_config_change_lets_the_listed_fields_through(tmp_path, finished_run):
    input_dir, _ = kaggle_input(tmp_path, finished_run)
    changed = config_with(
        BASE,
        total_timesteps=1200,
        allow_config_change=["total_timesteps", "hyperparams.learning_rate"],
    )
    changed["hyperparams"]["learning_rate"] = 0.01
    point, _ = resume(tmp_path, input_dir, changed)
    assert point.manifest.num_timesteps == 900
    with pytest.raises(ResumeRefused, match="seed"):
        resume(tmp_path, input_dir, config_with(changed, seed=3))


def test_checkpoint_is_extracted_from_artifacts_zip_when_that_is_all_a_parent_left(
    tmp_path, finished_run
):
    input_dir, mount = kaggle_input(tmp_path, finished_run, only_zip=True)
    with zipfile.ZipFile(mount / layout.ARTIFACTS_ZIP) as archive:
        assert any(n.startswith("checkpoints/") for n in archive.namelist())
    point, warnings = resume(tmp_path, input_dir)
    assert warnings == []
    assert point.manifest.num_timesteps == 900
    assert (
        point.directory
        == tmp_path / "working" / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(900)
    )
    # Only the needed checkpoint was extracted.
    assert [p.name for p in (tmp_path / "working" / layout.CHECKPOINTS_DIR).iterdir()] == [
        point.directory.name
    ]


@pytest.mark.slow
def test_resumed_session_finishes_from_a_zip_only_parent(tmp_path, finished_run):
    input_dir, _ = kaggle_input(tmp_path, finished_run, only_zip=True)
    result = run_kernel(
        config_with(BASE, total_timesteps=1200, allow_config_change=["total_timesteps"]),
        tmp_path / "next",
        input_dir,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    summary = layout.SessionSummary.model_validate_json(
        (tmp_path / "next" / layout.SESSION_SUMMARY_JSON).read_text()
    )
    assert (summary.status, summary.timesteps_start, summary.timesteps_end) == (
        "complete",
        900,
        1200,
    )


def test_refused_config_exits_2_with_one_line(tmp_path, finished_run):
    input_dir, _ = kaggle_input(tmp_path, finished_run)
    result = run_kernel(config_with(BASE, seed=5), tmp_path / "next", input_dir)
    assert result.returncode == 2
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "seed" in errors[0]
