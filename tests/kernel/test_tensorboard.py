"""TensorBoard logs of a chained run read as one run with steps increasing across segments."""

from __future__ import annotations

import os
import shutil

import pytest

from kernel_template import layout
from tests.support.kernel import DQN_CONFIG, config_with, newest_checkpoint, run_kernel

CONFIG = config_with(
    DQN_CONFIG,
    total_timesteps=1200,
    export_every=1200,
    logging={"tensorboard": True},
)


def scalar_steps(tensorboard_dir, tag: str) -> tuple[list[str], list[int]]:
    """(run dirs holding events, the steps of `tag`) as TensorBoard itself loads them."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(tensorboard_dir))
    multiplexer.Reload()
    runs = sorted(multiplexer.Runs())
    steps = [event.step for run in runs for event in multiplexer.Scalars(run, tag)]
    return runs, steps


@pytest.mark.slow
def test_two_segments_log_one_tensorboard_run_with_increasing_steps(tmp_path):
    """Segment 1 resumes from an older checkpoint than segment 0 logged up to (as after a
    kill): the steps segment 0 logged past it are redone, and must not show twice."""
    first = tmp_path / "segment-0"
    result = run_kernel(config_with(CONFIG, segment_timesteps=600), first, tmp_path / "none")
    assert result.returncode == 0, result.stdout[-3000:]
    shutil.rmtree(newest_checkpoint(first))
    resume_step = int(newest_checkpoint(first).name)
    assert 0 < resume_step < 600
    os.remove(first / layout.ARTIFACTS_ZIP)  # it holds the deleted checkpoint too

    second = tmp_path / "segment-1"
    result = run_kernel(config_with(CONFIG, segment_index=1), second, first)
    assert result.returncode == 0, result.stdout[-3000:]

    tensorboard_dir = second / layout.TENSORBOARD_DIR
    files = sorted(p.relative_to(tensorboard_dir) for p in tensorboard_dir.rglob("events.*"))
    assert len(files) == 2, f"one events file per segment expected, found {files}"
    for tag in ("rollout/exploration_rate", "train/loss"):
        runs, steps = scalar_steps(tensorboard_dir, tag)
        assert runs == ["DQN"], f"one run expected, found {runs}"
        assert steps == sorted(set(steps)), f"{tag} steps not strictly increasing: {steps}"
        assert steps[0] < resume_step and steps[-1] > 600, f"{tag} misses a segment: {steps}"
