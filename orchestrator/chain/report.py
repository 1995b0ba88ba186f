"""`chain report`: one picture of a whole chain, as PNGs and one self-contained HTML page.

* learning curve stitched across the segments' `metrics/metrics.csv`, boundaries marked;
* time per segment (setup, training, checkpointing, evaluation, exports, finalisation);
* GPU hours and steps redone per segment;
* the last segment's agent-vs-baselines evaluation (`evaluation/evaluation.csv`);
* what is missing: a segment whose outputs are gone locally is pulled again from Kaggle
  (`report_inputs`); one that cannot be is named, shaded on the curve and listed.

The HTML inlines its images as base64 data URIs and its CSS: no external resource, so it
opens anywhere, offline, and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kernel_template import layout
from orchestrator.chain import machine
from orchestrator.chain.report_inputs import Fetch, SegmentOutputs, locate_outputs
from orchestrator.errors import UserError
from orchestrator.ledger import ChainRecord, Ledger, RunRecord

CURVE_PNG = "learning_curve.png"
TIMING_PNG = "segment_time.png"
EVALUATION_PNG = "evaluation.png"
REPORT_HTML = "report.html"
WALL_PARTS = ("setup", "training", "checkpointing", "evaluation", "exporting", "finalization")


@dataclass
class SegmentFacts:
    segment: int
    slug: str
    kernel_status: str | None
    start: int | None
    end: int | None
    steps_redone: int
    gpu_hours: float
    wall: dict[str, float]
    checkpoint_hash: str | None
    verified: bool
    pulled_dir: Path | None
    missing: str | None = None  # why its outputs could not be read: folder and cause
    repulled: bool = False


@dataclass
class ChainReport:
    chain: str
    out_dir: Path
    html: Path
    images: list[Path]
    segments: list[SegmentFacts]
    curve_points: int
    gpu_hours: float
    steps_redone: int
    evaluation: list[dict[str, Any]] = field(default_factory=list)
    ended_early: str | None = None  # the loop's stop_early: which segment, where, why

    @property
    def missing(self) -> list[SegmentFacts]:
        return [s for s in self.segments if s.missing]

    @property
    def complete(self) -> bool:
        return not self.missing

    def missing_lines(self) -> list[str]:
        """One line per segment the report lacks: which, what steps, where, why."""
        return [
            f"segment {s.segment} ({s.slug}, steps {s.start}–{s.end}): {s.missing}"
            for s in self.missing
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "html": str(self.html),
            "images": [str(p) for p in self.images],
            "complete": self.complete,
            "missing": self.missing_lines(),
            "repulled": [s.slug for s in self.segments if s.repulled],
            "curve_points": self.curve_points,
            "gpu_hours": self.gpu_hours,
            "steps_redone": self.steps_redone,
            "evaluation": self.evaluation,
            "ended_early": self.ended_early,
            "segments": [
                {**s.__dict__, "pulled_dir": str(s.pulled_dir) if s.pulled_dir else None}
                for s in self.segments
            ],
        }


# -- data ------------------------------------------------------------------------------------


def pulled_segments(runs: list[RunRecord]) -> list[RunRecord]:
    """The pulled runs that carried the chain forward, in order (failed attempts left out)."""
    return [r for r in runs if r.state == "pulled" and machine.made_progress(runs, r)]


def segment_facts(outputs: SegmentOutputs) -> SegmentFacts:
    run = outputs.run
    summary, checkpoint = run.summary, run.checkpoint
    wall = summary.wall if summary else None
    return SegmentFacts(
        segment=run.segment or 0,
        slug=run.slug,
        kernel_status=run.kernel_status,
        start=summary.timesteps_start if summary else None,
        end=summary.timesteps_end if summary else (checkpoint.step if checkpoint else None),
        steps_redone=summary.steps_redone if summary else 0,
        gpu_hours=(run.gpu_seconds or 0.0) / 3600,
        wall={part: float(getattr(wall, part, 0.0) or 0.0) for part in WALL_PARTS},
        checkpoint_hash=checkpoint.manifest_sha256 if checkpoint else None,
        verified=run.artifacts_sha256 is not None,
        pulled_dir=outputs.dir,
        missing=outputs.missing,
        repulled=outputs.repulled,
    )


def read_metrics(directory: Path | None) -> pd.DataFrame | None:
    if directory is None:
        return None
    path = layout.SessionPaths(directory).metrics
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    return frame if "step" in frame.columns and len(frame) else None


def exported_nothing(directory: Path) -> bool:
    """metrics.csv holds its header only: the session ended before its first export."""
    try:
        frame = pd.read_csv(layout.SessionPaths(directory).metrics)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return False
    return "step" in frame.columns and not len(frame)


def stitch_curve(parts: list[tuple[int, pd.DataFrame]]) -> pd.DataFrame:
    """Rows of each segment after its start replace whatever earlier segments wrote past it.

    A segment killed after its last checkpoint wrote rows its successor trains again; those
    rows are dropped, and rows a segment copied forward from its parent are not doubled.
    """
    curve = pd.DataFrame()
    for start, frame in parts:
        kept = curve[curve["step"] <= start] if len(curve) else curve
        fresh = frame[frame["step"] > start]
        curve = (
            pd.concat([kept, fresh], ignore_index=True)
            if len(kept)
            else fresh.reset_index(drop=True)
        )
    return curve.sort_values("step", kind="stable").reset_index(drop=True) if len(curve) else curve


def read_evaluation(directory: Path | None) -> pd.DataFrame | None:
    if directory is None:
        return None
    path = layout.SessionPaths(directory).evaluation_csv
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    return frame if "controller" in frame.columns and len(frame) else None


def evaluation_table(frame: pd.DataFrame) -> pd.DataFrame:
    numeric = [c for c in frame.columns if c not in ("controller", "episode", "seed")]
    numeric = [c for c in numeric if pd.api.types.is_numeric_dtype(frame[c])]
    table = frame.groupby("controller", sort=False)[numeric].mean().round(3)
    table.insert(0, "episodes", frame.groupby("controller", sort=False).size())
    return table.reset_index()


# -- figures ---------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


FEW_POINTS = 50  # up to this many points a curve gets markers: one point draws no line


def plot_curve(
    curve: pd.DataFrame,
    boundaries: list[tuple[int, str]],
    out: Path,
    gaps: Sequence[tuple[int, int]] = (),
) -> Path:
    plt = _pyplot()
    panels = [
        c for c in ("episode_reward", "delay", "queue") if c in curve and curve[c].notna().any()
    ]
    panels = panels or [next(c for c in curve.columns if c != "step")]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, 2.8 * len(panels)), sharex=True, squeeze=False
    )
    for ax, column in zip(axes[:, 0], panels, strict=True):
        data = curve[["step", column]].dropna()
        few = len(data) <= FEW_POINTS
        ax.plot(
            data["step"],
            data[column],
            color="#9ab",
            linewidth=0.8,
            marker="o" if few else None,
            markersize=5,
            markerfacecolor="#146",
            markeredgewidth=0,
            label=column,
        )
        if len(data) >= 5:
            smooth = data[column].rolling(max(len(data) // 20, 3), min_periods=1).mean()
            ax.plot(data["step"], smooth, color="#146", linewidth=1.8, label="rolling mean")
        for first, last in gaps:
            ax.axvspan(first, last, color="#c33", alpha=0.12, linewidth=0)
        for step, label in boundaries:
            ax.axvline(step, color="#c33", linestyle="--", linewidth=1)
            ax.annotate(
                label,
                (step, 1),
                xycoords=("data", "axes fraction"),
                color="#c33",
                fontsize=8,
                ha="left",
                va="top",
                xytext=(2, -2),
                textcoords="offset points",
            )
        ax.set_ylabel(column.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[-1, 0].set_xlabel("timestep")
    title = "Learning curve across segments (dashed: segment boundaries)"
    if gaps:
        title += "\nshaded: steps whose metrics are missing"
    axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_timing(segments: list[SegmentFacts], out: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(segments) + 2.4))
    labels = [s.slug for s in segments]
    left = [0.0] * len(segments)
    colors = ("#888", "#2a7", "#d82", "#57c", "#b5b", "#c33")
    for part, color in zip(WALL_PARTS, colors, strict=True):
        values = [s.wall[part] for s in segments]
        ax.barh(labels, values, left=left, color=color, label=part)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title("Time per segment")
    ax.legend(
        fontsize=8,
        ncol=len(WALL_PARTS),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.3),
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_evaluation(table: pd.DataFrame, out: Path) -> Path:
    plt = _pyplot()
    metric = next(
        (c for c in ("return", "total_delay", "mean_queue") if c in table), table.columns[-1]
    )
    fig, ax = plt.subplots(figsize=(8, 3.6))
    colors = ["#146" if c == "agent" else "#9ab" for c in table["controller"]]
    ax.bar(table["controller"], table[metric], color=colors)
    ax.set_ylabel(f"mean {metric}")
    ax.set_title("Final evaluation: RL agent vs baselines")
    ax.tick_params(axis="x", labelrotation=20)  # controller names are long
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# -- the page --------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}th,td{padding:.3em .7em;border-bottom:1px solid #eee;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}code{font-size:.85em}
img{max-width:100%;display:block;margin:.8em 0}.alert{color:#a00}
"""


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _table(headers: list[str], rows: list[list[Any]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_html(chain: ChainRecord, report: ChainReport, evaluation: pd.DataFrame | None) -> str:
    done = max((s.end or 0 for s in report.segments), default=0)
    rows = [
        [
            s.segment,
            s.slug,
            s.kernel_status or "",
            f"{s.start}–{s.end}",
            s.steps_redone,
            f"{sum(s.wall.values()):.1f}",
            f"{s.gpu_hours:.3f}",
            (s.checkpoint_hash or "")[:16],
            "yes" if s.verified else "checkpoints only",
        ]
        for s in report.segments
    ]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Chain report: {html.escape(chain.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Chain <code>{html.escape(chain.name)}</code></h1>",
        f"<p>State <b>{html.escape(chain.state)}</b>: {done} of {chain.total_timesteps} timesteps in "
        f"{len(report.segments)} segment(s); {report.gpu_hours:.3f} GPU hours; {report.steps_redone} steps redone; "
        f"config hash <code>{chain.config_hash[:16]}</code>.</p>",
    ]
    if report.ended_early:
        parts.append(f"<p>{html.escape(report.ended_early)}</p>")
    if report.missing:
        parts.append(
            f"<p class='alert'><b>Incomplete:</b> the outputs of {len(report.missing)} segment(s) "
            "could not be read; see <a href='#missing'>Missing</a>.</p>"
        )
    sections = {
        CURVE_PNG: "Learning curve",
        TIMING_PNG: "Time per segment",
        EVALUATION_PNG: "Evaluation",
    }
    for image in report.images:
        parts.append(f"<h2>{sections.get(image.name, image.stem)}</h2>")
        parts.append(
            f"<img alt='{html.escape(sections.get(image.name, image.stem))}' src='{_data_uri(image)}'>"
        )
        if image.name == EVALUATION_PNG and evaluation is not None:
            parts.append(_table(list(evaluation.columns), evaluation.values.tolist(), "evaluation"))
    parts.append("<h2>Segments</h2>")
    parts.append(
        _table(
            [
                "seg",
                "slug",
                "status",
                "steps",
                "redone",
                "wall s",
                "GPU h",
                "checkpoint",
                "verified zip",
            ],
            rows,
            "segments",
        )
    )
    if report.missing:
        parts.append("<h2>Missing</h2><ul id='missing'>")
        parts += [f"<li class='alert'>{html.escape(line)}</li>" for line in report.missing_lines()]
        parts.append("</ul>")
    alerts = [n for n in chain.notes if n.level == "alert"]
    if alerts:
        parts.append("<h2>Alerts</h2><ul>")
        parts += [
            f"<li class='alert'>{html.escape(n.time)}: {html.escape(n.message)}</li>"
            for n in alerts
        ]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(
    ledger: Ledger, name: str, out_dir: Path, *, fetch: Fetch | None = None
) -> ChainReport:
    """The report from each pulled segment's outputs; `fetch` pulls missing ones again (None:
    only name them)."""
    chain = ledger.get_chain(name)
    if chain is None:
        raise UserError(f"no chain {name!r} in {ledger.path}; see `orchestrate chain status`")
    all_runs = ledger.runs(name)
    segments_runs = pulled_segments(all_runs)
    if not segments_runs:
        raise UserError(
            f"chain {name} has no pulled segment yet; run `orchestrate chain step {name}` first"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    segments = [segment_facts(o) for o in locate_outputs(ledger, segments_runs, fetch)]

    parts, boundaries, gaps = [], [], []
    for facts in segments:
        frame = read_metrics(facts.pulled_dir)
        start = facts.start or 0
        if facts.segment > 1:
            boundaries.append((start, f"s{facts.segment}"))
        if frame is not None:
            parts.append((start, frame))
            continue
        if not facts.missing and exported_nothing(facts.pulled_dir):
            continue
        if facts.end is not None:
            gaps.append((start, facts.end))
        if not facts.missing:  # the folder is there, its metrics.csv does not parse
            where = ledger.project_relative(layout.SessionPaths(facts.pulled_dir).metrics)
            facts.missing = f"{where} is unreadable"
    images = []
    curve = stitch_curve(parts) if parts else pd.DataFrame()
    if len(curve):
        images.append(plot_curve(curve, boundaries, out_dir / CURVE_PNG, gaps))
        curve.to_csv(out_dir / "learning_curve.csv", index=False)
    images.append(plot_timing(segments, out_dir / TIMING_PNG))
    evaluation_frame = read_evaluation(segments[-1].pulled_dir)
    evaluation = evaluation_table(evaluation_frame) if evaluation_frame is not None else None
    if evaluation is not None:
        images.append(plot_evaluation(evaluation, out_dir / EVALUATION_PNG))

    report = ChainReport(
        chain=name,
        out_dir=out_dir,
        html=out_dir / REPORT_HTML,
        images=images,
        segments=segments,
        curve_points=len(curve),
        gpu_hours=sum(r.gpu_seconds or 0.0 for r in all_runs) / 3600,  # failed attempts cost too
        steps_redone=sum(s.steps_redone for s in segments),
        evaluation=json.loads(evaluation.to_json(orient="records"))
        if evaluation is not None
        else [],
        ended_early=_early_end_line(chain, all_runs),
    )
    layout.atomic_write_text(report.html, render_html(chain, report, evaluation))
    return report


def _early_end_line(chain: ChainRecord, runs: list[RunRecord]) -> str | None:
    early = machine.early_end(chain, runs)
    if early is None:
        return None
    line = machine.early_end_line(early)
    return line[:1].upper() + line[1:]
