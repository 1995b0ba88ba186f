"""The chain report from pulled segment folders: stitched curve, timings, evaluation, HTML."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from kernel_template import layout
from kernel_template.layout import CheckpointRef
from orchestrator.chain.report import build_report, stitch_curve
from orchestrator.ledger import ChainRecord, Ledger, RunRecord
from tests.support.report_browser import assert_renders_in_chromium


def test_stitch_drops_rows_a_later_segment_trained_again() -> None:
    first = pd.DataFrame({"step": [250, 500, 750, 1000], "episode_reward": [1, 2, 3, 4]})
    # Killed after its checkpoint at 500: the next segment resumes at 500 and redoes 750+.
    second = pd.DataFrame(
        {"step": [250, 500, 750, 1000, 1250], "episode_reward": [1, 2, 30, 40, 50]}
    )
    curve = stitch_curve([(0, first), (500, second)])
    assert curve["step"].tolist() == [250, 500, 750, 1000, 1250]
    assert curve["episode_reward"].tolist() == [1, 2, 30, 40, 50]


def _segment_dir(root: Path, slug: str, steps: range, segment: int) -> Path:
    directory = root / "runs" / slug
    (directory / "metrics").mkdir(parents=True)
    rows = [
        {"step": s, "segment": segment, "episode_reward": -1000 + s / 10, "delay": 50 - s / 100}
        for s in steps
    ]
    pd.DataFrame(rows, columns=list(layout.METRICS_COLUMNS)).to_csv(
        directory / layout.METRICS_CSV, index=False
    )
    return directory


def _make_chain(project: Path, bounds=((0, 1000), (1000, 2000))) -> Ledger:
    ledger = Ledger(project)
    ledger.create_chain(
        ChainRecord(
            name="demo",
            owner="alice",
            run_config={},
            config_hash="c" * 64,
            total_timesteps=bounds[-1][1],
            segments=[end - start for start, end in bounds],
        )
    )
    for segment, (start, end) in enumerate(bounds, start=1):
        slug = f"demo-s{segment}"
        directory = _segment_dir(project, slug, range(start + 100, end + 1, 100), segment)
        ledger.record_intent(
            RunRecord(
                slug=slug,
                owner="alice",
                chain="demo",
                segment=segment,
                machine_shape="NvidiaTeslaT4",
            )
        )
        ledger.update(
            slug,
            state="pulled",
            kernel_status="COMPLETE",
            pulled_dir=str(directory),
            checkpoint=CheckpointRef(step=end, manifest_sha256=f"{segment}" * 64),
            artifacts_sha256="a" * 64,
            gpu_seconds=1800.0,
            summary={
                "status": "complete",
                "reason": "complete",
                "config_hash": "c" * 64,
                "total_timesteps": bounds[-1][1],
                "started_at": "2030-01-01T00:00:00Z",
                "ended_at": "2030-01-01T00:30:00Z",
                "session_limit_s": 43200,
                "timesteps_start": start,
                "timesteps_end": end,
                "steps_redone": 0,
                "wall": {
                    "setup": 5,
                    "training": 100,
                    "checkpointing": 3,
                    "evaluation": 4,
                    "exporting": 2,
                    "finalization": 1,
                },
            },
        )
    last = project / "runs" / f"demo-s{len(bounds)}" / "evaluation"
    last.mkdir()
    pd.DataFrame(
        [
            {
                "controller": c,
                "episode": e,
                "seed": 10000 + e,
                "return": r + e,
                "length": 240,
                "mean_queue": 3.0,
                "total_delay": 900.0,
            }
            for c, r in (("agent", -80), ("FixedTimeController", -115), ("ActuatedController", -90))
            for e in range(2)
        ]
    ).to_csv(last / "evaluation.csv", index=False)
    return ledger


def test_report_files_and_html(tmp_path: Path) -> None:
    ledger = _make_chain(tmp_path)
    report = build_report(ledger, "demo", tmp_path / "out")
    assert [p.name for p in report.images] == [
        "learning_curve.png",
        "segment_time.png",
        "evaluation.png",
    ]
    assert all(p.stat().st_size > 5000 for p in report.images)
    assert report.curve_points == 20
    assert report.gpu_hours == 1.0
    agent = next(row for row in report.evaluation if row["controller"] == "agent")
    assert agent["return"] == -79.5 and agent["episodes"] == 2
    html = report.html.read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "<link" not in html and "src='http" not in html
    assert "demo-s2" in html


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    report = build_report(_make_chain(tmp_path), "demo", tmp_path / "out")
    seen = assert_renders_in_chromium(
        report.html, images=3, tables=["segments", "evaluation"], tmp_path=tmp_path
    )
    assert seen["tables"]["segments"] == 2 and seen["tables"]["evaluation"] == 3
    assert seen["title"] == "Chain report: demo"


MARKER_RGB = (0x11, 0x44, 0x66)  # report.py draws points of short curves in #146


def _marker_pixels_near_centre(png: Path) -> int:
    """Pixels of the point colour in the middle of a one-panel curve, where matplotlib puts a
    lone point (the legend, bottom right, is outside this box)."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    cx, cy = image.width // 2, image.height // 2
    return sum(
        1
        for x in range(cx - 80, cx + 80)
        for y in range(cy - 50, cy + 50)
        if sum(abs(a - b) for a, b in zip(image.getpixel((x, y)), MARKER_RGB, strict=True)) < 40
    )


def test_a_segment_with_a_single_export_draws_a_visible_point(tmp_path: Path) -> None:
    ledger = _make_chain(tmp_path, bounds=[(0, 1000)])
    csv = tmp_path / "runs" / "demo-s1" / layout.METRICS_CSV
    frame = pd.read_csv(csv)
    frame[frame["step"] == 1000][["step", "segment", "episode_reward"]].to_csv(csv, index=False)
    report = build_report(ledger, "demo", tmp_path / "out")
    assert report.curve_points == 1 and report.complete
    assert _marker_pixels_near_centre(report.images[0]) > 20  # a dot, not blank axes


def test_an_older_ledgers_absolute_paths_still_work_after_the_project_moved(
    tmp_path: Path,
) -> None:
    old = tmp_path / "old-place"
    ledger = _make_chain(old)
    # What ledgers written before relative paths hold: absolute folders.
    document = json.loads(ledger.path.read_text())
    for record in document["runs"].values():
        record["pulled_dir"] = str(old / record["pulled_dir"])
    ledger.path.write_text(json.dumps(document))
    assert Path(Ledger(old).get("demo-s1").pulled_dir).is_absolute()

    moved = tmp_path / "new-place"
    shutil.move(old, moved)
    report = build_report(Ledger(moved), "demo", moved / "out")
    assert report.complete and report.curve_points == 20


def test_new_pulls_are_stored_relative_to_the_project(tmp_path: Path) -> None:
    ledger = _make_chain(tmp_path)
    assert ledger.get("demo-s1").pulled_dir == "runs/demo-s1"
    ledger.update("demo-s1", pulled_dir=str(tmp_path / "elsewhere" / ".." / "runs" / "demo-s1"))
    assert ledger.get("demo-s1").pulled_dir == "runs/demo-s1"
    outside = tmp_path.parent / "outside-the-project"
    ledger.update("demo-s2", pulled_dir=str(outside))
    assert ledger.get("demo-s2").pulled_dir == str(outside.resolve())


def test_a_segment_that_exported_nothing_is_not_missing(tmp_path: Path) -> None:
    ledger = _make_chain(tmp_path)
    csv = tmp_path / "runs" / "demo-s2" / layout.METRICS_CSV
    csv.write_text(csv.read_text().splitlines()[0] + "\n")  # the header only
    report = build_report(ledger, "demo", tmp_path / "out")
    assert report.complete and report.curve_points == 10


def test_missing_segment_is_named_shaded_and_listed(tmp_path: Path) -> None:
    ledger = _make_chain(tmp_path)
    shutil.rmtree(tmp_path / "runs" / "demo-s1")
    report = build_report(ledger, "demo", tmp_path / "out")  # no fetch: nothing pulled again
    assert not report.complete and report.curve_points == 10
    [line] = report.missing_lines()
    assert line.startswith("segment 1 (demo-s1, steps 0–1000): runs/demo-s1 is missing")
    assert report.to_json()["complete"] is False
    html = report.html.read_text()
    assert "Incomplete:" in html and "runs/demo-s1 is missing" in html
