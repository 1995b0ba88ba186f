"""Early stopping: `session.stop_early(reason)` ends the run on purpose, its last step
checkpointed, and the summary says so; leaving the loop without it stays an error."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import torch

from kernel_template import layout
from kernel_template.config import RunConfig
from kernel_template.session import USER_STATE_PT, Session
from tests.support.kernel import local_runtime

CONFIG = {
    "entrypoint": "unused:train",  # the tests call their loop themselves
    "total_timesteps": 300,
    "checkpoint_every": 50,
    "checkpoint_min_seconds": 0,
    "export_every": 50,
    "export_min_seconds": 0,
    "min_margin_s": 1,
    "device": "cpu",
    "logging": {"tensorboard": False},
}
STOP_AT = 70  # between two periodic checkpoints (50 and 100)


def run_loop(working: Path, loop: Callable[[Session], None]) -> layout.SessionSummary:
    runtime = local_runtime(working)
    session = Session(RunConfig.model_validate(CONFIG), runtime, stream=io.StringIO())
    session.setup()
    loop(session)
    return session.finish()


def counting_loop(*, stop: bool, leave: bool = True, final_checkpoint: bool = True):
    """A loop whose state is its step counter; at STOP_AT it stops early (or only breaks)."""

    def loop(session: Session) -> None:
        state = {"done": torch.zeros(())}
        for step in session.steps(0):
            state["done"] += 1
            if session.should_checkpoint(step):
                session.checkpoint(step, state)
            if step == STOP_AT:
                if stop:
                    session.stop_early("validation loss plateaued")
                if leave:
                    break
        if final_checkpoint:
            session.checkpoint(session.step, state)

    return loop


def test_stop_early_finishes_the_run_with_its_last_step_checkpointed(tmp_path) -> None:
    working = tmp_path / "working"
    summary = run_loop(working, counting_loop(stop=True))

    assert (summary.status, summary.reason) == ("complete", "validation loss plateaued")
    assert summary.stopped_early and summary.training_done
    assert summary.timesteps_end == summary.left_checkpoint.step == STOP_AT
    paths = layout.SessionPaths(working)
    manifest, _sha256, problems = layout.verify_checkpoint(paths.checkpoint(STOP_AT))
    assert manifest is not None and not problems and manifest.num_timesteps == STOP_AT
    state = torch.load(paths.checkpoint(STOP_AT) / USER_STATE_PT, weights_only=False)
    assert int(state["done"]) == STOP_AT  # nothing lost: the state after the last step
    on_disk = layout.SessionSummary.model_validate_json(paths.summary.read_text())
    assert on_disk.stopped_early and on_disk.reason == "validation loss plateaued"
    assert layout.sha256_file(paths.artifacts_zip) == paths.artifacts_sha256.read_text().split()[0]


def test_steps_yield_no_more_after_stop_early(tmp_path) -> None:
    summary = run_loop(tmp_path / "working", counting_loop(stop=True, leave=False))
    assert (summary.status, summary.timesteps_end) == ("complete", STOP_AT)
    assert summary.stopped_early


def test_a_plain_break_is_still_an_error_that_names_the_fix(tmp_path) -> None:
    summary = run_loop(tmp_path / "working", counting_loop(stop=False))
    assert summary.status == "error" and not summary.stopped_early
    assert summary.reason.startswith("the entrypoint returned before steps() ended")
    assert 'session.stop_early("why")' in summary.reason
    assert summary.timesteps_end == STOP_AT  # its work is kept for a retry all the same


def test_stop_early_without_the_last_checkpoint_is_an_error(tmp_path) -> None:
    summary = run_loop(tmp_path / "working", counting_loop(stop=True, final_checkpoint=False))
    assert summary.status == "error" and not summary.stopped_early
    assert summary.timesteps_end == 50
    assert "session.checkpoint(session.step, state)" in summary.reason


def test_summaries_written_before_stop_early_existed_still_load() -> None:
    old = {
        "status": "complete",
        "reason": "total_timesteps reached",
        "config_hash": "h",
        "total_timesteps": 300,
        "timesteps_start": 0,
        "timesteps_end": 300,
        "wall": {},
        "started_at": "2030-01-01T00:00:00Z",
        "ended_at": "2030-01-01T01:00:00Z",
        "session_limit_s": 43200,
    }
    summary = layout.SessionSummary.model_validate(old)
    assert summary.stopped_early is False and summary.training_done
