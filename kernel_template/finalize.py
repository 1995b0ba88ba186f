"""The end of a session: final evaluation, session summary, artifacts.zip and its checksum.

Works whatever state the session died in: without a model (it failed before training),
with an evaluation that raises (the error goes into the summary), with no logger. The
zip and the summary are each written to a temp name and renamed, so a kill during
finalisation leaves the previous complete file or none, never a torn one.
"""

from __future__ import annotations

import os
import time
import traceback
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel_template import layout

if TYPE_CHECKING:
    from kernel_template.config import RunConfig
    from kernel_template.throttle import ThrottledLogger

# Already compressed (or big binary chunks where deflate buys little and costs time).
STORED_SUFFIXES = frozenset(
    {".zip", ".png", ".jpg", ".gz", ".npy", ".npz", ".pt", ".pth", ".bz2", ".xz"}
)
# A download the client has not finished (`.part`); our own temp names are `layout.is_temporary`.
PARTIAL_MARKER = ".part"
FINALIZE_TAG = "finalize"


def finalize_session(
    working_dir: str | Path,
    summary: layout.SessionSummary,
    model: Any,
    run_config: RunConfig | None,
    logger: ThrottledLogger | None,
    *,
    evaluate: bool = True,
) -> str:
    """Evaluate, write `session_summary.json`, then `artifacts.zip` + `.sha256`; returns the zip's sha256."""
    working_dir = Path(working_dir)
    paths = layout.SessionPaths(working_dir)
    started = time.monotonic()
    evaluation_s = 0.0
    if evaluate:
        summary.evaluation = _final_evaluation(working_dir, model, run_config, logger, summary)
        evaluation_s = time.monotonic() - started
        summary.wall.evaluation += evaluation_s
    _render_learning_curve(working_dir, logger, summary)
    if logger is not None:
        logger.report_suppressed()
        steps = summary.timesteps_end - summary.timesteps_start
        for key, value in logger.session_stats(steps if steps > 0 else None).items():
            setattr(summary, key, value)
    # The parts stay disjoint, and the total runs up to the summary's own writing.
    elapsed = time.monotonic() - started
    summary.wall.finalization += elapsed - evaluation_s
    summary.wall.total += elapsed
    layout.atomic_write_text(paths.summary, summary.model_dump_json(indent=2) + "\n")

    zip_path = write_artifacts_zip(working_dir)
    digest = layout.write_sha256sum(zip_path, paths.artifacts_sha256)
    if logger is not None:
        logger.event(
            "artifacts", sha256=digest, size=zip_path.stat().st_size, status=summary.status
        )
    return digest


def _final_evaluation(
    working_dir: Path,
    model: Any,
    run_config: RunConfig | None,
    logger: ThrottledLogger | None,
    summary,
) -> dict[str, Any]:
    """The agent against the baselines on fixed seeds; an error is recorded, never raised."""
    if run_config is None:
        return {"error": "no run config: the session failed before it had one"}
    try:
        from kernel_template import evaluation

        frame = evaluation.evaluate_against_baselines(model, run_config)
        csv_text = frame.to_csv(index=False)
        layout.atomic_write_text(layout.SessionPaths(working_dir).evaluation_csv, csv_text)
        result = evaluation.summarize(frame)
        render_evaluation_chart(working_dir, result)
        means = ", ".join(
            f"{name} {agg['mean_return']:.4g}" for name, agg in result["controllers"].items()
        )
        _log(logger, summary, f"final evaluation mean return: {means}", "info")
        return result
    except Exception as error:  # the zip must still be written
        message = f"{type(error).__name__}: {error}"
        _log(logger, summary, f"final evaluation failed: {message}", "error")
        return {"error": message, "traceback": traceback.format_exc(limit=5)}


def _render_learning_curve(working_dir: Path, logger: ThrottledLogger | None, summary) -> None:
    try:
        from kernel_template.exports import render_learning_curve

        render_learning_curve(working_dir)
    except Exception as error:  # a figure is never worth losing the artifacts over
        message = f"learning curve not rendered: {type(error).__name__}: {error}"
        _log(logger, summary, message, "warning")


def _log(logger: ThrottledLogger | None, summary, message: str, level: str) -> None:
    """A finalisation line at the session's last step (a session may end with no logger)."""
    if logger is not None:
        logger.log(FINALIZE_TAG, message, step=summary.timesteps_end, level=level)


def render_evaluation_chart(working_dir: Path, result: dict[str, Any]) -> Path:
    """Bar chart of mean return per controller (std as error bars), and mean queue when known."""
    from kernel_template.exports import _new_figure, figure_png

    controllers = result["controllers"]
    names = list(controllers)
    with_queue = [n for n in names if "mean_queue" in controllers[n]]
    figure = _new_figure((8, 4) if not with_queue else (11, 4))
    panels = 2 if with_queue else 1
    axes = figure.add_subplot(1, panels, 1)
    axes.bar(
        names,
        [controllers[n]["mean_return"] for n in names],
        yerr=[controllers[n]["std_return"] for n in names],
        capsize=4,
        color=["tab:blue" if n == "agent" else "tab:grey" for n in names],
    )
    axes.set_ylabel("mean episode return")
    axes.set_title(f"Final evaluation ({result['episodes']} episodes, fixed seeds)")
    axes.tick_params(axis="x", labelrotation=20)
    if with_queue:
        queue_axes = figure.add_subplot(1, 2, 2)
        queue_axes.bar(
            with_queue, [controllers[n]["mean_queue"] for n in with_queue], color="tab:orange"
        )
        queue_axes.set_ylabel("mean queue (vehicles)")
        queue_axes.tick_params(axis="x", labelrotation=20)
    target = layout.SessionPaths(working_dir).evaluation_png
    layout.atomic_write_bytes(target, figure_png(figure))
    return target


def artifact_files(working_dir: Path) -> list[Path]:
    """Every regular file to archive, relative, in sorted order (no zip, no sidecar, no temp
    files). Of the checkpoints only the newest goes in: older ones share its replay-buffer
    chunks, and a zip cannot store them once."""
    working_dir = Path(working_dir)
    paths = layout.SessionPaths(working_dir)
    excluded = {paths.artifacts_zip, paths.artifacts_sha256}
    newest = paths.newest_checkpoint()
    found = []
    for root, dirs, files in os.walk(working_dir):
        if Path(root) == paths.checkpoints:
            dirs[:] = [newest.name] if newest is not None else []
        dirs[:] = sorted(d for d in dirs if not layout.is_temporary(d))
        for name in files:
            path = Path(root, name)
            if path in excluded or layout.is_temporary(name) or PARTIAL_MARKER in name:
                continue
            if path.is_symlink() or not path.is_file():
                continue
            found.append(path.relative_to(working_dir))
    return sorted(found, key=lambda p: p.as_posix())


def write_artifacts_zip(working_dir: str | Path) -> Path:
    """Zip the working dir into `artifacts.zip` via a temp file and a rename."""
    working_dir = Path(working_dir)
    target = layout.SessionPaths(working_dir).artifacts_zip
    files = artifact_files(working_dir)
    with (
        layout.atomic_path(target) as temp,
        zipfile.ZipFile(temp, "w", allowZip64=True, strict_timestamps=False) as archive,
    ):
        for relative in files:
            stored = relative.suffix.lower() in STORED_SUFFIXES
            archive.write(
                working_dir / relative,
                arcname=relative.as_posix(),
                compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED,
            )
    return target
