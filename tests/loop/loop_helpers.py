"""Helpers for the user-loop tests: run the torch-loop example's kernels, compare their ends."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kernel_template import layout
from kernel_template.session import USER_STATE_PT

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = REPO_ROOT / "examples" / "torch-loop"

# Small and fast: a few seconds of CPU training per session.
LOOP_CONFIG: dict[str, Any] = {
    "entrypoint": "regression:train",
    "seed": 3,
    "total_timesteps": 600,
    "checkpoint_every": 50,
    "checkpoint_min_seconds": 0,
    "export_every": 100,
    "export_min_seconds": 0,
    "session_limit_s": 600,
    "min_margin_s": 1,
    "device": "cpu",
    "params": {"samples": 200, "batch_size": 16},  # 13 batches an epoch, the last one short
    "logging": {"tensorboard": False},
}


def loop_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(EXAMPLE_DIR)])
    env.pop(layout.WORKING_DIR_ENV, None)
    env.pop(layout.INPUT_DIR_ENV, None)
    return env


def start_loop_kernel(config: dict[str, Any], working: Path, input_dir: Path) -> subprocess.Popen:
    """`python -m kernel_template` on a user-loop config, in a fresh process as on Kaggle."""
    working.mkdir(parents=True, exist_ok=True)
    input_dir.mkdir(parents=True, exist_ok=True)
    config_path = working.parent / f"{working.name}.run.json"
    config_path.write_text(json.dumps(config))
    return subprocess.Popen(
        [sys.executable, "-m", "kernel_template", "--config", str(config_path)]
        + ["--working", str(working), "--input", str(input_dir)],
        cwd=working,
        env=loop_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_loop_kernel(config: dict[str, Any], working: Path, input_dir: Path) -> str:
    process = start_loop_kernel(config, working, input_dir)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return output


def training_end(checkpoint_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint holds (weights, optimizer, scheduler, loader position, RNG streams)
    and the next batch its loader draws."""
    import regression

    state = torch.load(checkpoint_dir / USER_STATE_PT, weights_only=False)
    rng = pickle.loads((checkpoint_dir / "rng.pkl").read_bytes())
    *_, loader, _ = regression.build(config["params"], config["seed"], config["total_timesteps"])
    loader.load_state_dict(state["loader"])
    return {"state": state, "rng": rng, "next_batch": loader.next_batch()}


def assert_bit_identical(a: Any, b: Any, where: str = "") -> int:
    """Bitwise equality of nested dicts, lists and tuples of tensors, arrays and plain
    values; returns how many leaves were compared."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        return sum(assert_bit_identical(a[k], b[k], f"{where}.{k}") for k in a)
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        return sum(
            assert_bit_identical(x, y, f"{where}[{i}]")
            for i, (x, y) in enumerate(zip(a, b, strict=True))
        )
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, f"{where}: types differ"
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, f"{where}: types differ"
        assert np.array_equal(a, b), f"{where}: arrays differ"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
    return 1


def newest_sound_step(input_dir: Path) -> int:
    """The newest checkpoint in the mounted outputs that verifies (what a resume must pick)."""
    best = 0
    for manifest_path in input_dir.glob(f"*/{layout.CHECKPOINTS_DIR}/*/{layout.MANIFEST_NAME}"):
        directory = manifest_path.parent
        if not directory.name.isdigit():  # a temp dir: never committed
            continue
        try:
            manifest = layout.CheckpointManifest.model_validate_json(manifest_path.read_text())
        except ValueError:
            continue
        if not manifest.problems(directory):
            best = max(best, manifest.num_timesteps)
    return best


def resumed_step(working: Path) -> int:
    """The step a session resumed from, from its own log (0 when it started fresh)."""
    for line in (working / layout.EVENTS_JSONL).read_text().splitlines():
        record = json.loads(line)
        if record.get("tag") == "resume":
            return int(record["step"])
    return 0
