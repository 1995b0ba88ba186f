"""`make_env` resolves the three kinds of env names and refuses the rest clearly."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from kernel_template.envs import TrafficSignalEnv, make_env


def test_traffic_signal_alias_and_kwargs():
    env = make_env("traffic-signal", {"n_cells": 5, "protected_lefts": True}, seed=None)
    assert isinstance(env.unwrapped, TrafficSignalEnv)
    assert env.unwrapped.layout.n_cells == 5 and env.action_space.n == 4


def test_gymnasium_id():
    env = make_env("CartPole-v1", None, seed=0)
    assert env.spec.id == "CartPole-v1"


def test_module_colon_class_gets_env_kwargs():
    env = make_env("kernel_template.envs.traffic_signal:TrafficSignalEnv", {"n_cells": 3}, seed=1)
    assert type(env) is TrafficSignalEnv and env.layout.n_cells == 3


def test_seed_makes_later_plain_resets_deterministic():
    first, second = make_env("traffic-signal", {}, seed=4), make_env("traffic-signal", {}, seed=4)
    other = make_env("traffic-signal", {}, seed=5)
    for _ in range(2):  # SB3 vector envs reset without a seed
        a, b = first.reset()[0], second.reset()[0]
        other.reset()
        np.testing.assert_array_equal(a, b)
        trajectories = [
            [e.step(i % 2)[4]["queue"] for i in range(20)] for e in (first, second, other)
        ]
        assert trajectories[0] == trajectories[1] != trajectories[2]
    assert first.action_space.sample() == second.action_space.sample()


@pytest.mark.parametrize(
    "env_id,kwargs,message",
    [
        ("NoSuchEnv-v9", {}, "unknown env 'NoSuchEnv-v9'"),
        ("no_such_package.module:Env", {}, "cannot import module 'no_such_package.module'"),
        ("json:NoSuchClass", {}, "has no class 'NoSuchClass'"),
        ("json:JSONDecoder", {}, "not a gymnasium.Env subclass"),
        ("traffic-signal", {"bogus": 1}, "unknown option"),
        ("CartPole-v1", {"bogus": 1}, "bad env_kwargs"),
        ("kernel_template.envs.traffic_signal:ObservationLayout", {}, "not a gymnasium.Env"),
    ],
)
def test_errors_name_the_problem_and_the_fix(env_id, kwargs, message):
    with pytest.raises(ValueError, match=message) as caught:
        make_env(env_id, kwargs, seed=0)
    text = str(caught.value)
    assert "\n" not in text
    if "option" not in message:
        assert "traffic-signal" in text or "fix env_kwargs" in text


def test_registration_is_idempotent_on_reimport():
    import importlib

    import kernel_template.envs as envs

    importlib.reload(envs)
    assert "orchestrate/TrafficSignal-v0" in gym.registry
