"""SIGKILL the torch-loop example at random moments, resume each time from what the killed
sessions left (mounted as Kaggle mounts kernel outputs), and end bit-identical to the same
loop run uninterrupted."""

from __future__ import annotations

import concurrent.futures
import json
import queue
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from kernel_template import layout
from tests.support.compare import assert_bit_identical
from tests.support.loop import (
    LOOP_CONFIG,
    newest_sound_step,
    resumed_step,
    run_loop_kernel,
    start_loop_kernel,
    training_end,
)

KILLS = 4
CONFIG = {
    **LOOP_CONFIG,
    "total_timesteps": 4000,
    "logging": {"tensorboard": False, "progress_every_s": 0.05, "progress_every_steps": 25},
}


def events_of(process) -> queue.Queue:
    """The kernel's `@@orchestrate` events as they are printed (None at the end)."""
    events: queue.Queue = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            event = layout.parse_event(line)
            if event is not None:
                events.put(event)
        events.put(None)

    threading.Thread(target=read, daemon=True).start()
    return events


def kill_after_a_new_checkpoint(process, newest: int, rng: random.Random) -> int:
    """SIGKILL at a random moment once the session has checkpointed past `newest`."""
    events = events_of(process)
    while True:
        event = events.get(timeout=120)
        assert event is not None, "the session ended before it was killed"
        if event["event"] == "checkpoint" and event["step"] > newest:
            break
    time.sleep(rng.uniform(0.0, 0.4))
    process.send_signal(signal.SIGKILL)
    return process.wait(timeout=60)


@pytest.mark.slow  # the fast tier stays under 4 minutes; make test runs it
def test_random_sigkills_then_resume_end_bit_identical(tmp_path: Path) -> None:
    rng = random.Random(20261130)
    inputs = tmp_path / "input"
    inputs.mkdir()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        alone = pool.submit(run_loop_kernel, CONFIG, tmp_path / "alone", tmp_path / "none")
        newest = 0
        for attempt in range(KILLS + 1):
            working = tmp_path / f"attempt-{attempt}"
            process = start_loop_kernel(CONFIG, working, inputs)
            if attempt < KILLS:
                assert kill_after_a_new_checkpoint(process, newest, rng) == -signal.SIGKILL
            else:
                output, _ = process.communicate(timeout=300)
                assert process.returncode == 0, output[-3000:]
            # Each session resumed from the newest checkpoint that verified in its inputs.
            assert resumed_step(working) == newest, working.name
            (inputs / working.name).symlink_to(working)
            later = newest_sound_step(inputs)
            assert later > newest, f"{working.name} left nothing newer than {newest}"
            newest = later
        alone.result()

    summary = json.loads((working / layout.SESSION_SUMMARY_JSON).read_text())
    assert summary["status"] == "complete" and summary["timesteps_end"] == CONFIG["total_timesteps"]
    name = layout.checkpoint_dir_name(CONFIG["total_timesteps"])
    killed = training_end(working / layout.CHECKPOINTS_DIR / name, CONFIG)
    uninterrupted = training_end(tmp_path / "alone" / layout.CHECKPOINTS_DIR / name, CONFIG)
    assert len(assert_bit_identical(killed, uninterrupted, "end")) > 20
