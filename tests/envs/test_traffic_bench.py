"""Benchmark: traffic env decisions per second on one core, through `make_env` (the wrappers
included: what SB3 steps), random actions.

Wall clock, best of many short rounds after a warm-up: on a shared machine a round that got
the core to itself shows what one core does; the CPU-time rate is recorded beside it.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from kernel_template.envs import make_env

TARGET_DECISIONS_PER_S = 10_000
ROUNDS = 30
DECISIONS_PER_ROUND = 2_000


@pytest.mark.bench
def test_bench_decisions_per_second(bench_record):
    env = make_env("traffic-signal", {}, seed=0)  # as training builds it, wrappers included
    env.reset()
    actions = (
        np.random.default_rng(0).integers(0, env.action_space.n, size=DECISIONS_PER_ROUND).tolist()
    )

    def one_round() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        for action in actions:
            *_, truncated, _ = env.step(action)
            if truncated:
                env.reset()
        return time.perf_counter() - wall, time.process_time() - cpu

    one_round()  # warm-up: caches, the signal-schedule table, branch predictors
    rounds = [one_round() for _ in range(ROUNDS)]
    wall_rate = DECISIONS_PER_ROUND / min(wall for wall, _ in rounds)
    cpu_rate = DECISIONS_PER_ROUND / min(cpu for _, cpu in rounds)
    met = bench_record(
        "traffic_env_decisions_per_s",
        wall_rate,
        unit="/s",
        baseline=TARGET_DECISIONS_PER_S,
        ratio=wall_rate / TARGET_DECISIONS_PER_S,
        target=f"decisions/s >= {TARGET_DECISIONS_PER_S} (wall clock, best of {ROUNDS})",
        met=wall_rate >= TARGET_DECISIONS_PER_S,
        cpu_time_rate=cpu_rate,
        load_avg_1m=os.getloadavg()[0],
        cpus=os.cpu_count(),
    )
    assert met, f"{wall_rate:.0f} decisions/s < {TARGET_DECISIONS_PER_S}"
