"""Benchmarks: incremental checkpoint cost against buffer size and against SB3's own save."""

from __future__ import annotations

import time

import pytest
from kernel_helpers import DQN_CONFIG, config_with

from kernel_template.checkpoint import CheckpointWriter
from kernel_template.config import RunConfig

STEPS = 5000
EVERY = 1000


def _train_with_checkpoints(tmp_path, buffer_size: int, save) -> float:
    """Seconds spent in `save` per checkpoint over a short DQN run."""
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
    return sum(spent) / len(spent)


@pytest.mark.bench
def test_bench_checkpoint_cost_by_buffer_size(tmp_path):
    costs = {}
    for size in (10_000, 100_000, 1_000_000):
        writer = CheckpointWriter(tmp_path / f"ours-{size}", config_hash="x", algo="DQN", keep=2)
        costs[size] = _train_with_checkpoints(
            tmp_path, size, lambda m, w=writer: w.write(m, episode_count=0, state={})
        )
        print(f"BENCH checkpoint_s buffer={size}: {costs[size]:.4f}")
    print(
        f"BENCH checkpoint 1M vs 10k: {costs[1_000_000]:.4f} (baseline: {costs[10_000]:.4f}, "
        f"ratio: {costs[1_000_000] / costs[10_000]:.2f})"
    )
    sb3_dir = tmp_path / "sb3"
    sb3_dir.mkdir()

    def sb3_save(model):  # what CheckpointCallback(save_replay_buffer=True) does per save
        model.save(sb3_dir / f"model_{model.num_timesteps}.zip")
        model.save_replay_buffer(sb3_dir / f"buffer_{model.num_timesteps}.pkl")

    sb3 = _train_with_checkpoints(tmp_path, 1_000_000, sb3_save)
    print(
        f"BENCH sb3 CheckpointCallback-style save at 1M: {sb3:.4f} (ours: {costs[1_000_000]:.4f}, "
        f"ratio: {sb3 / costs[1_000_000]:.1f}x)"
    )
