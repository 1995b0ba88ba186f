"""Helpers for the chain tests: a project folder with an orchestrate.toml for a real emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.emulator.testing import EmulatorHandle
from orchestrator.ledger import Ledger
from orchestrator.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]

# A tiny real training: traffic env, DQN, a 16-unit net, ~1 s of training per 1000 steps.
TINY_RUN = """
[run]
algo = "DQN"
env = "traffic-signal"
seed = 7
total_timesteps = {total}
checkpoint_every = {checkpoint_every}
checkpoint_min_seconds = 0
export_every = 250
export_min_seconds = 0
keep_checkpoints = 2
session_limit_s = {session_limit_s}
min_margin_s = 1
device = "cpu"

[run.hyperparams]
buffer_size = 2000
learning_starts = 200
train_freq = 4
target_update_interval = 250
batch_size = 32

[run.policy_kwargs]
net_arch = [16]

[run.logging]
tensorboard = false
progress_every_s = 0.5
progress_every_steps = 200

[run.evaluation]
best_model_episodes = 1
final_episodes = 1
"""


def project_toml(
    api_url: str,
    *,
    slug: str = "tiny-chain",
    accelerator: str = "none",
    total: int = 3000,
    checkpoint_every: int = 250,
    session_limit_s: float = 600,
    gpu_session_cap: int = 2,
) -> str:
    head = f"""
[kaggle]
owner = "alice"
api_url = "{api_url}"
gpu_session_cap = {gpu_session_cap}

[kernel]
slug = "{slug}"
accelerator = "{accelerator}"
enable_internet = false
"""
    return head + TINY_RUN.format(
        total=total, checkpoint_every=checkpoint_every, session_limit_s=session_limit_s
    )


@dataclass
class ChainProject:
    dir: Path
    emulator: EmulatorHandle

    @property
    def settings(self) -> Settings:
        return load_settings(self.dir / "orchestrate.toml")

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.dir)

    def client(self, *, fast_retries: bool = False):
        from orchestrator.kaggle import KaggleClient, RetryPolicy

        retry = RetryPolicy.fast() if fast_retries else None
        return KaggleClient(self.emulator.api_url, retry=retry)

    def env(self) -> dict[str, str]:
        env = self.emulator.subprocess_env("alice")
        env["PYTHONPATH"] = str(REPO_ROOT)
        return env

    def cli(
        self,
        *args: str,
        timeout: float = 300,
        check: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """`orchestrate ...` in a subprocess, in the project folder."""
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=self.dir,
            env={**self.env(), **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"orchestrate {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
            )
        return proc

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=self.dir,
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **kwargs,
        )


def kernel_processes_left(emulator: EmulatorHandle) -> list[int]:
    """Pids of the emulator's kernels still alive (none should be after a chain ends)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if (
                str(emulator.root / "kernels").encode() in cmdline
            ):  # a kernel script, not the server
                found.append(int(pid))
    return found


def assert_bit_identical(a: Any, b: Any, where: str) -> list[str]:
    """Bitwise equality of nested dicts/lists of tensors, arrays and plain values; returns the
    dotted name of every leaf compared."""
    import torch

    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        return [leaf for k in a for leaf in assert_bit_identical(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        return [
            leaf
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for leaf in assert_bit_identical(x, y, f"{where}[{i}]")
        ]
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, f"{where}: types differ"
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, f"{where}: types differ"
        assert np.array_equal(a, b), f"{where}: arrays differ"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
    return [where]
