"""Benchmarks: incremental checkpoint cost against buffer size and against SB3's own save."""

from __future__ import annotations

import time

import pytest
from kernel_helpers import DQN_CONFIG, config_with

from kernel_template.checkpoint import CheckpointWriter
from kernel_template.config import RunConfig

STEPS = 6000
EVERY = 1000


def _train_with_checkpoints(buffer_size: int, save) -> float:
    """Median seconds spent in `save` per checkpoint over a short DQN run (training goes on
    between saves, as in a session)."""
    import torch

    from kernel_template.train import build_model, build_vec_env

    torch.set_num_threads(1)
    config = RunConfig.model_validate(
        config_with(
            DQN_CONFIG, hyperparams={**DQN_CONFIG["hyperparams"], "buffer_size": buffer_size}
        )
    )
    model = build_model(config, build_vec_env(config), "cpu")
    spent = []
    for _ in range(STEPS // EVERY):
        model.learn(EVERY, reset_num_timesteps=False)
        began = time.perf_counter()
        save(model)
        spent.append(time.perf_counter() - began)
    return sorted(spent)[len(spent) // 2]


def _ours(tmp_path, size: int, *, background: bool) -> float:
    writer = CheckpointWriter(
        tmp_path / f"ours-{size}-{background}", config_hash="x", algo="DQN", keep=2
    )
    if background:  # what the session pays: the snapshot; the disk work overlaps training

        def save(model):
            writer.submit(model, episode_count=0, state={})

    else:

        def save(model):
            writer.write(model, episode_count=0, state={})

    try:
        return _train_with_checkpoints(size, save)
    finally:
        writer.close()


@pytest.mark.bench
def test_bench_checkpoint_cost_by_buffer_size(tmp_path):
    sb3_dir = tmp_path / "sb3"
    sb3_dir.mkdir()

    def sb3_save(model):  # what CheckpointCallback(save_replay_buffer=True) does per save
        model.save(sb3_dir / f"model_{model.num_timesteps}.zip")
        model.save_replay_buffer(sb3_dir / f"buffer_{model.num_timesteps}.pkl")

    sb3 = _train_with_checkpoints(1_000_000, sb3_save)
    blocked = {}
    for size in (10_000, 100_000, 1_000_000):
        blocked[size] = _ours(tmp_path, size, background=True)
        print(f"BENCH checkpoint_blocked_s buffer={size}: {blocked[size]:.4f}")
    whole = _ours(tmp_path, 1_000_000, background=False)
    print(
        f"BENCH checkpoint 1M vs 10k (training blocked): {blocked[1_000_000]:.4f} "
        f"(baseline: {blocked[10_000]:.4f}, ratio: {blocked[1_000_000] / blocked[10_000]:.2f})"
    )
    print(
        f"BENCH checkpoint at 1M, training blocked: {blocked[1_000_000]:.4f} "
        f"(baseline sb3 save+save_replay_buffer: {sb3:.4f}, ratio: {sb3 / blocked[1_000_000]:.1f}x)"
    )
    print(
        f"BENCH checkpoint at 1M, written and fsynced: {whole:.4f} "
        f"(baseline sb3 save+save_replay_buffer: {sb3:.4f}, ratio: {sb3 / whole:.1f}x)"
    )
