"""`chain status` and `chain cancel`: what the ledger knows about a chain, as JSON or a table."""

from __future__ import annotations

import sys
from typing import Any

from orchestrator.chain import machine
from orchestrator.chain.states import ChainState
from orchestrator.errors import UserError
from orchestrator.ledger import Ledger, RunRecord


def segment_row(run: RunRecord) -> dict[str, Any]:
    summary, checkpoint = run.summary, run.checkpoint
    return {
        "segment": run.segment,
        "attempt": run.attempt,
        "slug": run.slug,
        "ref": run.ref,
        "state": run.state,
        "kernel_status": run.kernel_status,
        "timesteps_start": summary.timesteps_start if summary else None,
        "timesteps_end": summary.timesteps_end if summary else None,
        "checkpoint_step": checkpoint.step if checkpoint else None,
        "checkpoint_hash": checkpoint.manifest_sha256 if checkpoint else None,
        "artifacts_sha256": run.artifacts_sha256,
        "gpu_hours": round(run.gpu_seconds / 3600, 4) if run.gpu_seconds else 0.0,
        "pushed_at": run.pushed_at,
        "pulled_dir": run.pulled_dir,
        "failure_message": run.failure_message,
        "docker_image": summary.versions.get("docker_image") if summary else None,
    }


def chain_status(ledger: Ledger, name: str) -> dict[str, Any]:
    chain = ledger.get_chain(name)
    if chain is None:
        raise UserError(f"no chain {name!r} in {ledger.path}; see `orchestrate chain status`")
    runs = ledger.runs(name)
    start = machine.start_point(runs, start=chain.start_from)
    early = machine.early_end(chain, runs)
    return {
        "name": chain.name,
        "owner": chain.owner,
        "state": chain.state,
        "config_hash": chain.config_hash,
        "total_timesteps": chain.total_timesteps,
        "planned_segments": chain.segments,
        "timesteps_done": start.step if start else 0,
        "gpu_hours": round(sum(r.gpu_seconds or 0 for r in runs) / 3600, 4),
        "wait_until": chain.wait_until,
        "waiting_reason": chain.waiting_reason,
        "ended_early": {
            "slug": early.slug,
            "step": early.summary.timesteps_end,
            "reason": early.summary.reason,
        }
        if early
        else None,
        "consecutive_unknowns": chain.consecutive_unknowns,
        "docker_image": chain.docker_image,
        "reference_versions": chain.reference_versions,
        "reference_run": chain.reference_run,
        "alerts": [n.model_dump() for n in chain.notes if n.level == "alert"],
        "notes": [n.model_dump() for n in chain.notes[-10:]],
        "segments": [segment_row(r) for r in runs],
    }


def print_status(status: dict[str, Any], file=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout, highlight=False, soft_wrap=True)
    if not console.is_terminal:  # plain lines for pipes and logs: do not squeeze to 80 columns
        console.width = 160
    done, total = status["timesteps_done"], status["total_timesteps"]
    console.print(
        f"chain {status['name']}: {status['state']}, {done}/{total} timesteps "
        f"({100 * done / total:.0f}%), {status['gpu_hours']:.3f} GPU h, config {status['config_hash'][:12]}",
        markup=False,
    )
    if status.get("docker_image"):
        console.print(f"image: {status['docker_image']} (every later segment)", markup=False)
    early = status.get("ended_early")
    if early:
        console.print(
            f"ended early by {early['slug']} at step {early['step']}: {early['reason']}",
            markup=False,
        )
    if status["waiting_reason"] and not ChainState(status["state"]).finished:
        console.print(f"waiting: {status['waiting_reason']}", markup=False)
    table = Table(show_edge=False)
    for column in (
        "seg",
        "slug",
        "state",
        "kernel status",
        "steps",
        "verified checkpoint",
        "GPU h",
    ):
        table.add_column(column)
    for row in status["segments"]:
        start, end = row["timesteps_start"], row["timesteps_end"]
        steps = (
            f"{start}→{end}"
            if start is not None and end is not None
            else str(row["checkpoint_step"] or "")
        )
        table.add_row(
            str(row["segment"]),
            row["slug"],
            row["state"],
            row["kernel_status"] or "",
            steps,
            (row["checkpoint_hash"] or "")[:16],
            f"{row['gpu_hours']:.3f}",
        )
    console.print(table)
    for alert in status["alerts"][-3:]:
        console.print(f"ALERT {alert['time']}: {alert['message']}", markup=False)


def cancel_chain(ledger: Ledger, name: str) -> str:
    with ledger.locked():
        chain = ledger.get_chain(name)
        if chain is None:
            raise UserError(f"no chain {name!r} in {ledger.path}; see `orchestrate chain status`")
        if chain.state.finished:
            return f"chain {name} is already {chain.state}"
        running = [r for r in ledger.runs(name) if r.state in ("intent", *machine.ACTIVE_STATES)]
        chain.state = ChainState.CANCELLED
        chain.note("cancelled by the user: no further segment will be pushed")
        ledger.save_chain(chain)
    message = f"chain {name} cancelled: no further segment will be pushed."
    if running:
        ref = running[-1].ref
        message += (
            f" Kaggle has no usable cancel, so {ref} runs on until it ends (and uses its GPU time);"
            " once it has, the next `orchestrate chain step` (of any chain, or"
            f" `orchestrate chain step {name}`) records that and keeps its outputs in runs/"
        )
    return message
