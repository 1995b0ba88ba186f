"""Test-only seam: `python -m tests.support.killpoints <kernel_template args>` runs the
kernel unchanged, with two optional hooks installed from the environment. Nothing in `kernel_template` knows
about it; the hooks sit on the standard library and SB3, so a rewrite of the checkpoint
writer or the finaliser keeps them working as long as commits stay rename-based.

KILLPOINT_AT=commit:N     SIGKILL this process inside the N-th checkpoint commit, after the
                          temp dir's MANIFEST.json is written and before the rename that makes
                          the checkpoint exist (`checkpoints/.tmp-*` -> `checkpoints/<step>`).
KILLPOINT_PAUSE_S=S       with KILLPOINT_AT, sleep S seconds at the point before the kill (a slow
                          disk: training goes on meanwhile, as it would during a slow fsync).
KILLPOINT_AT=finalize     SIGKILL during finalisation: after `session_summary.json` is written,
                          before `artifacts.zip` is renamed into place.
KILLPOINT_STEP_FILE=PATH  the model's num_timesteps, rewritten in place (8 bytes, pwrite) at
                          every env step, so a test can read how far a SIGKILLed session got.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import time
from pathlib import Path

CHECKPOINTS_DIR = "checkpoints"
MANIFEST_NAME = "MANIFEST.json"
ARTIFACTS_ZIP = "artifacts.zip"


def read_step_file(path: Path) -> int | None:
    data = Path(path).read_bytes() if Path(path).exists() else b""
    return struct.unpack("<q", data[:8])[0] if len(data) >= 8 else None


def _die() -> None:
    time.sleep(float(os.environ.get("KILLPOINT_PAUSE_S") or 0))
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(spec: str) -> None:
    kind, _, count = spec.partition(":")
    wanted = int(count or 1)
    seen = 0

    def is_commit(src: Path, dst: Path) -> bool:
        return (
            dst.parent.name == CHECKPOINTS_DIR
            and dst.name.isdigit()
            and src.name.startswith(".tmp-")
            and (src / MANIFEST_NAME).is_file()
        )

    def is_final_zip(src: Path, dst: Path) -> bool:
        return dst.name == ARTIFACTS_ZIP

    predicate = {"commit": is_commit, "finalize": is_final_zip}[kind]

    def wrap(original):
        def renamed(src, dst, *args, **kwargs):
            nonlocal seen
            if predicate(Path(os.fsdecode(src)), Path(os.fsdecode(dst))):
                seen += 1
                if seen == wanted:
                    _die()
            return original(src, dst, *args, **kwargs)

        return renamed

    os.rename = wrap(os.rename)
    os.replace = wrap(os.replace)


def _install_step_gauge(path: str) -> None:
    from stable_baselines3.common.base_class import BaseAlgorithm

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    original = BaseAlgorithm._update_current_progress_remaining

    def update(self, num_timesteps, total_timesteps):
        # Off-policy algorithms call this once per env step, right after counting the step.
        os.pwrite(fd, struct.pack("<q", int(self.num_timesteps)), 0)
        return original(self, num_timesteps, total_timesteps)

    BaseAlgorithm._update_current_progress_remaining = update


def main(argv: list[str]) -> int:
    if os.environ.get("KILLPOINT_AT"):
        _install_kill(os.environ["KILLPOINT_AT"])
    if os.environ.get("KILLPOINT_STEP_FILE"):
        _install_step_gauge(os.environ["KILLPOINT_STEP_FILE"])
    from kernel_template.__main__ import main as kernel_main

    return kernel_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
