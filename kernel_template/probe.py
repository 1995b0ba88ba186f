"""Preflight's local rehearsal of a session's start: build the env and the model exactly as
`train.TrainingSession.setup` does and learn a few steps on the CPU, so that a bad env
argument or hyperparameter fails on this machine in seconds, not on Kaggle after a push.

`python -c "...; from kernel_template.probe import main; main()" RUN_CONFIG_JSON` prints one
JSON object: for a user loop (`entrypoint`), `loop` or `loop_error` (see `probe_loop`);
otherwise the env's sizes (`obs_bytes`, `obs_dim`, `act_bytes`, `n_actions`) or
`env_error`, then `model` (what the rehearsal did) or `model_error` with `model_fix`.
Preflight runs it from the kernel's unpacked runtime, so the embedded copies are the ones tested.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
import sys
import time
from typing import Any

# Enough steps for one rollout (PPO's default n_steps) or, off-policy, for the first gradient
# update once learning_starts is lowered below; the deadline keeps a slow env to seconds.
PROBE_MAX_STEPS = 2048
PROBE_MAX_S = 5.0  # of learning, after the imports and the build
PROBE_LEARNING_STARTS = 64
# A user loop's rehearsal: steps per session, and seconds its session end may take.
PROBE_LOOP_STEPS = 8
PROBE_LOOP_END_S = 10.0
_UNEXPECTED_KEYWORD = re.compile(r"unexpected keyword argument '(\w+)'")


def probe_env(config: dict[str, Any]) -> dict[str, Any]:
    """One env as the kernel builds it: its observation and action sizes, or `env_error`."""
    try:
        import numpy as np

        from kernel_template.envs import make_env

        env = make_env(config["env"], config.get("env_kwargs") or {}, seed=0)
        obs_space, act_space = env.observation_space, env.action_space
        obs = np.asarray(obs_space.sample())
        act = np.asarray(act_space.sample())
        n_actions = int(getattr(act_space, "n", 0)) or int(np.prod(act_space.shape or (1,)))
        return {
            "obs_bytes": int(obs.nbytes),
            "obs_dim": int(obs.size),
            "act_bytes": int(act.nbytes),
            "n_actions": n_actions,
        }
    except Exception as error:
        return {"env_error": _one_line(error)}


def probe_model(config_data: dict[str, Any]) -> dict[str, Any]:
    """Build the vec env and the model with the kernel's own functions, then learn until the
    first gradient update (or PROBE_MAX_STEPS / PROBE_MAX_S): `model`, or `model_error`."""
    from kernel_template.config import RunConfig

    config = RunConfig.model_validate(config_data)
    phase = f"building {config.algo}"
    began = time.monotonic()
    try:
        import torch

        from kernel_template.train import build_model, build_vec_env

        torch.set_num_threads(1)  # as the kernel does on a CPU
        model = build_model(config, build_vec_env(config), "cpu")
        steps = _steps_to_first_update(model)
        phase = f"{config.algo} built, but learning {steps} steps"
        model.learn(steps, callback=_deadline(time.monotonic() + PROBE_MAX_S))
    except Exception as error:
        return {
            "model_error": f"{phase} failed: {_one_line(error)}",
            "model_fix": _fix(config, error),
        }
    return {
        "model": {
            "algo": config.algo,
            "steps": int(model.num_timesteps),
            "updates": int(getattr(model, "_n_updates", 0)),
            "seconds": round(time.monotonic() - began, 2),
        }
    }


def probe_loop(config_data: dict[str, Any]) -> dict[str, Any]:
    """A user loop's rehearsal: its entrypoint runs PROBE_LOOP_STEPS steps in a throwaway
    working dir with a budget of seconds, checkpointing as it goes; then a second session
    resumes from what the first left. `loop`, or `loop_error` with `loop_fix`."""
    import io
    import tempfile
    from pathlib import Path

    from kernel_template import layout
    from kernel_template.config import RunConfig
    from kernel_template.runtime import RuntimeEnvironment
    from kernel_template.session import load_entrypoint, run_entrypoint

    began = time.monotonic()
    try:  # imported before the sessions start: their budget is for training, not imports
        load_entrypoint(config_data["entrypoint"])
        import kernel_template.finalize  # noqa: F401
    except Exception as error:
        return {
            "loop_error": f"importing {config_data['entrypoint']} failed: {_one_line(error)}",
            "loop_fix": "fix the entrypoint or [kernel] user_modules",
        }
    config = RunConfig.model_validate(config_data).model_copy(
        update={
            "segment_timesteps": min(PROBE_LOOP_STEPS, config_data.get("total_timesteps", 1)),
            "segment_index": 0,
            "parent": None,
            "checkpoint_every": 1,
            "checkpoint_min_seconds": 0.0,
            "min_margin_s": 0.0,
            "device": "cpu",
        }
    )
    with tempfile.TemporaryDirectory(prefix="orchestrate-probe-") as scratch:
        ends = []
        for attempt in ("first", "resumed"):
            runtime = RuntimeEnvironment(
                working_dir=Path(scratch) / "working",
                input_dir=Path(scratch) / "input",
                session_limit_s=PROBE_MAX_S + PROBE_LOOP_END_S,
                session_start=time.time(),
            )
            summary = run_entrypoint(config, runtime, stream=io.StringIO())
            if summary.status == "error":
                return {
                    "loop_error": f"{config.entrypoint} ({attempt} session): {summary.reason}",
                    "loop_fix": "fix the entrypoint, [run.params] or [kernel] user_modules",
                }
            if summary.left_checkpoint is None and attempt == "first":
                return {
                    "loop_error": f"{config.entrypoint} ran {summary.timesteps_end} steps but "
                    "left no checkpoint",
                    "loop_fix": "call session.checkpoint(step, state) when "
                    "session.should_checkpoint(step), and once after the loop",
                }
            ends.append(summary.timesteps_end)
        newest = layout.SessionPaths(Path(scratch) / "working").newest_checkpoint()
        checkpoint_bytes = (
            sum(f.stat().st_size for f in newest.rglob("*") if f.is_file()) if newest else 0
        )
    return {
        "loop": {
            "entrypoint": config.entrypoint,
            "steps": ends[0],
            "resumed_to": ends[1],
            "seconds": round(time.monotonic() - began, 2),
            "checkpoint_bytes": checkpoint_bytes,  # for preflight's output-size estimate
        }
    }


def _steps_to_first_update(model) -> int:
    """Steps that reach the first gradient update: one rollout on-policy; off-policy,
    learning_starts (lowered on this throwaway model) plus one train_freq period."""
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    n_envs = model.n_envs
    if isinstance(model, OnPolicyAlgorithm):
        return min(model.n_steps * n_envs, PROBE_MAX_STEPS)
    model.learning_starts = min(model.learning_starts, PROBE_LEARNING_STARTS)
    frequency = getattr(model.train_freq, "frequency", 1) or 1
    return min(model.learning_starts + (frequency + 1) * n_envs, PROBE_MAX_STEPS)


def _deadline(until: float):
    from stable_baselines3.common.callbacks import BaseCallback

    class StopAtDeadline(BaseCallback):
        def _on_step(self) -> bool:
            return time.monotonic() < until

    return StopAtDeadline()


def _fix(config, error: Exception) -> str:
    """The fix to name: for an unknown keyword, the section holding it and the closest
    argument the algorithm (or its policy) takes."""
    match = _UNEXPECTED_KEYWORD.search(str(error))
    if match is None:
        return "fix [run] algo, hyperparams or policy_kwargs (see stable-baselines3's docs)"
    key = match.group(1)
    if key in config.policy_kwargs:
        section, owner = "[run.policy_kwargs]", f"{config.algo}'s {config.policy}"
    else:
        section, owner = "[run.hyperparams]", config.algo
    close = difflib.get_close_matches(key, _accepted_arguments(config), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{section} {key} is not an argument of {owner}{hint}: rename or remove it"


def _accepted_arguments(config) -> list[str]:
    from kernel_template.train import ALGORITHM_CLASSES

    cls = ALGORITHM_CLASSES[config.algo]
    names = set(inspect.signature(cls.__init__).parameters)
    policy = getattr(cls, "policy_aliases", {}).get(config.policy)
    if policy is not None:
        names |= set(inspect.signature(policy.__init__).parameters)
    return sorted(names - {"self", "args", "kwargs"})


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    config = json.loads(args[0])
    if config.get("entrypoint"):
        print(json.dumps(probe_loop(config)), flush=True)
        return
    result = probe_env(config)
    if "env_error" not in result:
        result.update(probe_model(config))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
