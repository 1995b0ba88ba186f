"""Classic signal controllers, and the evaluation that compares them with a trained agent.

Every controller acts through the agent's interface: `act(obs, env=None)` returns the
phase wanted for the next decision interval, from the observation alone. `env` (any
wrapper of `TrafficSignalEnv`) only tells the controller the observation layout when
the env was built with non-default kwargs.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from kernel_template import global_rng
from kernel_template.envs.traffic_signal import (
    TIME_IN_PHASE_NORM_S,
    ObservationLayout,
    TrafficConfig,
    default_layout,
    phase_table,
)


class _ObservationReader:
    """Decodes the traffic observation: queues in vehicles, densities, phase, green time."""

    def __init__(self, layout: ObservationLayout, storage: np.ndarray, phases: np.ndarray):
        self.layout, self.storage, self.phases = layout, storage, phases

    @classmethod
    def for_env(cls, env=None) -> _ObservationReader:
        base = getattr(env, "unwrapped", None)
        if base is not None and hasattr(base, "layout"):
            return cls(base.layout, base.storage, base.phase_movements)
        config = TrafficConfig()
        lanes = np.full(4, config.through_lanes)
        storage = lanes * config.jam_density_vpm * config.cell_length_m * config.n_cells
        return cls(default_layout(), storage, phase_table(False))

    def queues(self, obs: np.ndarray) -> np.ndarray:
        share = np.minimum(np.asarray(obs[self.layout.queue], dtype=np.float64), 1 - 1e-9)
        return self.storage * share / (1 - share)  # inverts q / (q + storage)

    def densities(self, obs: np.ndarray) -> np.ndarray:
        layout = self.layout
        return np.asarray(obs[layout.density]).reshape(layout.n_movements, layout.n_cells)

    def phase(self, obs: np.ndarray) -> int:
        return int(np.argmax(obs[self.layout.phase]))

    def green_s(self, obs: np.ndarray) -> float:
        return float(obs[self.layout.time_in_phase]) * TIME_IN_PHASE_NORM_S


class FixedTimeController:
    """A fixed cycle: phase p is requested for `splits[p]` consecutive decisions.

    With 15 s decisions, (2, 2) is a 60 s cycle; each phase loses the 5 s of yellow and
    all-red that start it.
    """

    def __init__(self, splits: Sequence[int] = (2, 2)):
        if not splits or min(splits) < 1:
            raise ValueError(f"splits={tuple(splits)!r} must give each phase >= 1 decision")
        self.plan = [phase for phase, count in enumerate(splits) for _ in range(count)]
        self.reset()

    def reset(self) -> None:
        self._position = 0

    def act(self, obs, env=None) -> int:
        phase = self.plan[self._position % len(self.plan)]
        self._position += 1
        return phase


class ActuatedController:
    """Gap-out / max-out actuation on stop-line detector zones (the last cells).

    Holds the green while the current phase's detector zone stays busier than
    `gap_density` (a fraction of jam density: the queue is still discharging) and green
    time is under `max_green_s`; then serves the waiting phase with the longest queue.
    Never switches when no other phase has a vehicle waiting.
    """

    def __init__(
        self,
        gap_density: float = 0.2,
        max_green_s: float = 60.0,
        detector_cells: int = 2,
        call_vehicles: float = 1.0,
    ):
        self.gap_density, self.max_green_s = gap_density, max_green_s
        self.detector_cells, self.call_vehicles = detector_cells, call_vehicles
        self._reader: _ObservationReader | None = None

    def reset(self) -> None:
        self._reader = None

    def act(self, obs, env=None) -> int:
        reader = self._reader = self._reader or _ObservationReader.for_env(env)
        current = reader.phase(obs)
        queues = reader.queues(obs)
        phase_queue = reader.phases @ queues
        waiting = [
            p
            for p in range(len(phase_queue))
            if p != current and phase_queue[p] >= self.call_vehicles
        ]
        if not waiting:
            return current
        zone = reader.densities(obs)[:, -self.detector_cells :].mean(axis=1)
        busy = zone[reader.phases[current]].max() >= self.gap_density
        if busy and reader.green_s(obs) < self.max_green_s:
            return current
        return max(waiting, key=lambda p: phase_queue[p])


class MaxPressureController:
    """Max pressure (Varaiya 2013): serve the phase whose movements hold the most queue.

    Exits are uncongested, so a movement's pressure is its own queue. The current phase
    is kept unless another beats it by more than `hysteresis` vehicles.
    """

    def __init__(self, hysteresis: float = 0.0):
        self.hysteresis = hysteresis
        self._reader: _ObservationReader | None = None

    def reset(self) -> None:
        self._reader = None

    def act(self, obs, env=None) -> int:
        reader = self._reader = self._reader or _ObservationReader.for_env(env)
        pressure = reader.phases @ reader.queues(obs)
        current = reader.phase(obs)
        best = int(np.argmax(pressure))
        return best if pressure[best] > pressure[current] + self.hysteresis else current


def evaluate_controller(
    controller_or_model: Any,
    env_kwargs: dict | None,
    seeds: Sequence[int],
    *,
    env_id: str = "traffic-signal",
) -> list[dict]:
    """Run one episode per seed, each in a fresh env; returns per-episode totals.

    Works with a controller (`act(obs, env)` and `reset()`) or an SB3 model
    (`predict(obs, deterministic=True)`; give it a model trained on raw observations).
    Leaves the global `random`, numpy and torch RNG states as it found them, so a
    training run is the same with or without evaluations.
    """
    from kernel_template.envs import make_env

    act = _policy(controller_or_model)
    results = []
    with global_rng.preserved(), _eval_mode(controller_or_model):
        for seed in seeds:
            env = make_env(env_id, env_kwargs, seed=None)
            try:
                results.append(_run_episode(env, act, controller_or_model, int(seed)))
            finally:
                env.close()
    return results


def _run_episode(env, act, controller_or_model, seed: int) -> dict:
    if hasattr(controller_or_model, "reset") and hasattr(controller_or_model, "act"):
        controller_or_model.reset()
    obs, _ = env.reset(seed=seed)
    total_reward, steps, queue_sum, delay, throughput = 0.0, 0, 0.0, 0.0, 0.0
    traffic = True
    while True:
        obs, reward, terminated, truncated, info = env.step(act(obs, env))
        total_reward += float(reward)
        steps += 1
        traffic = traffic and "queue" in info
        if traffic:
            queue_sum += info["queue"]
            delay += info.get("delay", 0.0)
            throughput += info.get("throughput", 0.0)
        if terminated or truncated:
            break
    return {
        "seed": seed,
        "return": total_reward,
        "length": steps,
        "mean_queue": queue_sum / steps if traffic else None,
        "total_delay": delay if traffic else None,
        "throughput": throughput if traffic else None,
    }


def _policy(controller_or_model):
    if hasattr(controller_or_model, "act"):
        return controller_or_model.act
    if hasattr(controller_or_model, "predict"):

        def act(obs, env):
            action, _ = controller_or_model.predict(obs, deterministic=True)
            return action.item() if np.ndim(action) == 0 else action

        return act
    raise ValueError(
        f"cannot evaluate {type(controller_or_model).__name__}: pass a controller with "
        "act(obs, env) or a stable-baselines3 model with predict(obs, deterministic=True)"
    )


@contextmanager
def _eval_mode(controller_or_model):
    """Put an SB3 policy in eval mode for the evaluation, then back as it was."""
    policy = getattr(controller_or_model, "policy", None)
    was_training = getattr(policy, "training", None)
    try:
        if was_training is not None and hasattr(policy, "set_training_mode"):
            policy.set_training_mode(False)
        yield
    finally:
        if was_training is not None and hasattr(policy, "set_training_mode"):
            policy.set_training_mode(was_training)
