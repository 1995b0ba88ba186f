"""`orchestrate runs` on a terminal: the slug and the creation time stay whole on 80 columns."""

from __future__ import annotations

import io

from rich.console import Console

from orchestrator.ledger import RunRecord
from orchestrator.runs import print_runs


def table_on_80_columns(**fields) -> list[str]:
    """The lines `orchestrate runs` prints for one long-named chain run on an 80-column terminal."""
    record = RunRecord(
        slug="qa-training-run-quick",
        owner="alice",
        state="pulled",
        kernel_status="CANCEL_ACKNOWLEDGED",
        version=1,
        chain="a-long-chain-name",
        segment=12,
        attempt=1,
        **fields,
    )
    out = io.StringIO()
    print_runs([record], Console(file=out, width=80, force_terminal=True, color_system=None))
    return out.getvalue().splitlines()


def test_an_80_column_terminal_shows_whole_slugs():
    row = table_on_80_columns()[-1]
    assert "qa-training-run-quick" in row and "pulled" in row
    assert row.split()[2:4] == ["12", "1"]  # segment and attempt


def test_runs_on_80_columns_shows_slug_and_time_whole():
    lines = table_on_80_columns(created_at="2026-03-04T05:06:07.123Z")
    assert all(len(line) <= 80 for line in lines)
    assert "created (UTC)" in lines[0]
    assert "qa-training-run-quick" in lines[-1] and lines[-1].rstrip().endswith("2026-03-04 05:06")
