"""Several chains at a glance: `chain list` (one line each) and the table that ends a sweep."""

from __future__ import annotations

import re
from typing import Any

from orchestrator.chain import machine
from orchestrator.ledger import Ledger, RunRecord

AGENT = "agent"  # the trained policy's row in the kernel's final evaluation


def final_evaluation(runs: list[RunRecord]) -> float | None:
    """The trained agent's mean return in the final evaluation of the newest pulled run."""
    for run in sorted(runs, key=lambda r: (r.segment or 0, r.attempt), reverse=True):
        if run.state != "pulled":
            continue
        evaluation = (run.summary.evaluation if run.summary else None) or {}
        controllers = evaluation.get("controllers") or {}
        agent = controllers.get(AGENT) or {}
        if agent.get("mean_return") is not None:
            return float(agent["mean_return"])
    return None


def chain_overview(ledger: Ledger, name: str) -> dict[str, Any] | None:
    """One chain's state, progress, segments, GPU hours and final evaluation."""
    chain = ledger.get_chain(name)
    if chain is None:
        return None
    runs = ledger.runs(name)
    start = machine.start_point(runs)
    done = start.step if start else 0
    pulled = {r.segment for r in runs if r.state == "pulled" and machine.made_progress(runs, r)}
    return {
        "name": chain.name,
        "state": chain.state,
        "timesteps_done": done,
        "total_timesteps": chain.total_timesteps,
        "segments_done": len(pulled),
        "segments_planned": len(chain.segments),
        "gpu_hours": round(sum(r.gpu_seconds or 0 for r in runs) / 3600, 4),
        "final_evaluation": final_evaluation(runs),
        "waiting_reason": chain.waiting_reason if not chain.state.finished else None,
        "updated_at": chain.updated_at,
    }


def list_chains(ledger: Ledger) -> list[dict[str, Any]]:
    return [row for c in ledger.chains() if (row := chain_overview(ledger, c.name)) is not None]


def describe_chain(row: dict[str, Any]) -> str:
    """`chain list`'s line: name, state, steps, segments, GPU hours, and why it waits."""
    done, total = row["timesteps_done"], row["total_timesteps"]
    line = (
        f"{row['name']}  {row['state']}  {done}/{total} steps ({100 * done / total:.0f}%)  "
        f"segments {row['segments_done']}/{row['segments_planned']}  "
        f"{row['gpu_hours']:.2f} GPU h"
    )
    if row["final_evaluation"] is not None:
        line += f"  eval {row['final_evaluation']:.4g}"
    if row["waiting_reason"]:
        line += f"  ({row['waiting_reason']})"
    return line


SWEEP_COLUMNS = ("chain", "state", "final evaluation", "steps", "GPU h")


def sweep_table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The sweep's comparison, best final evaluation first (chains without one last)."""
    ordered = sorted(
        rows,
        key=lambda r: (r["final_evaluation"] is None, -(r["final_evaluation"] or 0.0)),
    )
    return [
        [
            r["name"],
            r["state"],
            "-" if r["final_evaluation"] is None else f"{r['final_evaluation']:.4g}",
            f"{r['timesteps_done']}/{r['total_timesteps']}",
            f"{r['gpu_hours']:.3f}",
        ]
        for r in ordered
    ]


def print_sweep_table(rows: list[dict[str, Any]], console) -> None:
    """A table on a terminal; tab-separated lines with a header otherwise."""
    table_rows = sweep_table_rows(rows)
    if not console.is_terminal:
        for row in [list(SWEEP_COLUMNS), *table_rows]:  # rich would expand the tabs
            console.file.write("\t".join(row) + "\n")
        return
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in SWEEP_COLUMNS:
        table.add_column(
            column, no_wrap=True, justify="left" if column in ("chain", "state") else "right"
        )
    for row in table_rows:
        table.add_row(*row)
    console.print(table)


class ChangedResults:
    """Prints a chain's step result only when it differs from the last one printed for it
    (numbers aside: "pushed 3 s ago" is no news after "pushed 2 s ago"): a sweep polling six
    waiting chains says each reason once, not six lines per poll."""

    def __init__(self, show) -> None:
        self.show = show
        self.last: dict[str, tuple[str, str]] = {}

    def __call__(self, result) -> None:
        key = (result.outcome, re.sub(r"\d+", "#", result.message))
        if self.last.get(result.chain) != key:
            self.last[result.chain] = key
            self.show(result)
