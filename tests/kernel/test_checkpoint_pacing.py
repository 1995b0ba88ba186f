"""Training and checkpoint writes overlap without loosening the kill bound: a kill redoes at
most one checkpoint interval plus one rollout.

* Step-spaced checkpoints (`checkpoint_min_seconds=0`): the interval is `checkpoint_every`
  steps, so training goes one rollout past a write in flight and then waits for it.
* Time-spaced checkpoints (the default): a write starts early by its measured cost, so training
  goes on while it lands, until the interval (`checkpoint_min_seconds` after the last durable
  checkpoint's state was taken) is up; a slower write is waited for there.

The commits are slowed on purpose (a slow disk), in-process, with one slow outlier. The time
bound is checked with a slack far below the outlier, so a loaded machine cannot fail it."""

from __future__ import annotations

import io
import time

import pytest

from kernel_template.checkpoint import CheckpointWriter
from kernel_template.config import RunConfig
from kernel_template.train import TrainingSession
from tests.support.kernel import DQN_CONFIG, config_with, local_runtime

ROLLOUT = DQN_CONFIG["hyperparams"]["train_freq"]
# Seconds each commit sleeps before writing: one outlier far slower than the rest.
COMMIT_DELAYS = [0.1, 0.1, 0.1, 1.5]
TIME_SLACK_S = (
    0.8  # chunk and rollout granularity; without the wait the outlier overshoots by ~1.3 s
)


def _run(tmp_path, monkeypatch, config: dict) -> list[dict]:
    """Train with slowed commits; at each chunk boundary, note how far a kill would set the
    run back (`redo`), the bound, and how far training went past the write in flight."""
    delays = iter(COMMIT_DELAYS)
    commit = CheckpointWriter._commit

    def slow_commit(self, snapshot):
        delay = next(delays, 0.1)
        time.sleep(delay)
        written = commit(self, snapshot)
        written.seconds += delay  # as a slow fsync inside the write would be measured
        return written

    monkeypatch.setattr(CheckpointWriter, "_commit", slow_commit)
    working = tmp_path / "working"
    working.mkdir()
    runtime = local_runtime(working, session_limit_s=3600)
    session = TrainingSession(RunConfig.model_validate(config), runtime, stream=io.StringIO())
    session.setup()
    session.budget.max_chunk_s = 0.05  # many chunk boundaries to look at in a short run
    seen: list[dict] = []
    after_chunk = session._after_chunk

    trained_at: dict[int, float] = {}  # training seconds at each chunk boundary (step)

    def observed_after_chunk() -> None:
        step, trained = session.model.num_timesteps, session.clock.split.training
        trained_at[step] = trained
        seen.append(
            {
                "in_flight": session.writer.in_flight,
                "durable": session.durable_step,
                "redo_steps": session.model.num_timesteps - session.durable_step,
                # Training time a kill would lose (waits for a write lose nothing).
                "redo_s": trained - trained_at.get(session.durable_step, 0.0),
                "past_write": session.model.num_timesteps - session.last_checkpoint_step,
            }
        )
        after_chunk()

    session._after_chunk = observed_after_chunk
    session.train()
    summary = session.finish()
    assert summary.status == "complete", summary.reason
    assert summary.checkpoints_written >= len(COMMIT_DELAYS), seen
    return seen


def _assert_within_bound(seen: list[dict], key: str, bound: float) -> None:
    # From the first checkpoint on disk (before it, a kill of a fresh run starts it over).
    over = [point for point in seen if point["durable"] and point[key] > bound]
    assert not over, f"a kill here would redo more than {bound} ({key}): {over[:3]}"


@pytest.mark.usefixtures("one_torch_thread")
def test_step_spaced_checkpoints_train_one_rollout_past_a_write_then_wait(tmp_path, monkeypatch):
    config = config_with(
        DQN_CONFIG, total_timesteps=1200, checkpoint_every=200, checkpoint_min_seconds=0
    )
    seen = _run(tmp_path, monkeypatch, config)
    _assert_within_bound(seen, "redo_steps", config["checkpoint_every"] + ROLLOUT)
    during_writes = [point["past_write"] for point in seen if point["in_flight"]]
    assert during_writes, "no chunk ended with a write in flight: the commits were not slow"
    assert max(during_writes) <= ROLLOUT


@pytest.mark.usefixtures("one_torch_thread")
def test_time_spaced_checkpoints_train_on_while_a_write_lands(tmp_path, monkeypatch):
    config = config_with(
        DQN_CONFIG,
        total_timesteps=8000,
        checkpoint_every=50,
        checkpoint_min_seconds=0.4,
        export_every=8000,
    )
    seen = _run(tmp_path, monkeypatch, config)
    _assert_within_bound(seen, "redo_s", config["checkpoint_min_seconds"] + TIME_SLACK_S)
    during_writes = [point["past_write"] for point in seen if point["in_flight"]]
    # Training did not stop one rollout after each write started: it went on while it landed.
    assert max(during_writes) > 4 * ROLLOUT, during_writes


def test_the_checkpoint_threads_run_at_a_lower_priority_than_training(tmp_path, tiny_model):
    """The writer and fsync threads yield the CPU to the training thread where they share
    a core (Linux nice is per thread); the write itself is unchanged."""
    import os

    from kernel_template.checkpoint import BACKGROUND_NICE

    writer = CheckpointWriter(tmp_path / "out", config_hash="x", algo="DQN", keep=2)
    writer.write(tiny_model, episode_count=0, state={})
    threads = [*writer._writer._threads, *writer._syncer._threads]
    training = os.getpriority(os.PRIO_PROCESS, 0)
    nices = {os.getpriority(os.PRIO_PROCESS, thread.native_id) for thread in threads}
    writer.close()
    assert nices == {min(training + BACKGROUND_NICE, 19)}
    assert os.getpriority(os.PRIO_PROCESS, 0) == training  # the training thread is left as it was
