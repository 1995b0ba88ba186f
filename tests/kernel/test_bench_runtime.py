"""Benchmarks: the whole kernel runtime against bare `model.learn` on the same env and config,
and the log volume of a default-config run."""

from __future__ import annotations

import time

import pytest

from kernel_template.config import RunConfig
from kernel_template.runtime import RuntimeEnvironment

# The default run config (traffic-signal DQN, SB3's 1M-transition replay buffer, checkpoint
# every 50 steps / 10 s, export every 500 steps / 30 s, TensorBoard and throttled logs on),
# cut to a length a benchmark can afford.
TOTAL = 12_000
ROUNDS = 3


def _bare_steps_per_s(config: RunConfig) -> float:
    import torch

    from kernel_template.train import build_model, build_vec_env

    torch.set_num_threads(1)
    model = build_model(config, build_vec_env(config), "cpu")
    began = time.perf_counter()
    model.learn(config.total_timesteps)
    return model.num_timesteps / (time.perf_counter() - began)


def _runtime_steps_per_s(config: RunConfig, working) -> tuple[float, dict]:
    """Steps/s of the training loop (checkpoints, exports, progress events and logs included;
    the one-off setup and end-of-session work are not per-step costs)."""
    from kernel_template.train import TrainingSession

    # In-process: the session starts now, not when pytest did.
    runtime = RuntimeEnvironment(
        working_dir=working,
        input_dir=working / "no-input",
        session_limit_s=3600,
        session_start=time.time(),
    )
    with open(working.parent / f"{working.name}.log", "w") as stream:  # as Kaggle: stdout to a file
        session = TrainingSession(config, runtime, stream=stream)
        session.setup()
        start = session.model.num_timesteps
        began = time.perf_counter()
        session.train()
        seconds = time.perf_counter() - began
        summary = session.finish()
    assert summary.status == "complete", summary.reason
    return (summary.timesteps_end - start) / seconds, summary.model_dump()


@pytest.mark.bench
def test_bench_runtime_against_bare_learn(tmp_path):
    config = RunConfig.model_validate({"total_timesteps": TOTAL})
    assert config.hyperparams.get("buffer_size", 1_000_000) == 1_000_000
    bare, ours, summaries = [], [], []
    for round_index in range(ROUNDS):  # interleaved, best of each: the box's load drifts
        bare.append(_bare_steps_per_s(config))
        sps, summary = _runtime_steps_per_s(config, tmp_path / f"run-{round_index}")
        ours.append(sps)
        summaries.append(summary)
    best_bare, best_ours = max(bare), max(ours)
    print(
        f"BENCH runtime steps/s (default config, 1M buffer): {best_ours:.1f} "
        f"(baseline bare learn: {best_bare:.1f}, ratio: {best_ours / best_bare:.3f})"
    )
    summary = summaries[ours.index(best_ours)]
    wall = summary["wall"]
    print(
        f"BENCH runtime checkpoints: {summary['checkpoints_written']}, wall split s: "
        + ", ".join(f"{k}={v:.2f}" for k, v in wall.items())
    )
    lines_per_step = summary["log_lines_per_step"]
    budget = config.logging.max_lines_per_step
    print(
        f"BENCH log_lines_per_step (default config): {lines_per_step:.4f} "
        f"(baseline budget max_lines_per_step: {budget}, ratio: {lines_per_step / budget:.4f})"
    )
