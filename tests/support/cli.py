"""The `orchestrate` command run for real: in a subprocess, or in this process (`run_main`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT

ORCHESTRATE = [sys.executable, "-m", "orchestrator"]


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
    from orchestrator.commands import main

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


def emulator_cli_env(emulator, tmp_path: Path, user: str = "alice", **extra: str) -> dict[str, str]:
    """The env of an `orchestrate` subprocess that talks to `emulator` as `user`, with a HOME
    of its own under tmp_path (so no ~/.kaggle is read)."""
    return clean_env({**emulator.env(user), **extra}, home=tmp_path / "home")
