"""Baseline controllers and `evaluate_controller`."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from stable_baselines3 import DQN

from kernel_template.envs import TrafficSignalEnv, make_env
from kernel_template.envs.baselines import (
    ActuatedController,
    FixedTimeController,
    MaxPressureController,
    evaluate_controller,
)

SEEDS = [0, 1, 2, 3]


class NeverSwitch:
    """The deliberately bad controller: keeps whatever phase is green."""

    def reset(self):
        pass

    def act(self, obs, env=None):
        return int(np.argmax(obs[env.unwrapped.layout.phase]))


def total_delay(controller, env_kwargs=None):
    return sum(r["total_delay"] for r in evaluate_controller(controller, env_kwargs or {}, SEEDS))


@pytest.fixture(scope="module")
def delays():
    controllers = {
        "never": NeverSwitch(),
        "fixed": FixedTimeController((2, 2)),
        "actuated": ActuatedController(),
        "max_pressure": MaxPressureController(),
    }
    return {name: total_delay(c) for name, c in controllers.items()}


def test_adaptive_controllers_beat_never_switching_by_far(delays):
    for name in ("fixed", "actuated", "max_pressure"):
        assert delays[name] * 10 < delays["never"], delays


def test_adaptive_controllers_beat_fixed_time(delays):
    assert delays["actuated"] < delays["fixed"], delays
    assert delays["max_pressure"] < delays["fixed"], delays


def test_fixed_time_cycles_through_its_splits_and_restarts_on_reset():
    controller = FixedTimeController((2, 1, 3))
    assert [controller.act(None) for _ in range(8)] == [0, 0, 1, 2, 2, 2, 0, 0]
    controller.reset()
    assert controller.act(None) == 0
    with pytest.raises(ValueError, match="splits"):
        FixedTimeController((2, 0))


@pytest.mark.parametrize("controller", [ActuatedController(), MaxPressureController()])
def test_controllers_read_a_non_default_layout_through_env(controller):
    env = make_env("traffic-signal", {"protected_lefts": True, "n_cells": 5}, seed=0)
    obs, _ = env.reset(seed=0)
    controller.reset()
    chosen = set()
    for _ in range(240):
        action = controller.act(obs, env)
        assert env.action_space.contains(action)
        chosen.add(action)
        obs, *_ = env.step(action)
    assert chosen == {0, 1, 2, 3}


def test_max_pressure_serves_the_longer_queue():
    env = TrafficSignalEnv(base_flows_vph=(0, 900, 0, 900), demand_jitter=0.0)
    obs, _ = env.reset(seed=0)
    for _ in range(8):
        obs, *_ = env.step(0)  # E/W queues build on red
    assert MaxPressureController().act(obs, env) == 1
    assert MaxPressureController().act(obs) == 1  # default layout without env


def test_evaluation_reports_per_episode_totals_and_is_repeatable():
    first = evaluate_controller(MaxPressureController(), {}, [5, 6])
    again = evaluate_controller(MaxPressureController(), {}, [5, 6])
    assert first == again
    assert [r["seed"] for r in first] == [5, 6]
    assert first[0] != first[1]
    for row in first:
        assert row["length"] == 240
        assert row["throughput"] > 1000 and row["total_delay"] > 0 and row["mean_queue"] > 0
        assert set(row) == {"seed", "return", "length", "mean_queue", "total_delay", "throughput"}


def snapshot_global_rngs():
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def assert_same_rng_states(before, after):
    assert before[0] == after[0]
    for a, b in zip(before[1], after[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert torch.equal(before[2], after[2])


def test_evaluation_leaves_global_rng_state_untouched():
    model = DQN("MlpPolicy", make_env("traffic-signal", {}, 0), learning_starts=10, seed=1)
    model.learn(50)  # a model mid-training, as a training callback would evaluate it
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    np.random.rand(), torch.rand(1)
    before = snapshot_global_rngs()
    was_training = model.policy.training
    results = evaluate_controller(model, {}, [0])
    evaluate_controller(ActuatedController(), {}, [0, 1])
    assert_same_rng_states(before, snapshot_global_rngs())
    assert results[0]["length"] == 240
    assert model.policy.training == was_training


def test_evaluation_of_a_model_matches_stepping_it_by_hand():
    model = DQN("MlpPolicy", make_env("traffic-signal", {}, 0), seed=2)
    env = TrafficSignalEnv()
    obs, _ = env.reset(seed=9)
    total, truncated = 0.0, False
    while not truncated:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, _, truncated, _ = env.step(int(action))
        total += reward
    assert evaluate_controller(model, {}, [9])[0]["return"] == pytest.approx(total)


def test_evaluation_of_a_gymnasium_env_and_bad_inputs():
    class PushRight:
        def reset(self):
            pass

        def act(self, obs, env=None):
            return 1

    rows = evaluate_controller(PushRight(), None, [0], env_id="CartPole-v1")
    assert rows[0]["length"] < 50 and rows[0]["total_delay"] is None
    with pytest.raises(ValueError, match="act\\(obs, env\\).*predict"):
        evaluate_controller(object(), {}, [0])


class DrawsFromEveryGlobalStream:
    """A controller that draws from the global streams, as a careless policy might."""

    def reset(self) -> None:
        pass

    def act(self, obs, env=None) -> int:
        random.random(), np.random.rand(), torch.rand(1)
        return 0


def test_evaluation_puts_back_what_a_controller_drew_from_the_global_streams():
    random.seed(4), np.random.seed(4), torch.manual_seed(4)
    before = snapshot_global_rngs()
    evaluate_controller(DrawsFromEveryGlobalStream(), {}, [0])
    assert_same_rng_states(before, snapshot_global_rngs())
