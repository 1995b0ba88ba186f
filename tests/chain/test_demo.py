"""`make demo` end to end, shortened: the emulator, a 3-segment chain, the report."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import REPO_ROOT


@pytest.mark.slow
def test_demo_runs_a_three_segment_chain_and_writes_the_report(tmp_path) -> None:
    out = tmp_path / "demo-output"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.demo",
            "--out",
            str(out),
            "--timesteps",
            "1500",
            "--poll-interval",
            "0.3",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert f"report (open in a browser):  {out / 'report' / 'report.html'}" in done.stdout
    html = (out / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert sorted(p.name for p in (out / "project" / "runs").iterdir()) == [
        "demo-traffic-s1",
        "demo-traffic-s2",
        "demo-traffic-s3",
    ]
