"""Pinned trajectories: the traffic env's dynamics must not change when it is optimised.

`data/traffic_trajectories.npz` was recorded from the env before any speed work (run this
file as a script with `--record` to re-record, only when the dynamics change on purpose).
Every observation, reward, flag and info value must match bit for bit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from kernel_template.envs import make_env

FIXTURE = Path(__file__).parent / "data" / "traffic_trajectories.npz"

# (name, env_kwargs, seed, steps): variants cover both arrival models, protected lefts,
# other signal timings, and episode ends (short episodes reset mid-trajectory).
CASES = [
    ("default", {}, 0, 250),
    ("default_seed7", {}, 7, 120),
    ("lefts_binomial", {"protected_lefts": True, "arrivals": "binomial"}, 3, 120),
    ("long_clearance", {"min_green_s": 25, "yellow_s": 4, "all_red_s": 3}, 11, 120),
    ("short_decisions", {"decision_s": 5, "min_green_s": 5, "all_red_s": 0}, 5, 120),
    ("short_episodes", {"episode_s": 600, "demand_jitter": 0.0, "n_cells": 5}, 2, 100),
    (
        "heavy_lefts",
        {"protected_lefts": True, "base_flows_vph": (1500, 1200, 1400, 1100), "episode_s": 900},
        9,
        130,
    ),
]
INFO_KEYS = ("queue", "delay", "throughput", "phase", "switches")


def trajectory(kwargs: dict, seed: int, steps: int) -> dict[str, np.ndarray]:
    env = make_env("traffic-signal", kwargs, seed=seed)  # wrappers included, as SB3 steps it
    n = env.action_space.n
    # Sticky random actions: long greens and bursts of switching both happen.
    rng = np.random.default_rng(1000 + seed)
    actions, current = [], 0
    for _ in range(steps):
        if rng.random() < 0.4:
            current = int(rng.integers(0, n))
        actions.append(current)
    obs, info = env.reset()
    observations, rewards, flags, infos, lights = [obs], [], [], [], []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        flags.append((terminated, truncated))
        infos.append([float(info[key]) for key in INFO_KEYS])
        lights.append(env.unwrapped.lights_of_last_decision().sum(axis=0))
        if truncated:
            obs, info = env.reset()
            observations.append(obs)
    return {
        "actions": np.asarray(actions, dtype=np.int64),
        "observations": np.asarray(observations, dtype=np.float32),
        "rewards": np.asarray(rewards, dtype=np.float64),
        "flags": np.asarray(flags, dtype=bool),
        "infos": np.asarray(infos, dtype=np.float64),
        "lights": np.asarray(lights, dtype=np.int64),
        "vehicles": env.unwrapped.vehicles,
    }


def record() -> None:
    arrays = {}
    for name, kwargs, seed, steps in CASES:
        for key, value in trajectory(kwargs, seed, steps).items():
            arrays[f"{name}/{key}"] = value
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, **arrays)


@pytest.mark.parametrize("name,kwargs,seed,steps", CASES, ids=[case[0] for case in CASES])
def test_trajectory_matches_the_pinned_recording_bit_for_bit(name, kwargs, seed, steps):
    pinned = np.load(FIXTURE)
    got = trajectory(kwargs, seed, steps)
    for key, value in got.items():
        expected = pinned[f"{name}/{key}"]
        assert value.dtype == expected.dtype and value.shape == expected.shape, key
        # Bit for bit: compare the raw bytes (NaN-safe, -0.0 vs 0.0 counts as a change).
        assert value.tobytes() == expected.tobytes(), f"{name}: {key} differs from the pinned run"


if __name__ == "__main__":
    if sys.argv[1:] == ["--record"]:
        record()
        print(f"recorded {FIXTURE}")
    else:
        sys.exit("usage: python tests/envs/test_traffic_pinned.py --record")
