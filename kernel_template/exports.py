"""Intermediate exports: the metrics CSV, the learning-curve figure, the best model.

Each survives a kill at any moment: metrics rows are appended whole and fsynced (a torn
last line from an earlier kill is cut off when the file is reopened), the figure and the
best model are written to a temp file and renamed.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

from kernel_template import layout


class MetricsWriter:
    """Appends rows to `metrics/metrics.csv` with exactly `layout.METRICS_COLUMNS`.

    Steps stay monotonic across segments: a row whose step is not past the last one in
    the file (training redone after a resume) is skipped, so the file stays append-only.
    """

    def __init__(self, working_dir: str | Path) -> None:
        self.path = layout.SessionPaths(working_dir).metrics
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        self.last_step = self._read_last_step()
        self.rows_written = 0

    def append(self, row: dict[str, Any]) -> bool:
        """Write one row (missing columns stay empty). False when skipped as not past the last step."""
        import pandas as pd

        unknown = sorted(set(row) - set(layout.METRICS_COLUMNS))
        if unknown:
            raise ValueError(
                f"metrics row has unknown columns {unknown}; use only {list(layout.METRICS_COLUMNS)}"
            )
        step = row.get("step")
        if step is None:
            raise ValueError("metrics row needs a 'step'")
        if self.last_step is not None and int(step) <= self.last_step:
            return False
        new_file = not self.path.exists() or self.path.stat().st_size == 0
        text = pd.DataFrame([row], columns=list(layout.METRICS_COLUMNS)).to_csv(
            index=False, header=new_file
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = memoryview(text.encode())
            while data:
                data = data[os.write(fd, data) :]
            layout.fsync(fd)
        finally:
            os.close(fd)
        self.last_step = int(step)
        self.rows_written += 1
        return True

    def _drop_torn_tail(self) -> None:
        """Cut a last line without its newline (left by a kill mid-write in an older version)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
                handle.flush()
                layout.fsync(handle.fileno())

    def _read_last_step(self) -> int | None:
        if not self.path.exists():
            return None
        with open(self.path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4096))
            lines = handle.read().decode(errors="replace").splitlines()
        for line in reversed(lines):
            first = line.split(",", 1)[0].strip()
            if first and first != "step":
                try:
                    return int(float(first))
                except ValueError:
                    return None
        return None


def render_learning_curve(working_dir: str | Path) -> Path | None:
    """Episode reward against step with a rolling mean, segment starts marked; None without data."""
    import pandas as pd

    paths = layout.SessionPaths(working_dir)
    csv_path = paths.metrics
    if not csv_path.exists() or csv_path.stat().st_size == 0:
        return None
    frame = pd.read_csv(csv_path)
    rewards = frame[["step", "segment", "episode_reward"]].dropna(subset=["step", "episode_reward"])
    if rewards.empty:
        return None
    window = max(1, min(50, len(rewards) // 10))
    rolling = rewards["episode_reward"].rolling(window, min_periods=1).mean()

    figure = _new_figure((8, 4.5))
    axes = figure.add_subplot()
    axes.plot(
        rewards["step"],
        rewards["episode_reward"],
        ".",
        alpha=0.35,
        markersize=3,
        label="episode reward",
    )
    axes.plot(rewards["step"], rolling, linewidth=2, label=f"rolling mean ({window})")
    segments = frame[["step", "segment"]].dropna()
    starts = segments.loc[segments["segment"].ne(segments["segment"].shift()), "step"].iloc[1:]
    for index, step in enumerate(starts):
        axes.axvline(
            step,
            color="grey",
            linestyle="--",
            linewidth=1,
            label="segment start" if index == 0 else None,
        )
    axes.set_xlabel("step")
    axes.set_ylabel("episode reward")
    axes.set_title("Learning curve")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    target = paths.learning_curve
    layout.atomic_write_bytes(target, figure_png(figure))
    return target


def _new_figure(size: tuple[float, float]):
    # The object API with an Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100, layout="tight")
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


class BestModelTracker:
    """Keeps `models/best_model.zip` as the best-scoring model seen (saved atomically)."""

    def __init__(self, working_dir: str | Path) -> None:
        paths = layout.SessionPaths(working_dir)
        self.path = paths.best_model
        self.info_path = paths.best_model_info
        self.best_score: float | None = None
        self.best_step: int | None = None

    def consider(self, model, score: float) -> bool:
        """Save the model when `score` beats the best so far; True when it was saved."""
        if (
            score is None
            or math.isnan(score)
            or (self.best_score is not None and score <= self.best_score)
        ):
            return False
        buffer = io.BytesIO()
        model.save(buffer)
        layout.atomic_write_bytes(self.path, buffer.getvalue())
        self.best_score = float(score)
        self.best_step = int(getattr(model, "num_timesteps", 0))
        info = {
            "score": self.best_score,
            "num_timesteps": self.best_step,
            "saved_at": layout.utc_now_iso(),
        }
        layout.atomic_write_text(self.info_path, json.dumps(info, indent=2) + "\n")
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_step": self.best_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score = None if state.get("best_score") is None else float(state["best_score"])
        self.best_step = None if state.get("best_step") is None else int(state["best_step"])
