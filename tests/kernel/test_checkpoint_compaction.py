"""Replay-buffer chunks are merged logarithmically: few files at any buffer size, bounded
bytes per row, and the buffer still restores bit for bit after merging and wrapping."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from kernel_template import layout
from kernel_template.checkpoint import (
    BUFFER_DIR,
    BUFFER_INDEX,
    CheckpointWriter,
    ReplayBufferChunks,
    buffer_arrays,
    read_replay_buffer,
    restore_replay_buffer,
)
from tests.support.compare import assert_bit_identical as assert_same
from tests.support.kernel import (
    DQN_CONFIG,
    config_with,
    local_runtime,
    newest_checkpoint,
    run_bare,
    run_chain,
    summary_of,
    training_result,
)

MILLION = 1_000_000
# The promise: at most log2(N / 4) + 11 chunk files, whatever the rows per checkpoint.
MAX_BUFFER_FILES = 32


def file_bound(size: int) -> int:
    return int(math.log2(size / 4)) + 11


def buffer_files(checkpoint_dir: Path) -> list[str]:
    return sorted(
        p.name for p in (checkpoint_dir / BUFFER_DIR).iterdir() if p.name != Path(BUFFER_INDEX).name
    )


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


# -- the merge policy, driven through the real planner ------------------------------------


class FakeBuffer:
    """Just what the planner reads of an SB3 buffer: one tiny array, pos and full."""

    def __init__(self, size: int) -> None:
        self.buffer_size = size
        self.n_envs = 1
        self.pos = 0
        self.full = False
        self.rewards = np.zeros((size, 1), dtype=np.float32)

    def add(self, rows_total: int) -> None:
        self.pos = rows_total % self.buffer_size
        self.full = rows_total >= self.buffer_size


def simulate(size: int, step_sizes, total_rows: int) -> dict[str, float]:
    """Plan checkpoints as the writer does (no disk): files per checkpoint, rows rewritten."""
    buffer = FakeBuffer(size)
    chunks = ReplayBufferChunks()
    rows = added = rewritten = 0
    most_files = 0
    dest = Path("/nonexistent")
    for step in step_sizes:
        if rows >= total_rows:
            break
        rows += step
        added += step
        buffer.add(rows)
        plan = chunks.plan(buffer, rows, dest)
        most_files = max(most_files, len(plan.chunks))
        if plan.merged is not None:
            rewritten += plan.merged.end - plan.merged.first
        live_from = max(0, rows - size)
        # Every stored row is live or in the oldest chunk's dead head; ranges are contiguous.
        assert plan.chunks[0].first <= max(live_from, plan.chunks[0].first) < plan.chunks[0].end
        for earlier, later in zip(plan.chunks, plan.chunks[1:], strict=False):
            assert earlier.end == later.first
        assert plan.chunks[-1].end == rows
    return {"most_files": most_files, "rewrites_per_row": rewritten / added, "rows": rows}


def test_merge_policy_at_1m_rows_50_per_checkpoint():
    """A 1M buffer filled 2.5 times over, 50 rows per checkpoint (the default interval)."""
    result = simulate(MILLION, iter(lambda: 50, None), int(2.5 * MILLION))
    assert result["most_files"] <= file_bound(MILLION) <= MAX_BUFFER_FILES, result
    # Each row is rewritten O(log N) times: log_1.5(N / 50) bounds it; far below in practice.
    assert result["rewrites_per_row"] <= math.log(MILLION / 50, 1.5), result


def test_merge_policy_with_uneven_checkpoints():
    """Rows per checkpoint from 1 to 5000 (min-seconds spacing, resumes, rollouts)."""
    rng = np.random.default_rng(7)
    size = 100_000
    steps = (int(x) for x in np.exp(rng.uniform(0, math.log(5000), size=10**6)))
    result = simulate(size, steps, 4 * size)
    assert result["most_files"] <= file_bound(size), result
    assert result["rewrites_per_row"] <= math.log(size, 1.5), result


def test_merge_policy_one_row_per_checkpoint():
    size = 1 << 12
    result = simulate(size, iter(lambda: 1, None), 3 * size)
    assert result["most_files"] <= file_bound(size), result
    assert result["rewrites_per_row"] <= math.log(size, 1.5), result


# -- the writer at 1M rows -----------------------------------------------------------------


def cartpole_dqn(buffer_size: int, optimize_memory: bool = False):
    import torch
    from stable_baselines3 import DQN

    from kernel_template.envs import make_env

    torch.set_num_threads(1)
    extra = {}
    if optimize_memory:
        extra = {
            "optimize_memory_usage": True,
            "replay_buffer_kwargs": {"handle_timeout_termination": False},
        }
    return DQN(
        "MlpPolicy",
        make_env("CartPole-v1", {}, 0),
        buffer_size=buffer_size,
        learning_starts=10**9,
        policy_kwargs={"net_arch": [16]},
        seed=0,
        **extra,
    )


def add_rows(model, count: int, rows_total: int, rng) -> int:
    """Write `count` rows at `pos` as SB3 does (rewards = the global row number, so order
    mistakes show), advance pos/full and num_timesteps consistently; returns the new total."""
    buffer = model.replay_buffer
    size = buffer.buffer_size
    positions = np.arange(rows_total, rows_total + count) % size
    for name, array in buffer_arrays(buffer).items():
        shape = (count, *array.shape[1:])
        if name == "rewards":
            values = np.arange(rows_total, rows_total + count, dtype=np.float32).reshape(shape)
        elif np.issubdtype(array.dtype, np.integer):
            values = rng.integers(0, 2, size=shape)
        else:
            values = rng.standard_normal(shape, dtype=np.float32)
        array[positions] = values.astype(array.dtype)
    rows_total += count
    buffer.pos = rows_total % size
    buffer.full = buffer.full or rows_total >= size
    model.num_timesteps = rows_total * buffer.n_envs
    return rows_total


def assert_restores(model, checkpoint_dir: Path, fresh) -> None:
    """A fresh buffer filled from the checkpoint equals the live one, bit for bit."""
    for array in buffer_arrays(fresh).values():
        array[...] = 0
    rows_total = restore_replay_buffer(fresh, checkpoint_dir)
    live = model.replay_buffer
    assert rows_total == model.num_timesteps
    assert (fresh.pos, fresh.full) == (live.pos, live.full)
    assert_same(buffer_arrays(fresh), buffer_arrays(live), "restored buffer")
    stored = read_replay_buffer(checkpoint_dir)
    order = np.arange(rows_total - live.buffer_size, rows_total) % live.buffer_size
    assert np.array_equal(stored["rewards"], live.rewards[order])


@pytest.mark.parametrize("optimize_memory", [False, True], ids=["plain", "optimize_memory"])
def test_1m_buffer_wrapped_stays_in_few_files_and_restores_exactly(tmp_path, optimize_memory):
    from stable_baselines3.common.buffers import ReplayBuffer

    from kernel_template.layout import read_manifest

    model = cartpole_dqn(MILLION, optimize_memory)
    fresh = ReplayBuffer(
        MILLION,
        model.observation_space,
        model.action_space,
        optimize_memory_usage=optimize_memory,
        handle_timeout_termination=not optimize_memory,
    )
    rng = np.random.default_rng(0)
    rows = add_rows(model, MILLION + 123_457, 0, rng)  # already wrapped
    writer = CheckpointWriter(tmp_path / "out", config_hash="x", algo="DQN", keep=2)
    first = writer.write(model, episode_count=0, state={})
    added = merged = largest = 0
    # Uneven steps, 1.3M rows in all: merges reach the oldest chunk and the buffer wraps again.
    steps = [int(x) for x in rng.integers(50, 60_000, size=40)]
    for index, step in enumerate(steps):
        rows = add_rows(model, step, rows, rng)
        written = writer.write(model, episode_count=0, state={})
        added += step
        merged += written.merged_rows
        largest = max(largest, written.merged_rows)
        directory = Path(written.ref.path)
        files = buffer_files(directory)
        assert len(files) == written.buffer_files <= file_bound(MILLION), files
        if index % 8 == 7 or index == len(steps) - 1:
            assert not read_manifest(directory).problems(directory)
            assert_restores(model, directory, fresh)
    writer.close()
    assert sum(steps) > MILLION
    assert largest > MILLION // 8  # merges of up to a quarter buffer happened
    # Bytes stay bounded: rows rewritten by merges are O(log N) per row added.
    assert merged <= math.log(MILLION, 1.5) * added, (merged, added)
    assert first.buffer_files == 1


# -- resume after compaction and wrap ------------------------------------------------------


# Checkpoints every 50 steps into a 1000-row buffer (merged chunks of up to 250 rows): by
# the resume points the chunks have been merged many times and the buffer has wrapped twice.
COMPACTING = config_with(
    DQN_CONFIG,
    checkpoint_every=50,
    total_timesteps=3000,
    hyperparams={**DQN_CONFIG["hyperparams"], "buffer_size": 1000},
)
SEGMENTS = [2137, 411]


@pytest.mark.slow
def test_resume_after_compaction_and_wrap_equals_bare_learn(tmp_path):
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        bare_future = pool.submit(run_bare, COMPACTING, tmp_path)

        def inspect_parent(parent: Path) -> None:
            # What this segment resumes from: merged chunks, and a wrapped buffer.
            resumed = Path(summary_of(parent).left_checkpoint.path)
            index_data = json.loads((resumed / BUFFER_INDEX).read_text())
            assert index_data["rows_total"] > 2 * index_data["buffer_size"]
            spans = [c["end"] - c["first"] for c in index_data["chunks"]]
            assert max(spans) > 2 * COMPACTING["checkpoint_every"], spans

        parent, _ = run_chain(COMPACTING, SEGMENTS, tmp_path, inspect_parent)
        reference = bare_future.result()
    summary = summary_of(parent)
    assert summary.status == "complete" and summary.timesteps_end == 3000
    chained = training_result(newest_checkpoint(parent))
    assert_same(chained["tensors"]["policy.pth"], reference["policy"], "policy vs bare")
    assert_same(
        chained["tensors"]["policy.optimizer.pth"], reference["optimizer"], "optimizer vs bare"
    )
    assert_same(chained["buffer"], reference["buffer"], "buffer vs bare")
    assert summary.episodes == reference["episodes"]


# -- the working dir of a default-config run ----------------------------------------------


WORKING_FILE_LIMIT = 200
STEPS_AFTER_FILL = 4000  # 80 checkpoints at the default 50 steps


@pytest.mark.slow  # the fast tier stays under 4 minutes; make test runs it
def test_default_config_run_with_1m_buffer_keeps_working_dir_under_200_files(tmp_path):
    """The default config (traffic-signal DQN, 1M buffer, a checkpoint every 50 steps; no
    10 s floor between checkpoints, to have many), its buffer filled synthetically past
    wrapping, then trained: the working dir is counted at every checkpoint's peak (just
    before pruning: the new checkpoint and the kept ones all on disk) and sampled between."""
    from kernel_template.config import RunConfig
    from kernel_template.train import TrainingSession

    fill_rows = MILLION + 777
    config = RunConfig.model_validate(
        {
            "total_timesteps": fill_rows + STEPS_AFTER_FILL,
            "checkpoint_min_seconds": 0,
            "evaluation": {"best_model_episodes": 1, "final_episodes": 1},
        }
    )
    assert config.checkpoint_every == 50 and config.keep_checkpoints == 2
    working = tmp_path / "working"
    runtime = local_runtime(working, session_limit_s=3600)
    counts: list[int] = []
    commits: list = []
    original_prune = CheckpointWriter._prune
    original_commit = CheckpointWriter._commit

    def counting_prune(self, keep_dir):
        counts.append(count_files(working))
        return original_prune(self, keep_dir)

    def recording_commit(self, snapshot):
        written = original_commit(self, snapshot)
        commits.append(written)
        return written

    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            with contextlib.suppress(OSError):
                counts.append(count_files(working))

    sampler = threading.Thread(target=sample, daemon=True)
    with open(tmp_path / "session.log", "w") as stream:
        session = TrainingSession(config, runtime, stream=stream)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(CheckpointWriter, "_prune", counting_prune)
            patch.setattr(CheckpointWriter, "_commit", recording_commit)
            session.setup()
            model = session.model
            buffer = model.replay_buffer
            assert buffer.buffer_size == MILLION
            for array in buffer_arrays(buffer).values():  # cheap, not meaningful, rows
                array[...] = 0.25 if array.dtype.kind == "f" else 1
            buffer.pos, buffer.full = fill_rows % MILLION, True
            model.num_timesteps = fill_rows
            session.start_step = session.last_checkpoint_step = fill_rows
            session.last_export_step = session.last_progress_step = fill_rows
            sampler.start()
            try:
                session.train()
                summary = session.finish()
            finally:
                stop.set()
                sampler.join()
    assert summary.status == "complete", summary.reason
    counts.append(count_files(working))
    print(f"working dir: at most {max(counts)} files; {len(commits)} checkpoints")
    assert max(counts) < WORKING_FILE_LIMIT, (max(counts), sorted(counts)[-5:])
    assert len(commits) >= STEPS_AFTER_FILL // 60
    assert sum(1 for c in commits if c.merged_rows) >= 10  # it compacted many times
    assert max(c.buffer_files for c in commits) <= file_bound(MILLION)
    newest = layout.SessionPaths(working).checkpoint_dirs()[-1]
    assert json.loads((newest / BUFFER_INDEX).read_text())["rows_total"] == summary.timesteps_end
