"""A user loop's outputs have the SB3 run's shapes and continue across sessions:
metrics.csv rows, TensorBoard scalars without gaps or repeats, the summary, the zip."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pandas as pd

from kernel_template import layout
from kernel_template.config import RunConfig
from kernel_template.session import Session
from tests.support.kernel import local_runtime
from tests.support.loop import example_module

CONFIG = {
    "entrypoint": "regression:train",
    "total_timesteps": 300,
    "segment_timesteps": 150,
    "checkpoint_every": 100,
    "checkpoint_min_seconds": 0,
    "export_every": 50,
    "export_min_seconds": 0,
    "min_margin_s": 1,
    "device": "cpu",
}


def one_session(working: Path) -> layout.SessionSummary:
    runtime = local_runtime(working)
    session = Session(RunConfig.model_validate(CONFIG), runtime, stream=io.StringIO())
    session.setup()
    example_module().train(session)
    return session.finish()


def test_two_sessions_leave_one_continuous_record(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    working = tmp_path / "working"
    first, second = one_session(working), one_session(working)
    assert (first.status, first.timesteps_end) == ("budget_stop", 150)
    assert (second.status, second.timesteps_start, second.timesteps_end) == ("complete", 150, 300)
    assert second.resumed_from.manifest_sha256 == first.left_checkpoint.manifest_sha256
    assert (
        layout.sha256_file(working / layout.ARTIFACTS_ZIP)
        == ((working / layout.ARTIFACTS_SHA256).read_text().split()[0])
    )

    metrics = pd.read_csv(working / layout.METRICS_CSV)
    assert list(metrics.columns) == list(layout.METRICS_COLUMNS)
    assert list(metrics["step"]) == [50, 100, 150, 200, 250, 300]
    assert list(metrics["segment"]) == [0] * 6 and metrics["loss"].notna().all()

    events = EventAccumulator(str(working / layout.TENSORBOARD_DIR / "loop"))
    events.Reload()
    assert [s.step for s in events.Scalars("loss")] == [50, 100, 150, 200, 250, 300]
    assert {"loss", "lr"} <= set(events.Tags()["scalars"])


def test_sigterm_stops_the_loop_and_its_last_step_is_checkpointed(tmp_path) -> None:
    import os
    import signal

    def train(session: Session) -> None:
        for step in session.steps(0):
            if step == 120:
                os.kill(os.getpid(), signal.SIGTERM)  # as Kaggle's cancel does
            time.sleep(0.001)
        session.checkpoint(session.step, {"step": session.step})

    working = tmp_path / "working"
    runtime = local_runtime(working)
    config = RunConfig.model_validate({**CONFIG, "segment_timesteps": None})
    session = Session(config, runtime, stream=io.StringIO())
    session.setup()
    train(session)
    summary = session.finish()
    assert (summary.status, summary.reason) == ("signal_stop", "SIGTERM received")
    assert 120 <= summary.timesteps_end < config.total_timesteps
    assert summary.left_checkpoint.step == summary.timesteps_end == session.step
    assert signal.getsignal(signal.SIGTERM) != session.signals._handle  # handed back
