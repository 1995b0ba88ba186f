"""`chain report` where the pulled outputs are not where the ledger saw them: a copy of the
project elsewhere without `runs/` (a CI runner's fresh checkout), against the real emulator."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.support.project import ChainProject

CHAIN = "report-chain"


@pytest.mark.slow
def test_report_on_a_fresh_checkout_pulls_missing_segments_again(
    emulator, chain_project, tmp_path
) -> None:
    project = chain_project(emulator, total=1000)
    assert project.cli("chain", "start", CHAIN, "--segments", "500,500").returncode == 0
    run = project.cli("chain", "run", CHAIN, "--no-follow", "--poll-interval", "0.3")
    assert run.returncode == 0, run.stderr[-2000:]
    at_home = project.cli("chain", "report", CHAIN, "--json")
    assert at_home.returncode == 0, at_home.stderr
    full = json.loads(at_home.stdout)
    assert full["complete"] and full["repulled"] == [] and full["curve_points"] >= 2

    # The project somewhere else, without runs/: the ledger's paths must still lead home.
    checkout = ChainProject(tmp_path / "checkout", emulator)
    shutil.copytree(project.dir, checkout.dir, ignore=shutil.ignore_patterns("runs", "reports"))
    again = checkout.cli("chain", "report", CHAIN, "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["complete"], report["missing"]
    assert report["repulled"] == [f"{CHAIN}-s1", f"{CHAIN}-s2"]
    assert report["curve_points"] == full["curve_points"]
    assert report["html"].startswith(str(checkout.dir))
    assert "warning" not in again.stderr

    # What cannot be pulled again is named, on stderr and in the page, and the report is made.
    shutil.rmtree(checkout.dir / "runs" / f"{CHAIN}-s1")
    offline = checkout.cli("chain", "report", CHAIN, "--no-pull")
    assert offline.returncode == 0, offline.stderr
    assert (
        f"warning: chain {CHAIN} report is incomplete: segment 1 ({CHAIN}-s1, steps 0–500): "
        f"runs/{CHAIN}-s1 is missing; not pulled again (--no-pull)"
    ) in offline.stderr
    html = (checkout.dir / "reports" / CHAIN / "report.html").read_text()
    assert "Incomplete:" in html and f"runs/{CHAIN}-s1 is missing" in html

    emulator.set_faults("GetKernelSessionStatus=400")  # Kaggle will not serve it now
    refused = checkout.cli("chain", "report", CHAIN, "--json")
    assert refused.returncode == 0, refused.stderr
    [line] = json.loads(refused.stdout)["missing"]
    assert f"runs/{CHAIN}-s1 is missing, and pulling alice/{CHAIN}-s1 again failed:" in line
    assert "HTTP 400" in line and line in refused.stderr
