"""Helpers for the launch-side CLI tests: a tiny project, and the `orchestrate` command run for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ORCHESTRATE = [sys.executable, "-m", "orchestrator"]
REPO_ROOT = Path(__file__).resolve().parents[2]

# A training that finishes in seconds: a few hundred steps, a small net, one evaluation episode.
TINY_TOML = """\
[kaggle]
{kaggle}

[kernel]
slug = "{slug}"
title = "{title}"
accelerator = "{accelerator}"
{kernel_extra}

[run]
algo = "DQN"
env = "{env}"
total_timesteps = {steps}
session_limit_s = 600
checkpoint_every = 200
checkpoint_min_seconds = 1
export_every = 300
export_min_seconds = 1
{run_extra}

[run.hyperparams]
learning_starts = 100
buffer_size = 5000

[run.policy_kwargs]
net_arch = [32, 32]

[run.evaluation]
final_episodes = 1
best_model_episodes = 1
"""


def write_project(
    directory: Path,
    *,
    slug: str = "tiny-dqn",
    title: str = "Tiny Dqn",
    accelerator: str = "none",
    env: str = "traffic-signal",
    steps: int = 600,
    kaggle: str = "",
    kernel_extra: str = "",
    run_extra: str = "",
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "orchestrate.toml"
    path.write_text(
        TINY_TOML.format(
            slug=slug,
            title=title,
            accelerator=accelerator,
            env=env,
            steps=steps,
            kaggle=kaggle,
            kernel_extra=kernel_extra,
            run_extra=run_extra,
        )
    )
    return path


def clean_env(extra: dict[str, str] | None = None, *, home: Path | None = None) -> dict[str, str]:
    """os.environ without any Kaggle credentials (HOME moved so ~/.kaggle is not found)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KAGGLE_") and k != "ORCHESTRATE_KAGGLE_API"
    }
    if home is not None:
        env["HOME"] = str(home)
        env["XDG_CONFIG_HOME"] = str(home / ".config")
    env.update(extra or {})
    if env.get("KAGGLE_API_TOKEN") == "":  # the emulator's env() blanks it; unset reads cleaner
        del env["KAGGLE_API_TOKEN"]
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def orchestrate(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*ORCHESTRATE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def files_under(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def run_main(
    monkeypatch, capsys, *args: str, cwd: Path, env: dict[str, str]
) -> tuple[int, str, str]:
    """`orchestrate ARGS` in this process (faster than a subprocess): (exit code, stdout, stderr)."""
    from orchestrator.cli import main

    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name == "ORCHESTRATE_KAGGLE_API":
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err
