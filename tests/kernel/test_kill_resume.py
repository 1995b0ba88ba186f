"""SIGKILL at random moments, then resume: no corrupt checkpoint is ever chosen, at most one
checkpoint interval is redone, and the final result equals the uninterrupted run's."""

from __future__ import annotations

import concurrent.futures
import json
import random
import signal
import time

import pytest
from kernel_helpers import (
    DQN_CONFIG,
    assert_same,
    config_with,
    newest_checkpoint,
    run_kernel,
    start_kernel,
    summary_of,
    training_result,
)

from kernel_template import layout

CONFIG = config_with(DQN_CONFIG, total_timesteps=1600, checkpoint_every=200, export_every=800)
ROLLOUT = (
    4  # train_freq: checkpoints land on rollout boundaries, at most this far past the interval
)


def newest_sound_step(input_dir) -> int | None:
    """What a correct resume must pick, computed independently of the runtime."""
    best = None
    for manifest_path in input_dir.glob(f"*/{layout.CHECKPOINTS_DIR}/*/{layout.MANIFEST_NAME}"):
        directory = manifest_path.parent
        if not directory.name.isdigit():
            # A temp dir killed between its manifest and its rename: never committed. (pathlib's
            # glob matches dot-directories, so it must be skipped explicitly.)
            continue
        try:
            manifest = layout.CheckpointManifest.model_validate_json(manifest_path.read_text())
        except ValueError:
            continue
        if not manifest.problems(directory):
            best = max(best or 0, manifest.num_timesteps)
    return best


def checkpoint_steps(working) -> list[int]:
    path = working / layout.EVENTS_JSONL
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a kill can leave no torn line, but be lenient
        if record.get("message") == "checkpoint" or record.get("event") == "checkpoint":
            fields = record.get("fields") or record
            if "step" in fields:
                steps.append(int(fields["step"]))
    return steps


def kill_loop(tmp_path, kills: int, seed: int):
    """Each attempt is a fresh session whose input dir mounts every earlier attempt's output."""
    rng = random.Random(seed)
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    attempt = 0
    killed = 0
    while True:
        working = tmp_path / f"attempt-{attempt:03d}"
        expected = newest_sound_step(input_dir)
        process = start_kernel(CONFIG, working, input_dir)
        if killed < kills:
            # Wait for the session to be training (its first line), then kill at a random moment.
            process.stdout.readline()
            time.sleep(rng.uniform(0.0, 1.2))
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=60)
            killed += 1
        else:
            output, _ = process.communicate(timeout=300)
            assert process.returncode == 0, output[-3000:]
        started_at = _resumed_step(working)
        assert started_at == expected, (
            f"attempt {attempt} resumed from {started_at}, newest sound is {expected}"
        )
        steps = [started_at or 0, *checkpoint_steps(working)]
        for earlier, later in zip(steps, steps[1:], strict=False):
            assert later - earlier <= CONFIG["checkpoint_every"] + ROLLOUT, (
                f"checkpoints {earlier} -> {later}"
            )
        (input_dir / working.name).symlink_to(
            working
        )  # Kaggle mounts it read-only for the next one
        if killed >= kills and process.returncode == 0:
            return working
        attempt += 1


def _resumed_step(working) -> int | None:
    """The step this attempt resumed from, from its own log (None when it started fresh)."""
    path = working / layout.EVENTS_JSONL
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("tag") == "resume":
            return int(record["step"])
    return None


def run_and_compare(tmp_path, kills: int, seed: int):
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        single = pool.submit(run_kernel, CONFIG, tmp_path / "single", tmp_path / "none")
        final = kill_loop(tmp_path, kills, seed)
        assert single.result().returncode == 0
    assert summary_of(final).status == "complete"
    assert_same(
        training_result(newest_checkpoint(final)),
        training_result(newest_checkpoint(tmp_path / "single")),
    )


def test_random_sigkills_then_resume_end_exactly_like_an_uninterrupted_run(tmp_path):
    run_and_compare(tmp_path, kills=10, seed=1234)


@pytest.mark.reliability
@pytest.mark.parametrize("seed", range(10))
def test_many_random_sigkills(tmp_path, seed):
    run_and_compare(tmp_path, kills=10, seed=seed)  # 10 seeds x 10 kills = 100 kills
