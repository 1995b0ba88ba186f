"""The traffic-signal env: API checks, determinism, pickling, flow physics, signal safety."""

from __future__ import annotations

import pickle

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from kernel_template.envs import TRAFFIC_ENV_ID, TrafficSignalEnv
from kernel_template.envs.traffic_signal import GREEN, RED, YELLOW

VARIANTS = [
    {},
    {"protected_lefts": True, "arrivals": "binomial"},
    {"min_green_s": 25, "yellow_s": 4, "all_red_s": 3},
    {"decision_s": 5, "min_green_s": 5, "all_red_s": 0},
]


def run_actions(env, actions):
    return [env.step(int(a)) for a in actions]


@pytest.mark.parametrize("kwargs", VARIANTS[:2])
def test_passes_gymnasium_and_sb3_checkers(kwargs):
    gym_check_env(gym.make(TRAFFIC_ENV_ID, **kwargs).unwrapped, skip_render_check=True)
    sb3_check_env(TrafficSignalEnv(**kwargs), warn=True)


def test_registered_id_builds_the_env():
    env = gym.make(TRAFFIC_ENV_ID)
    assert isinstance(env.unwrapped, TrafficSignalEnv)
    assert env.action_space == gym.spaces.Discrete(2)


def test_same_seed_same_episode_and_other_seed_differs():
    actions = np.random.default_rng(7).integers(0, 2, size=240)
    first, second, other = TrafficSignalEnv(), TrafficSignalEnv(), TrafficSignalEnv()
    obs_a, _ = first.reset(seed=11)
    obs_b, _ = second.reset(seed=11)
    other.reset(seed=12)
    np.testing.assert_array_equal(obs_a, obs_b)
    a, b, c = run_actions(first, actions), run_actions(second, actions), run_actions(other, actions)
    for step_a, step_b in zip(a, b, strict=True):
        np.testing.assert_array_equal(step_a[0], step_b[0])
        assert step_a[1:] == step_b[1:]
    assert [s[4]["queue"] for s in a] != [s[4]["queue"] for s in c]


@pytest.mark.parametrize(
    "dumps,loads", [(pickle.dumps, pickle.loads), (cloudpickle.dumps, pickle.loads)]
)
def test_pickle_round_trip_mid_episode_continues_identically(dumps, loads):
    actions = np.random.default_rng(3).integers(0, 2, size=240)
    env = TrafficSignalEnv(protected_lefts=False)
    env.reset(seed=5)
    run_actions(env, actions[:100])
    clone = loads(dumps(env))
    original_tail, clone_tail = run_actions(env, actions[100:]), run_actions(clone, actions[100:])
    for step_a, step_b in zip(original_tail, clone_tail, strict=True):
        np.testing.assert_array_equal(step_a[0], step_b[0])
        assert step_a[1:] == step_b[1:]
    assert clone_tail[-1][3] is True  # truncated at the same final decision
    # The clone resets into the same next episode, too.
    np.testing.assert_array_equal(env.reset()[0], clone.reset()[0])


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_vehicles_are_conserved(kwargs):
    env = TrafficSignalEnv(**kwargs)
    env.reset(seed=2)
    rng = np.random.default_rng(0)
    discharged = 0.0
    truncated = False
    while not truncated:
        _, _, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        assert not terminated
        discharged += info["throughput"]
        assert env.vehicles.min() >= -1e-9
        assert info["delay"] >= -1e-9 and info["queue"] >= -1e-9
        total = env.total_arrived
        assert total == pytest.approx(
            env.vehicles_in_links() + env.total_discharged, rel=1e-9, abs=1e-6
        )
    assert env.total_arrived == int(env.total_arrived) > 1000  # whole vehicles arrive
    assert discharged == pytest.approx(env.total_discharged, rel=1e-9)


def test_cells_never_exceed_jam_density_and_red_holds_vehicles():
    env = TrafficSignalEnv(demand_jitter=0.0)
    env.reset(seed=0)
    jam = env.storage / env.config.n_cells
    for _ in range(240):  # never switch: E/W stays red all hour
        _, _, _, _, info = env.step(0)
        assert np.all(env.vehicles[:, 1:] <= jam[:, None] + 1e-9)
    east_west = env.vehicles[[1, 3]]
    assert np.allclose(east_west[:, 1:], jam[[1, 3], None])  # jammed links
    assert east_west[:, 0].min() > 100  # and the rest waits at the entry
    assert env.movement_queues()[[1, 3]].min() > env.storage[1]


def test_demand_peaks_mid_hour():
    env = TrafficSignalEnv(demand_jitter=0.0)
    arrivals_by_quarter = np.zeros(4)
    for seed in range(3):
        env.reset(seed=seed)
        per_tick = env._arrivals.sum(axis=1)
        arrivals_by_quarter += per_tick.reshape(4, -1).sum(axis=1)
    assert arrivals_by_quarter[1:3].min() > 1.2 * arrivals_by_quarter[[0, 3]].max()


def test_reward_follows_its_documented_formula():
    weights = {"queue_weight": 0.3, "delay_weight": 0.002, "switch_penalty": 0.7}
    env = TrafficSignalEnv(**weights)
    env.reset(seed=4)
    previous_queue = 0.0
    switches = 0
    for action in [0, 1, 1, 0, 0, 0, 1] * 10:
        _, reward, _, _, info = env.step(action)
        expected = (
            -0.3 * (info["queue"] - previous_queue) - 0.002 * info["delay"] - 0.7 * info["switches"]
        )
        assert reward == pytest.approx(expected)
        previous_queue = info["queue"]
        switches += info["switches"]
    assert switches > 10


def test_episode_is_240_decisions_then_truncated():
    env = TrafficSignalEnv()
    env.reset(seed=0)
    flags = [env.step(0)[2:4] for _ in range(240)]
    assert flags[:-1] == [(False, False)] * 239 and flags[-1] == (False, True)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_bad_kwargs_and_actions_are_refused_clearly():
    with pytest.raises(ValueError, match="unknown option.*green_time"):
        TrafficSignalEnv(green_time=5)
    with pytest.raises(ValueError, match="CFL"):
        TrafficSignalEnv(cell_length_m=5)
    env = TrafficSignalEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not in Discrete"):
        env.step(2)


# -- signal safety -----------------------------------------------------------------
# Conflicts written out independently of the env's phase table: movements
# 0..3 = N, E, S, W through; 4..7 = N, E, S, W protected left.
def conflicting_pairs(n_movements):
    through_ns, through_ew = {0, 2}, {1, 3}
    pairs = {(a, b) for a in through_ns for b in through_ew}
    if n_movements == 8:
        left_ns, left_ew = {4, 6}, {5, 7}
        pairs |= {(a, b) for a in left_ns for b in through_ew | left_ew}
        pairs |= {(a, b) for a in left_ew for b in through_ns}
        pairs |= {(0, 6), (2, 4), (1, 7), (3, 5)}  # a through and the opposing left
    return pairs


def episode_lights(env, seed, actions):
    env.reset(seed=seed)
    lights = []
    for action in actions:
        _, _, _, truncated, _ = env.step(int(action))
        lights.append(env.lights_of_last_decision())
        if truncated:
            break
    return np.concatenate(lights)


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_signal_never_conflicts_and_keeps_min_green_yellow_and_all_red(kwargs):
    env = TrafficSignalEnv(**kwargs)
    config = env.config
    min_green, yellow, all_red = (
        config.ticks(s) for s in (config.min_green_s, config.yellow_s, config.all_red_s)
    )
    # Flip-happy actions stress the switching logic.
    actions = np.random.default_rng(1).integers(
        0, env.action_space.n, size=env.decisions_per_episode
    )
    lights = episode_lights(env, 0, actions)
    assert lights.shape == (config.ticks(config.episode_s), len(env.movements))

    for a, b in conflicting_pairs(len(env.movements)):
        assert not np.any((lights[:, a] != RED) & (lights[:, b] != RED)), (a, b)

    changes = 0
    for movement in range(lights.shape[1]):
        column = lights[:, movement]
        ends = np.flatnonzero((column[:-1] == GREEN) & (column[1:] != GREEN)) + 1
        starts = np.flatnonzero((column[:-1] != GREEN) & (column[1:] == GREEN)) + 1
        for end in ends:
            changes += 1
            assert np.all(column[end : end + yellow] == YELLOW)
            clearance = lights[end + yellow : end + yellow + all_red]
            assert np.all(clearance == RED)  # all-red: every movement red
            earlier_starts = starts[starts < end]
            if earlier_starts.size:  # the first green of the episode starts pre-satisfied
                assert end - earlier_starts[-1] >= min_green
        for start in starts:  # a green only ever follows a full clearance
            assert np.all(lights[start - all_red : start] == RED) if all_red else True
            assert np.all(lights[start - all_red - yellow : start - all_red].max(axis=1) == YELLOW)
    assert changes > 20


def test_min_green_delays_a_requested_switch_within_the_interval():
    env = TrafficSignalEnv(min_green_s=25)
    env.reset(seed=0)
    env.step(1)  # starts at the free-to-switch state: switches at once
    lights = env.lights_of_last_decision()
    assert list(lights[:3, 0]) == [YELLOW] * 3 and np.all(lights[5:, 1] == GREEN)
    env.step(0)  # phase 1 has had 10 s of green: the request waits 15 s more
    lights = env.lights_of_last_decision()
    assert np.all(lights[:, 1] == GREEN)
    _, _, _, _, info = env.step(0)
    lights = env.lights_of_last_decision()
    assert info["switches"] == 1
    assert lights[0, 1] == YELLOW and lights[-1, 0] == GREEN
