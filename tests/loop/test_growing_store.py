"""A `GrowingStore` tracked by the session: checkpointed incrementally (the replay buffer's
chunk files and merges), refilled on resume, bit-identical to an uninterrupted run, with a
bounded number of files per checkpoint and a per-checkpoint cost that does not grow with
the store."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from kernel_template import layout
from kernel_template.checkpoint import BUFFER_DIR
from kernel_template.config import RunConfig
from kernel_template.growing import GrowingStore
from kernel_template.session import Session
from tests.support.kernel import local_runtime
from tests.support.loop import LOOP_SESSION

CAPACITY = 4000  # rows; the run appends 6000, so the store wraps
ROWS_PER_STEP = 20
ROW_BYTES = 4 * 3 + 4
CONFIG = {
    **LOOP_SESSION,
    "entrypoint": "unused:here",
    "total_timesteps": 300,
    "checkpoint_every": 3,
}


def rollouts(session: Session) -> GrowingStore:
    """A loop whose state is mostly a growing store of rows drawn from the numpy RNG."""
    store = GrowingStore(CAPACITY, obs=((3,), np.float32), reward=((), np.float32))
    session.track(store)
    state = session.resume()
    for step in session.steps(state["step"] if state else 0):
        obs = np.random.standard_normal((ROWS_PER_STEP, 3)).astype(np.float32)
        store.append(obs=obs, reward=obs.sum(axis=1))
        if session.should_checkpoint(step):
            session.checkpoint(step, {"step": step})
    session.checkpoint(session.step, {"step": session.step})
    return store


def run(working: Path, **changes) -> GrowingStore:
    config = RunConfig.model_validate({**CONFIG, **changes})
    runtime = local_runtime(working)
    session = Session(config, runtime, stream=io.StringIO())
    session.setup()
    store = rollouts(session)
    assert session.finish().status in ("complete", "budget_stop")
    return store


def checkpoint_bytes(working: Path) -> list[int]:
    lines = (working / layout.EVENTS_JSONL).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r["fields"]["bytes"] for r in records if r.get("message") == "checkpoint"]


def test_a_tracked_store_resumes_bit_identical_with_flat_checkpoints(tmp_path) -> None:
    alone = run(tmp_path / "alone")
    resumed = tmp_path / "resumed"  # three sessions continuing one another in one output dir
    for _ in range(3):
        store = run(resumed, segment_timesteps=100)
    assert store.rows_total == alone.rows_total == CONFIG["total_timesteps"] * ROWS_PER_STEP
    for name, column in alone.rows().items():
        assert np.array_equal(store.rows()[name], column), name

    for directory in (resumed / layout.CHECKPOINTS_DIR).iterdir():
        chunk_files = list((directory / BUFFER_DIR).glob("chunk-*.npz"))
        assert 0 < len(chunk_files) <= 32, (directory.name, len(chunk_files))
    # Each checkpoint writes the rows added since the last (merges aside), not the store: the
    # late checkpoints, with a full store, cost what the early ones did with a few rows.
    written = checkpoint_bytes(resumed)
    assert len(written) >= 90
    early, late = np.median(written[3:33]), np.median(written[-30:])
    assert late < 1.5 * early, (early, late, CAPACITY * ROW_BYTES)
