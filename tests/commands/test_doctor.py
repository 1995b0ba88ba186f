"""`orchestrate doctor --live`: production's code path, here against the faithful emulator."""

from __future__ import annotations

import json
import re

import pytest

from orchestrator.kaggle import Credentials, KaggleClient, RetryPolicy
from tests.support import REPO_ROOT
from tests.support.cli import clean_env, orchestrate

DOC = REPO_ROOT / "docs" / "kaggle-behaviour.md"
# The emulator runs kernels on this machine's Python and libraries, not on Kaggle's image:
# the only rows where it is allowed to differ from kaggle.com.
HOST_ROWS = {"python", "gymnasium"}


def doc_rows() -> set[str]:
    return set(re.findall(r"^\| `([a-z0-9-]+)`", DOC.read_text(), flags=re.MULTILINE))


def test_doctor_without_live_explains_itself(tmp_path):
    proc = orchestrate("doctor", cwd=tmp_path, env=clean_env())
    assert proc.returncode == 2
    assert "--live" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_doctor_live_against_the_faithful_emulator(emulator, tmp_path):
    report_path = tmp_path / "report.json"
    proc = orchestrate(
        "doctor",
        "--live",
        "--poll",
        "0.3",
        "--json",
        "--report",
        str(report_path),
        cwd=tmp_path,
        env=clean_env(emulator.env()),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report == json.loads(report_path.read_text())
    assert not report["problems"]
    rows = {o["row"]: o for o in report["observations"]}
    # Every observation names a row of the behaviour table.
    assert set(rows) <= doc_rows(), set(rows) - doc_rows()
    # The emulator is as harsh as the table says kaggle.com is, row by row.
    disagreeing = {row for row, o in rows.items() if o["verdict"] == "contradicts"}
    assert disagreeing <= HOST_ROWS, {r: rows[r] for r in disagreeing}
    unobserved = {row for row, o in rows.items() if o["verdict"] == "unobserved"}
    assert not unobserved, {r: rows[r] for r in unobserved}
    assert rows["reads-unknown-403"]["observed"] == "403"
    assert rows["crash-complete"]["observed"] == "COMPLETE"
    assert "/notebooks/" in rows["mounts"]["observed"]
    assert report["timings_s"]["probe_boot_s"] > 0
    sequence = [
        status for _, status in report["status_sequences"][next(iter(report["status_sequences"]))]
    ]
    assert sequence[0] == "DENIED_403" and sequence[-1] == "COMPLETE"
    # It deleted everything it made.
    assert report["made"] and sorted(report["deleted"]) == sorted(set(report["made"]))
    credentials = Credentials(username="alice", key=emulator.users["alice"], source="test")
    with KaggleClient(emulator.api_url, credentials, retry=RetryPolicy.fast()) as client:
        left = [
            k.slug for k in client.list_own_kernels() if k.slug.startswith("orchestrate-doctor")
        ]
    assert left == []
    # No key anywhere in what it wrote.
    assert emulator.users["alice"] not in report_path.read_text() + proc.stdout + proc.stderr
