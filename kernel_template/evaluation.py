"""Evaluation of the agent (and of baseline controllers) on fixed seeds, off the training's RNG.

Everything here runs inside `run_isolated`, so an evaluation in the middle of training
leaves the global `random`, numpy and torch random streams exactly as it found them: a
run is bit-identical with or without its periodic evaluations. Each evaluation builds its
own env instances, seeded `evaluation.seeds_base + i`, far from the training seeds.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from kernel_template import global_rng

if TYPE_CHECKING:
    import pandas as pd

    from kernel_template.config import RunConfig

T = TypeVar("T")

TRAFFIC_ENV_NAMES = ("traffic-signal", "orchestrate/TrafficSignal-v0")
BASELINE_CLASS_NAMES = ("FixedTimeController", "ActuatedController", "MaxPressureController")
AGENT = "agent"
RANDOM_POLICY = "random"
MAX_EPISODE_STEPS = 100_000  # a guard for envs without a time limit
EPISODE_COLUMNS = ("controller", "episode", "seed", "return", "length", "mean_queue", "total_delay")


def run_isolated(fn: Callable[[], T]) -> T:
    """Call fn and put the global random/numpy/torch (and CUDA) RNG states back afterwards."""
    with global_rng.preserved():
        return fn()


def is_traffic_env(env_id: str) -> bool:
    return env_id in TRAFFIC_ENV_NAMES


def build_env(run_config: RunConfig, seed: int):
    """One fresh env for evaluation, through the same `make_env` the training uses."""
    from kernel_template.envs import make_env

    return make_env(run_config.env, run_config.env_kwargs, seed)


def evaluation_seeds(run_config: RunConfig, episodes: int, seed_offset: int = 0) -> list[int]:
    base = run_config.evaluation.seeds_base + seed_offset
    return [base + i for i in range(episodes)]


# --------------------------------------------------------------------- policies


def agent_actions(model) -> Callable[[list[Any]], list[Any]]:
    """Deterministic actions for a batch of observations (one per running episode), in one
    `predict` call: the per-call cost is most of an evaluation step. Observations are
    normalised like the model's VecNormalize."""
    from stable_baselines3.common.vec_env import unwrap_vec_normalize

    normalizer = unwrap_vec_normalize(model.get_env()) if model.get_env() is not None else None

    def act(observations: list[Any]) -> list[Any]:
        batch = _stacked(observations)
        if normalizer is not None:
            batch = normalizer.normalize_obs(batch)
        actions, _ = model.predict(batch, deterministic=True)
        return [action.item() if np.ndim(action) == 0 else action for action in actions]

    return act


def _stacked(observations: list[Any]) -> Any:
    if isinstance(observations[0], dict):
        return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}
    return np.stack([np.asarray(obs) for obs in observations])


@contextmanager
def policy_mode_preserved(model):
    """`predict` switches the policy to eval mode; put back the mode training left it in."""
    policy = getattr(model, "policy", None)
    was_training = getattr(policy, "training", None)
    try:
        yield
    finally:
        if was_training is not None:
            policy.set_training_mode(was_training)


def random_policy(env, seed: int) -> Callable[[Any, Any], Any]:
    """Uniform actions from a private generator seeded per episode."""
    space = env.action_space
    space.seed(seed)
    return lambda obs, env: space.sample()


def baseline_policies() -> dict[str, type]:
    """The traffic env's baseline controller classes that exist, by name (none without the module)."""
    try:
        from kernel_template.envs import baselines
    except ImportError:
        return {}
    return {
        name: getattr(baselines, name) for name in BASELINE_CLASS_NAMES if hasattr(baselines, name)
    }


def controller_policy(cls: type, env) -> Callable[[Any, Any], Any]:
    """A baseline controller as `act(obs, env)`; given the env when its constructor wants one."""
    required = [
        p
        for p in inspect.signature(cls).parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    controller = cls(env.unwrapped) if required else cls()
    controller.reset()
    takes_env = "env" in inspect.signature(controller.act).parameters
    if takes_env:
        return lambda obs, env: controller.act(obs, env=env.unwrapped)
    return lambda obs, env: controller.act(obs)


# --------------------------------------------------------------------- episodes


class EpisodeTally:
    """One episode's totals, step by step: return, length, and queue and delay when the env
    reports them."""

    def __init__(self, env) -> None:
        spec = getattr(env, "spec", None)
        self.limit = getattr(spec, "max_episode_steps", None) or MAX_EPISODE_STEPS
        self.total_reward = 0.0
        self.length = 0
        self.queues: list[float] = []
        self.delay: float | None = None
        self.done = False

    def add(self, reward, terminated, truncated, info) -> None:
        self.total_reward += float(reward)
        self.length += 1
        if "queue" in info:
            self.queues.append(float(np.sum(info["queue"])))
        if "delay" in info:
            self.delay = (self.delay or 0.0) + float(np.sum(info["delay"]))
        self.done = bool(terminated or truncated) or self.length >= self.limit

    def result(self) -> dict[str, Any]:
        return {
            "return": self.total_reward,
            "length": self.length,
            "mean_queue": float(np.mean(self.queues)) if self.queues else math.nan,
            "total_delay": self.delay if self.delay is not None else math.nan,
        }


def run_episode(env, act: Callable[[Any, Any], Any], seed: int) -> dict[str, Any]:
    """One episode from `reset(seed=seed)`."""
    obs, _ = env.reset(seed=seed)
    tally = EpisodeTally(env)
    while not tally.done:
        obs, *outcome = env.step(act(obs, env))
        tally.add(*outcome)
    return tally.result()


def run_agent_episodes(
    envs: list, act: Callable[[list[Any]], list[Any]], seeds: list[int]
) -> list[dict[str, Any]]:
    """The agent's episodes side by side, one batched `act` per step for those still running
    (each env gets the action for its own observation, so an episode is the one it would be
    alone)."""
    observations = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)]
    tallies = [EpisodeTally(env) for env in envs]
    running = list(range(len(envs)))
    while running:
        actions = act([observations[i] for i in running])
        for i, action in zip(running, actions, strict=True):
            observations[i], *outcome = envs[i].step(action)
            tallies[i].add(*outcome)
        running = [i for i in running if not tallies[i].done]
    return [tally.result() for tally in tallies]


def _episodes(
    run_config: RunConfig, seeds: list[int], make_act: Callable[[Any, int], Callable]
) -> list[dict]:
    rows = []
    for index, seed in enumerate(seeds):
        env = build_env(run_config, seed)
        try:
            rows.append(
                {"episode": index, "seed": seed, **run_episode(env, make_act(env, seed), seed)}
            )
        finally:
            env.close()
    return rows


def _agent_episodes(run_config: RunConfig, seeds: list[int], model) -> list[dict]:
    envs = []
    try:
        for seed in seeds:
            envs.append(build_env(run_config, seed))
        results = run_agent_episodes(envs, agent_actions(model), seeds)
    finally:
        for env in envs:
            env.close()
    return [
        {"episode": index, "seed": seed, **result}
        for index, (seed, result) in enumerate(zip(seeds, results, strict=True))
    ]


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean/std return, mean length, mean queue and mean per-episode total delay."""
    returns = np.array([r["return"] for r in rows], dtype=float)
    result: dict[str, Any] = {
        "episodes": len(rows),
        "mean_return": float(returns.mean()) if len(rows) else math.nan,
        "std_return": float(returns.std()) if len(rows) else math.nan,
        "mean_length": float(np.mean([r["length"] for r in rows])) if rows else math.nan,
    }
    for key, out in (("mean_queue", "mean_queue"), ("total_delay", "total_delay")):
        values = [r[key] for r in rows if not math.isnan(r[key])]
        if values:
            result[out] = float(np.mean(values))
    return result


def evaluate_agent(
    model, run_config: RunConfig, episodes: int, seed_offset: int = 0
) -> dict[str, Any]:
    """The agent's deterministic performance over `episodes` fixed seeds (off the training RNG)."""
    seeds = evaluation_seeds(run_config, episodes, seed_offset)

    def evaluate() -> dict[str, Any]:
        with policy_mode_preserved(model):
            rows = _agent_episodes(run_config, seeds, model)
        return {**aggregate(rows), "seeds": seeds}

    return run_isolated(evaluate)


def evaluate_against_baselines(model, run_config: RunConfig) -> pd.DataFrame:
    """Per controller and episode on the final-evaluation seeds: the agent (when there is
    one), then each baseline controller for the traffic env, or a random policy otherwise."""
    import pandas as pd

    seeds = evaluation_seeds(run_config, run_config.evaluation.final_episodes)

    def evaluate() -> pd.DataFrame:
        controllers: dict[str, Callable[[Any, int], Callable]] = {}
        baselines = baseline_policies() if is_traffic_env(run_config.env) else {}
        for name, cls in baselines.items():
            controllers[name] = lambda env, seed, cls=cls: controller_policy(cls, env)
        if not baselines:
            controllers[RANDOM_POLICY] = random_policy
        rows = []
        with policy_mode_preserved(model):
            if model is not None:
                rows += [
                    {"controller": AGENT, **row}
                    for row in _agent_episodes(run_config, seeds, model)
                ]
            for name, make_act in controllers.items():
                rows += [
                    {"controller": name, **row} for row in _episodes(run_config, seeds, make_act)
                ]
        return pd.DataFrame(rows, columns=list(EPISODE_COLUMNS))

    return run_isolated(evaluate)


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    """The `SessionSummary.evaluation` dict: aggregates per controller, plus the seeds used."""
    controllers = {
        name: aggregate(group.to_dict("records"))
        for name, group in frame.groupby("controller", sort=False)
    }
    return {
        "episodes": int(frame["episode"].nunique()) if len(frame) else 0,
        "seeds": sorted(int(s) for s in frame["seed"].unique()),
        "controllers": controllers,
    }
