"""`orchestrate runs` on a terminal: the slug stays whole on 80 columns."""

from __future__ import annotations

import io

from rich.console import Console

from orchestrator.ledger import RunRecord
from orchestrator.runs import print_runs


def test_an_80_column_terminal_shows_whole_slugs():
    records = [
        RunRecord(
            slug="qa-training-run-quick",
            owner="alice",
            state="pulled",
            kernel_status="CANCEL_ACKNOWLEDGED",
            version=1,
            chain="a-long-chain-name",
            segment=12,
            attempt=1,
        )
    ]
    out = io.StringIO()
    print_runs(records, Console(file=out, width=80, force_terminal=True, color_system=None))
    row = out.getvalue().splitlines()[-1]
    assert "qa-training-run-quick" in row and "pulled" in row
    assert row.split()[2:4] == ["12", "1"]  # segment and attempt
