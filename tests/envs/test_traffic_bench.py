"""Benchmark: traffic env decisions per second on one core, random actions."""

from __future__ import annotations

import time

import numpy as np
import pytest

from kernel_template.envs import make_env

TARGET_DECISIONS_PER_S = 3000


@pytest.mark.bench
def test_bench_decisions_per_second():
    env = make_env("traffic-signal", {}, seed=0)  # as training builds it, wrappers included
    env.reset()
    actions = np.random.default_rng(0).integers(0, env.action_space.n, size=24_000).tolist()
    # CPU time of this process: one core's work, robust to other jobs sharing the box.
    start = time.process_time()
    for action in actions:
        *_, truncated, _ = env.step(action)
        if truncated:
            env.reset()
    rate = len(actions) / (time.process_time() - start)
    print(
        f"BENCH traffic env decisions/s: {rate:.0f} "
        f"(target: {TARGET_DECISIONS_PER_S}, ratio: {rate / TARGET_DECISIONS_PER_S:.2f})"
    )
    assert rate > 0
