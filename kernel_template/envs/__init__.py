"""Environments for the kernel: the default traffic-signal env and `make_env`.

Importing this package registers `orchestrate/TrafficSignal-v0` with Gymnasium.
"""

from __future__ import annotations

import importlib
import inspect

import gymnasium as gym

from kernel_template.envs.traffic_signal import TrafficConfig, TrafficSignalEnv

TRAFFIC_ENV_ID = "orchestrate/TrafficSignal-v0"
TRAFFIC_ALIAS = "traffic-signal"

if TRAFFIC_ENV_ID not in gym.registry:
    gym.register(
        id=TRAFFIC_ENV_ID, entry_point="kernel_template.envs.traffic_signal:TrafficSignalEnv"
    )

_HOW_TO_NAME = (
    f"use {TRAFFIC_ALIAS!r}, a Gymnasium id such as 'CartPole-v1', "
    "or 'package.module:Class' naming an importable gymnasium.Env subclass"
)


def make_env(env_id: str, env_kwargs: dict | None = None, seed: int | None = None) -> gym.Env:
    """Build one env from a run config's `env` and `env_kwargs`.

    `env_id` is "traffic-signal" (this package's env), any registered Gymnasium id, or
    "package.module:Class" (the class is instantiated with `env_kwargs`). With a seed,
    the env is reset once with it and its spaces are seeded, so later plain `reset()`
    calls (as SB3's vector envs make) continue one deterministic stream.
    """
    kwargs = dict(env_kwargs or {})
    if env_id in (TRAFFIC_ALIAS, TRAFFIC_ENV_ID):
        env = _make_registered(TRAFFIC_ENV_ID, kwargs)
    else:
        cls = _class_from_path(env_id)
        env = _instantiate(cls, env_id, kwargs) if cls else _make_registered(env_id, kwargs)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
        env.observation_space.seed(seed)
    return env


def _class_from_path(env_id: str) -> type | None:
    """The class named by 'package.module:Class', or None when `env_id` is not of that shape.

    Gymnasium's own 'module:EnvName-v0' ids (an import then a registered name) fall
    through to `gym.make`.
    """
    module_name, sep, attr = env_id.partition(":")
    if not sep or not module_name or not attr.isidentifier():
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"env {env_id!r}: cannot import module {module_name!r} ({exc}); "
            "make sure the package is installed or on the kernel's path, or " + _HOW_TO_NAME
        ) from exc
    cls = getattr(module, attr, None)
    if cls is None:
        if attr in gym.registry:  # the module registered an unversioned Gymnasium id
            return None
        raise ValueError(
            f"env {env_id!r}: module {module_name!r} has no class {attr!r}; " + _HOW_TO_NAME
        )
    if not (inspect.isclass(cls) and issubclass(cls, gym.Env)):
        raise ValueError(
            f"env {env_id!r}: {attr} in {module_name} is not a gymnasium.Env subclass; "
            + _HOW_TO_NAME
        )
    return cls


def _instantiate(cls: type, env_id: str, kwargs: dict) -> gym.Env:
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(
            f"env {env_id!r}: bad env_kwargs {sorted(kwargs)} ({exc}); fix env_kwargs"
        ) from exc


def _make_registered(env_id: str, kwargs: dict) -> gym.Env:
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise ValueError(f"unknown env {env_id!r} ({exc}); " + _HOW_TO_NAME) from exc
    except TypeError as exc:
        raise ValueError(
            f"env {env_id!r}: bad env_kwargs {sorted(kwargs)} ({exc}); fix env_kwargs"
        ) from exc


__all__ = ["TRAFFIC_ALIAS", "TRAFFIC_ENV_ID", "TrafficConfig", "TrafficSignalEnv", "make_env"]
