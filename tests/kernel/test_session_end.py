"""How sessions end: budget stops before the platform's limit, SIGTERM stops gracefully,
and either way the outputs are complete and verifiable."""

from __future__ import annotations

import signal
import subprocess
import time

import pandas as pd
import pytest

from kernel_template import layout
from tests.support.kernel import (
    DQN_CONFIG,
    config_with,
    newest_checkpoint,
    run_kernel,
    start_kernel,
    summary_of,
)


def assert_outputs_complete(working):
    for name in (
        layout.SESSION_SUMMARY_JSON,
        layout.ARTIFACTS_ZIP,
        layout.ARTIFACTS_SHA256,
        layout.METRICS_CSV,
    ):
        assert (working / name).is_file(), f"{name} missing"
    # The real sha256sum, as a user would check the download.
    subprocess.run(
        ["sha256sum", "-c", layout.ARTIFACTS_SHA256], cwd=working, check=True, capture_output=True
    )
    summary = summary_of(working)
    assert summary.left_checkpoint is not None
    assert summary.left_checkpoint.step == summary.timesteps_end  # nothing trained is lost
    wall = summary.wall
    parts = (
        sum((wall.setup, wall.training, wall.checkpointing, wall.evaluation, wall.exporting))
        + wall.finalization
    )
    # The split is disjoint (nothing counted twice) and accounts for most of the session.
    assert 0.5 * wall.total <= parts <= wall.total + 0.01, wall
    return summary


@pytest.mark.slow
def test_budget_stop_finishes_before_the_session_limit_when_steps_slow_down(tmp_path):
    limit = 40.0
    config = config_with(
        DQN_CONFIG,
        env="tests.support.slow_env:SlowCartPole",
        env_kwargs={"slow_after": 400, "sleep_s": 0.004},
        total_timesteps=1_000_000,
        session_limit_s=limit,
        min_margin_s=3,
        checkpoint_every=500,
        export_every=1000,
    )
    working = tmp_path / "out"
    started = time.time()  # the process starts after this: a conservative clock
    result = run_kernel(config, working, tmp_path / "none", timeout=limit * 3)
    finished = time.time()
    assert result.returncode == 0, result.stdout[-3000:]
    summary = assert_outputs_complete(working)
    assert summary.status == "budget_stop"
    assert finished - started < limit, f"session ran {finished - started:.1f}s, limit {limit}s"
    assert summary.timesteps_end > 400  # it kept training after the slow-down, just fewer steps
    events = [layout.parse_event(line) for line in result.stdout.splitlines()]
    assert any(e and e["event"] == "budget_stop" for e in events)


def test_sigterm_gives_a_graceful_signal_stop_with_outputs(tmp_path):
    config = config_with(DQN_CONFIG, total_timesteps=1_000_000, checkpoint_every=500)
    working = tmp_path / "out"
    process = start_kernel(config, working, tmp_path / "none")
    lines = []
    for line in process.stdout:
        lines.append(line)
        event = layout.parse_event(line)
        if event and event["event"] == "checkpoint":
            break
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, "".join(lines) + output
    summary = assert_outputs_complete(working)
    assert summary.status == "signal_stop"
    assert "SIGTERM" in summary.reason
    assert newest_checkpoint(working).name == layout.checkpoint_dir_name(summary.timesteps_end)


@pytest.mark.slow
def test_metrics_steps_are_monotonic_across_segments(tmp_path):
    parent = tmp_path / "none"
    for index, length in enumerate([700, None]):
        working = tmp_path / f"segment-{index}"
        config = config_with(
            DQN_CONFIG,
            total_timesteps=1600,
            export_every=400,
            segment_index=index,
            segment_timesteps=length,
        )
        result = run_kernel(config, working, parent)
        assert result.returncode == 0, result.stdout[-3000:]
        assert_outputs_complete(working)
        parent = working
    # The last segment's CSV carries the whole run: the parent's rows, then its own.
    frame = pd.read_csv(parent / layout.METRICS_CSV)
    assert list(frame.columns) == list(layout.METRICS_COLUMNS)
    steps = frame["step"].tolist()
    assert steps == sorted(set(steps))
    assert steps[0] == 0 and steps[-1] == 1600
    assert set(frame["segment"]) == {0, 1}
    assert frame.loc[frame["step"] <= 700, "segment"].eq(0).all()
