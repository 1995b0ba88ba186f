"""The chain report from pulled segment folders: stitched curve, timings, evaluation, HTML."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from report_browser import assert_renders_in_chromium

from kernel_template import layout
from orchestrator.chain.report import build_report, stitch_curve
from orchestrator.ledger import ChainRecord, Ledger, RunRecord


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


def _make_chain(project: Path) -> Ledger:
    ledger = Ledger(project)
    ledger.create_chain(
        ChainRecord(
            name="demo",
            owner="alice",
            run_config={},
            config_hash="c" * 64,
            total_timesteps=2000,
            segments=[1000, 1000],
        )
    )
    for segment, (start, end) in enumerate([(0, 1000), (1000, 2000)], start=1):
        slug = f"demo-s{segment}"
        directory = _segment_dir(project, slug, range(start + 100, end + 1, 100), segment)
        ledger.record_intent(
            RunRecord(
                run=slug,
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
            checkpoint_hash=f"{segment}" * 64,
            checkpoint_step=end,
            artifacts_sha256="a" * 64,
            gpu_seconds=1800.0,
            summary={
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
    last = project / "runs" / "demo-s2" / "evaluation"
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
