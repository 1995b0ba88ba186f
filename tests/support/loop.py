"""The user-loop tests' kernel: the torch-loop example run as Kaggle would, and what its
checkpoints hold."""

from __future__ import annotations

import importlib.util
import json
import pickle
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from kernel_template import layout
from kernel_template.session import USER_STATE_PT
from tests.support.kernel import REPO_ROOT, start_kernel

EXAMPLE_DIR = REPO_ROOT / "examples" / "torch-loop"
LOOP_PYTHONPATH = f"{REPO_ROOT}:{EXAMPLE_DIR}"


def example_module() -> ModuleType:
    """The example's `regression` module, loaded from its file (no sys.path change)."""
    spec = importlib.util.spec_from_file_location("regression", EXAMPLE_DIR / "regression.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Small and fast: a few seconds of CPU training per session.
# Checkpoints and exports as often as asked, a 10-minute CPU session, no TensorBoard.
LOOP_SESSION: dict[str, Any] = {
    "checkpoint_min_seconds": 0,
    "export_every": 100,
    "export_min_seconds": 0,
    "session_limit_s": 600,
    "min_margin_s": 1,
    "device": "cpu",
    "logging": {"tensorboard": False},
}
LOOP_CONFIG: dict[str, Any] = {
    **LOOP_SESSION,
    "entrypoint": "regression:train",
    "seed": 3,
    "total_timesteps": 600,
    "checkpoint_every": 50,
    "params": {"samples": 200, "batch_size": 16},  # 13 batches an epoch, the last one short
}


def start_loop_kernel(config: dict[str, Any], working: Path, input_dir: Path) -> subprocess.Popen:
    """`python -m kernel_template` on a user-loop config, the example's module importable."""
    input_dir.mkdir(parents=True, exist_ok=True)
    return start_kernel(config, working, input_dir, extra_env={"PYTHONPATH": LOOP_PYTHONPATH})


def run_loop_kernel(config: dict[str, Any], working: Path, input_dir: Path) -> str:
    process = start_loop_kernel(config, working, input_dir)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return output


def training_end(checkpoint_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint holds (weights, optimizer, scheduler, loader position, RNG streams)
    and the next batch its loader draws."""
    regression = example_module()
    state = torch.load(checkpoint_dir / USER_STATE_PT, weights_only=False)
    rng = pickle.loads((checkpoint_dir / "rng.pkl").read_bytes())
    *_, loader, _ = regression.build(config["params"], config["seed"], config["total_timesteps"])
    loader.load_state_dict(state["loader"])
    return {"state": state, "rng": rng, "next_batch": loader.next_batch()}


def newest_sound_step(input_dir: Path) -> int:
    """The newest checkpoint in the mounted outputs that verifies (what a resume must pick)."""
    best = 0
    for output_dir in input_dir.iterdir():
        for directory in layout.SessionPaths(output_dir).checkpoint_dirs():
            manifest, _sha256, problems = layout.verify_checkpoint(directory)
            if manifest is not None and not problems:
                best = max(best, manifest.num_timesteps)
    return best


def resumed_step(working: Path) -> int:
    """The step a session resumed from, from its own log (0 when it started fresh)."""
    for line in (working / layout.EVENTS_JSONL).read_text().splitlines():
        record = json.loads(line)
        if record.get("tag") == "resume":
            return int(record["step"])
    return 0
