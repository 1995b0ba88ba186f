"""Intermediate exports: metrics CSV, learning-curve PNG, best model."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from kernel_template import layout
from kernel_template.exports import BestModelTracker, MetricsWriter, render_learning_curve
from tests.support.kernel import local_runtime

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def metrics_rows(first_step, last_step, every, segment):
    return [
        {
            "step": s,
            "segment": segment,
            "wall_time": s / 100,
            "episodes": s // 20,
            "episode_reward": (s % 97) / 2,
            "loss": 0.5,
        }
        for s in range(first_step, last_step + 1, every)
    ]


def test_metrics_csv_has_exactly_the_layout_columns(tmp_path):
    writer = MetricsWriter(tmp_path)
    for row in metrics_rows(100, 500, 100, 0):
        assert writer.append(row)
    frame = pd.read_csv(tmp_path / layout.METRICS_CSV)
    assert tuple(frame.columns) == layout.METRICS_COLUMNS
    assert frame["step"].tolist() == [100, 200, 300, 400, 500]
    assert frame["queue"].isna().all()  # unknown values are empty cells
    assert frame["episode_reward"].tolist() == [(s % 97) / 2 for s in range(100, 501, 100)]


def test_appending_across_segments_keeps_steps_monotonic(tmp_path):
    first = MetricsWriter(tmp_path)
    for row in metrics_rows(100, 1000, 100, 0):
        first.append(row)
    # The next segment resumed from a checkpoint at step 700 and redoes 800..1000.
    second = MetricsWriter(tmp_path)
    assert second.last_step == 1000
    results = [second.append(row) for row in metrics_rows(800, 1500, 100, 1)]
    assert results == [False, False, False, True, True, True, True, True]
    frame = pd.read_csv(tmp_path / layout.METRICS_CSV)
    assert frame["step"].is_monotonic_increasing and frame["step"].is_unique
    assert frame["step"].tolist() == list(range(100, 1501, 100))
    assert frame["segment"].tolist() == [0] * 10 + [1] * 5
    assert (tmp_path / layout.METRICS_CSV).read_text().count("step,segment") == 1  # one header


def test_a_torn_last_row_is_dropped_on_reopen(tmp_path):
    writer = MetricsWriter(tmp_path)
    writer.append({"step": 1, "segment": 0})
    path = tmp_path / layout.METRICS_CSV
    path.write_bytes(path.read_bytes() + b"2,0,12.5,3")  # a kill mid-row
    again = MetricsWriter(tmp_path)
    assert again.last_step == 1
    again.append({"step": 3, "segment": 0})
    assert pd.read_csv(path)["step"].tolist() == [1, 3]


def test_unknown_metrics_column_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown columns \\['reward'\\]"):
        MetricsWriter(tmp_path).append({"step": 1, "reward": 2.0})


def test_learning_curve_is_a_png(tmp_path):
    writer = MetricsWriter(tmp_path)
    for row in metrics_rows(10, 2000, 10, 0) + metrics_rows(2010, 4000, 10, 1):
        writer.append(row)
    target = render_learning_curve(tmp_path)
    assert target == tmp_path / layout.LEARNING_CURVE_PNG
    data = target.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert not [
        p for p in target.parent.iterdir() if p.name != "learning_curve.png"
    ]  # no temp file left


def test_learning_curve_without_data_renders_nothing(tmp_path):
    assert render_learning_curve(tmp_path) is None
    MetricsWriter(tmp_path).append({"step": 5, "segment": 0})  # no reward yet
    assert render_learning_curve(tmp_path) is None
    assert not (tmp_path / layout.LEARNING_CURVE_PNG).exists()


def test_best_model_is_only_replaced_on_improvement(tmp_path, tiny_model):
    from stable_baselines3 import DQN

    tracker = BestModelTracker(tmp_path)
    path = tmp_path / layout.BEST_MODEL_ZIP
    assert tracker.consider(tiny_model, 10.0)
    saved = path.read_bytes()
    assert DQN.load(path).num_timesteps == tiny_model.num_timesteps
    assert not tracker.consider(tiny_model, 9.0)
    assert not tracker.consider(tiny_model, 10.0)
    assert not tracker.consider(tiny_model, float("nan"))
    assert path.read_bytes() == saved
    mtime = path.stat().st_mtime_ns
    assert tracker.consider(tiny_model, 12.5)
    assert path.stat().st_mtime_ns >= mtime
    assert tracker.best_score == 12.5

    resumed = BestModelTracker(tmp_path)
    resumed.load_state_dict(tracker.state_dict())
    assert not resumed.consider(tiny_model, 12.0)
    assert resumed.consider(tiny_model, 13.0)


@pytest.mark.bench
def test_bench_render_and_metrics_costs(tmp_path, bench_record):
    """Targets: a metrics row (fsynced) <= 20 ms; the learning curve of 2000 rows <= 1 s, i.e.
    <= 1/30 of the default `export_min_seconds` (DESIGN: 0.1-0.3 s per PNG)."""
    writer = MetricsWriter(tmp_path)
    rows = metrics_rows(10, 20_000, 10, 0)
    started = time.perf_counter()
    for row in rows:
        writer.append(row)
    per_row = (time.perf_counter() - started) / len(rows)
    render_learning_curve(tmp_path)  # warm the imports and font cache
    started = time.perf_counter()
    for _ in range(3):
        render_learning_curve(tmp_path)
    render = (time.perf_counter() - started) / 3
    checks = [
        bench_record(
            "metrics_row_append_ms",
            per_row * 1000,
            unit=" ms",
            target="<= 20 ms (fsync included)",
            met=per_row <= 0.020,
        ),
        bench_record(
            "learning_curve_render_2000_rows_s",
            render,
            unit=" s",
            target="<= 1 s",
            met=render <= 1.0,
        ),
    ]
    assert all(checks)


def _session_renders(tmp_path, monkeypatch, figure_every_s: float) -> tuple[int, int, float]:
    """A short default-env session exporting every 500 steps; returns (exports, learning-curve
    renders during training, the PNG's mtime minus the end of training)."""
    import io

    from kernel_template import exports, train
    from kernel_template.config import RunConfig

    renders = []
    real_render = exports.render_learning_curve

    def counted_render(working_dir):
        drawn = real_render(working_dir)
        renders.append(drawn)
        return drawn

    monkeypatch.setattr(exports, "render_learning_curve", counted_render)
    monkeypatch.setattr(train, "FIGURE_EVERY_S", figure_every_s)
    config = RunConfig.model_validate(
        {"total_timesteps": 3000, "export_every": 500, "export_min_seconds": 0}
    )
    working = tmp_path / "working"
    runtime = local_runtime(working, session_limit_s=3600)
    log = io.StringIO()
    session = train.TrainingSession(config, runtime, stream=log)
    session.setup()
    session.budget.max_chunk_s = 0.05  # chunk boundaries (where exports happen) every 500 steps
    session.train()
    trained_at = time.time()
    drawn_in_training = sum(1 for drawn in renders if drawn is not None)
    assert session.finish().status == "complete"
    exported = sum(
        1
        for line in log.getvalue().splitlines()
        if (layout.parse_event(line) or {}).get("event") == "export"
    )
    curve = layout.SessionPaths(working).learning_curve
    return exported, drawn_in_training, curve.stat().st_mtime - trained_at


def test_the_learning_curve_waits_an_interval_and_is_drawn_at_the_end(
    tmp_path, monkeypatch, one_torch_thread
):
    exported, drawn, drawn_after_training_s = _session_renders(tmp_path, monkeypatch, 600.0)
    assert exported >= 4
    assert drawn == 0  # the first is due one interval into the session
    assert drawn_after_training_s >= 0  # the session's end draws the whole run


def test_the_learning_curve_interval_is_what_skips_the_renders(
    tmp_path, monkeypatch, one_torch_thread
):
    exported, drawn, _ = _session_renders(tmp_path, monkeypatch, 0.0)
    assert drawn >= exported - 1  # every export draws once an episode has ended
