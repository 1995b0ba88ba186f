"""The one kernel runner: real `python -m kernel_template` sessions, and what they leave."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from kernel_template import layout
from kernel_template.checkpoint import read_policy_tensors, read_replay_buffer
from kernel_template.config import RunConfig
from kernel_template.runtime import RuntimeEnvironment
from tests.support import REPO_ROOT

# `python -m KILLPOINTS`: the kernel with test-only kill hooks (see that module).
KILLPOINTS = "tests.support.killpoints"


# Tiny, fast configs: small nets, small buffers, evaluation of one episode, few exports.
# Each kernel process costs ~4 s of imports and setup (torch, and torch._dynamo pulled in by
# the first optimizer), so tests keep both processes and steps few.
DQN_CONFIG: dict[str, Any] = {
    "algo": "DQN",
    "env": "CartPole-v1",
    "policy_kwargs": {"net_arch": [32, 32]},
    "hyperparams": {
        "buffer_size": 500,  # smaller than the run: the buffer wraps around
        "learning_starts": 100,
        "train_freq": 4,
        "target_update_interval": 100,
        "batch_size": 32,
    },
    "total_timesteps": 1600,
    "checkpoint_every": 200,
    "checkpoint_min_seconds": 0,
    "export_every": 800,
    "export_min_seconds": 0,
    "session_limit_s": 600,
    "min_margin_s": 1,
    "evaluation": {"best_model_episodes": 1, "final_episodes": 1},
    "logging": {"tensorboard": False},
}

PPO_CONFIG: dict[str, Any] = {
    **DQN_CONFIG,
    "algo": "PPO",
    "n_envs": 2,
    "hyperparams": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
    "total_timesteps": 1024,
    "export_every": 512,
}

SAC_CONFIG: dict[str, Any] = {
    **DQN_CONFIG,
    "algo": "SAC",
    "env": "Pendulum-v1",
    "hyperparams": {"buffer_size": 250, "learning_starts": 100, "batch_size": 32},
    "total_timesteps": 400,
    "checkpoint_every": 100,
    "export_every": 400,
}


def config_with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(base))
    data.update(changes)
    return data


def kernel_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)  # the checkout, and tests.support for test-only envs
    env.pop(layout.WORKING_DIR_ENV, None)
    env.pop(layout.INPUT_DIR_ENV, None)
    env.update(extra or {})
    return env


def start_kernel(
    config: dict[str, Any] | RunConfig,
    working: Path,
    input_dir: Path,
    *,
    module: str = "kernel_template",
    **popen: Any,
) -> subprocess.Popen:
    """Start `python -m kernel_template` as Kaggle would, in a fresh process (`module`: a
    wrapper such as KILLPOINTS that runs it)."""
    working.mkdir(parents=True, exist_ok=True)
    config_path = working.parent / f"{working.name}.run.json"
    if isinstance(config, RunConfig):
        config_path.write_text(config.model_dump_json())
    else:
        config_path.write_text(json.dumps(config))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            "--config",
            str(config_path),
            "--working",
            str(working),
            "--input",
            str(input_dir),
        ],
        cwd=working,
        env=kernel_env(popen.pop("extra_env", None)),
        stdout=popen.pop("stdout", subprocess.PIPE),
        stderr=popen.pop("stderr", subprocess.STDOUT),
        text=True,
        **popen,
    )


def run_kernel(
    config: dict[str, Any] | RunConfig, working: Path, input_dir: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """One kernel session to its end; stdout holds its stdout and stderr."""
    process = start_kernel(config, working, input_dir)
    output, _ = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root with its sha256: proves a read-only input was left untouched."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def newest_checkpoint(working: Path) -> Path:
    dirs = sorted(p for p in (working / layout.CHECKPOINTS_DIR).iterdir() if p.name.isdigit())
    return dirs[-1]


def summary_of(working: Path) -> layout.SessionSummary:
    return layout.SessionSummary.model_validate_json(
        (working / layout.SESSION_SUMMARY_JSON).read_text()
    )


def training_result(checkpoint_dir: Path) -> dict[str, Any]:
    """Weights, optimizer state and replay buffer stored in a checkpoint."""
    return {
        "tensors": read_policy_tensors(checkpoint_dir),
        "buffer": read_replay_buffer(checkpoint_dir),
    }


def mount_as_parent(input_dir: Path, parent_working: Path, slug: str, owner: str = "alice"):
    """Mount a finished segment's outputs as Kaggle mounts a kernel source (a symlink, so the
    parent's files stay checkable), and return the `parent` ref naming the checkpoint it left."""
    mount = input_dir / "notebooks" / owner / slug
    mount.parent.mkdir(parents=True, exist_ok=True)
    mount.symlink_to(parent_working, target_is_directory=True)
    left = summary_of(parent_working).left_checkpoint
    assert left is not None, f"{parent_working} left no checkpoint"
    return {
        "owner": owner,
        "slug": slug,
        "step": left.step,
        "manifest_sha256": left.manifest_sha256,
    }


BARE_SCRIPT = """
import json, sys, numpy as np, torch
from kernel_template.config import RunConfig
from kernel_template.train import bare_learn
model = bare_learn(RunConfig.model_validate(json.loads(sys.argv[1])))
out = {"policy": model.policy.state_dict(), "optimizer": model.policy.optimizer.state_dict()}
buffer = getattr(model, "replay_buffer", None)
if buffer is not None:
    from kernel_template.checkpoint import buffer_arrays
    rows = model.num_timesteps // buffer.n_envs
    order = np.arange(max(0, rows - buffer.buffer_size), rows) % buffer.buffer_size
    out["buffer"] = {k: v[order] for k, v in buffer_arrays(buffer).items()}
out["episodes"] = model._episode_num
torch.save(out, sys.argv[2])
"""


def run_bare(base: dict, root) -> dict:
    """Plain SB3 `learn(total)` in a fresh process: the runtime must not change the result."""
    out = root / "bare.pt"
    subprocess.run(
        [sys.executable, "-c", BARE_SCRIPT, json.dumps(base), str(out)],
        check=True,
        env=kernel_env(),
        timeout=300,
    )
    return torch.load(out, weights_only=False)


def local_runtime(working: Path, session_limit_s: float = 600) -> RuntimeEnvironment:
    """An in-process session starting now in `working`, with nothing mounted to resume from."""
    return RuntimeEnvironment(
        working_dir=working,
        input_dir=working.parent / "no-input",
        session_limit_s=session_limit_s,
        session_start=time.time(),
    )


def tiny_cartpole_dqn(seed: int, learning_starts: int):
    """An untrained DQN with a 16-unit net and a 1000-row buffer on CartPole: quick to train."""
    from stable_baselines3 import DQN

    from kernel_template.envs import make_env

    return DQN(
        "MlpPolicy",
        make_env("CartPole-v1", {}, seed),
        learning_starts=learning_starts,
        buffer_size=1000,
        policy_kwargs={"net_arch": [16]},
        seed=seed,
    )


def run_chain(base: dict, segments: list[int], root: Path, inspect_parent=None):
    """Segments as fresh processes, numbered from 1 as a chain does; each later one names its
    parent's checkpoint and reads only its parent's output, mounted as Kaggle mounts it
    (checked untouched). `inspect_parent(parent_working_dir)` may check what each later
    segment resumes from. Returns the last segment's working dir and every summary."""
    parent = root / "no-input"
    parent.mkdir()
    summaries = []
    for index, length in enumerate([*segments, None], start=1):
        working = root / f"segment-{index}"
        config = config_with(base, segment_index=index, segment_timesteps=length)
        input_dir = parent
        if index > 1:
            input_dir = root / f"input-{index}"
            config["parent"] = mount_as_parent(input_dir, parent, f"seg-{index - 1}")
            if inspect_parent is not None:
                inspect_parent(parent)
        before = tree_digest(parent)
        result = run_kernel(config, working, input_dir)
        assert result.returncode == 0, result.stdout[-3000:]
        assert tree_digest(parent) == before, "a segment modified its parent's outputs"
        summaries.append(summary_of(working))
        if index > 1:
            assert summaries[-1].resumed_from.manifest_sha256 == config["parent"]["manifest_sha256"]
        parent = working
    return parent, summaries
