"""`orchestrate status | runs | delete | watch | pull-artifacts`: one run, named the one way
(`orchestrator.runs.resolve_run`), or the ledger's runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.errors import RunFailed

from .shared import (
    ApiUrlOpt,
    ConfigOpt,
    JsonOpt,
    RunArg,
    console,
    emit_json,
    load,
    make_client,
    make_ledger,
)


def status_command(
    run: RunArg = None,
    config: ConfigOpt = None,
    api_url: ApiUrlOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Show a run's Kaggle status next to its ledger record.

    Example: `orchestrate status ppo-traffic-quick`
    """
    from orchestrator.runs import print_status, run_status

    settings = load(config, api_url=api_url)
    with make_client(settings) as client:
        report = run_status(settings, make_ledger(settings), client, run)
    if json_mode:
        emit_json(report)
    else:
        print_status(report, console())


def runs_command(
    config: ConfigOpt = None,
    chain: Annotated[str | None, typer.Option("--chain", help="only this chain's runs")] = None,
    json_mode: JsonOpt = False,
) -> None:
    """List the runs in the ledger, first asking Kaggle about those it thinks still going.

    Example: `orchestrate runs --chain ppo-long --json`
    """
    from orchestrator.runs import list_runs, print_runs, settle_listed_runs

    settings = load(config)
    ledger = make_ledger(settings)
    settle_listed_runs(settings, ledger, console(json_mode=True))  # notes go to stderr
    records = list_runs(ledger, chain=chain)
    if json_mode:
        emit_json([record.cli_json() for record in records])
    else:
        print_runs(records, console())


def delete_command(
    run: Annotated[str, typer.Argument(help="run (kernel slug) to delete on Kaggle")],
    config: ConfigOpt = None,
    api_url: ApiUrlOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="delete even if its outputs were never pulled, or a chain resumes from it",
        ),
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Delete a run's kernel on Kaggle, only once its outputs were pulled and verified and
    no active chain resumes from it.

    Example: `orchestrate delete ppo-traffic-s001`
    """
    from orchestrator.chain.parent import chains_resuming_from
    from orchestrator.runs import delete_run

    settings = load(config, api_url=api_url)
    ledger = make_ledger(settings)
    with make_client(settings) as client:
        record = delete_run(settings, ledger, client, run, force=force)
    told = [
        n for n, point in chains_resuming_from(ledger, record.slug) if point.owner == record.owner
    ]
    if json_mode:
        emit_json({"deleted": record.ref, "run": record.cli_json(), "chains_told": told})
    else:
        console().print(f"deleted {record.ref} on Kaggle (the ledger keeps its record)")
        for name in told:
            console().print(
                f"chain {name} resumed from it: its next step stops the chain with an ALERT "
                "naming the choices",
                markup=False,
            )


def watch_command(
    run: RunArg = None,
    tail: Annotated[
        int | None,
        typer.Option("--tail", min=0, help="show only the last N lines written before now"),
    ] = None,
    poll: Annotated[
        float, typer.Option("--poll", min=0.5, help="seconds between status checks")
    ] = 5.0,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Follow a run's live log and progress until it ends; exit status follows the run.

    Exit 0 when the kernel wrote its session summary and artifacts (COMPLETE, or
    CANCEL_ACKNOWLEDGED at the session limit after they were saved); 1 for ERROR, and for a
    COMPLETE without a summary or with status error (Kaggle calls a crashed script COMPLETE).

    Example: orchestrate watch alice/ppo-traffic-s1 --tail 20
    """
    from rich.console import Console

    from orchestrator.kaggle import TERMINAL_STATUSES
    from orchestrator.runs import resolve_run
    from orchestrator.watch import denial_grace_for, failure_reason, follow

    settings = load(config)
    ledger = make_ledger(settings)
    ref = resolve_run(run, ledger)
    out = Console(stderr=True) if json_mode else Console()
    with make_client(settings) as client:
        result = follow(
            client,
            ref.owner,
            ref.slug,
            console=out,
            tail=tail,
            poll_s=poll,
            denial_grace_s=denial_grace_for(ref.record),
        )
    if ref.in_ledger and result.status in TERMINAL_STATUSES:
        ledger.update(ref.slug, kernel_status=result.status, failure_message=result.failure_message)
    if json_mode:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    elif result.status == "CANCEL_ACKNOWLEDGED" and result.exit_code == 0:
        out.print(
            "the session was stopped after the kernel saved its outputs: pull them and go on",
            markup=False,
        )
    if result.exit_code:
        if json_mode:
            raise typer.Exit(result.exit_code)
        raise RunFailed(f"{ref.ref} ended {result.status}: {failure_reason(result)}")


def pull_artifacts_command(
    run: RunArg = None,
    dest: Annotated[
        Path | None, typer.Option("--dest", help="where to extract (default: runs/RUN/)")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="download again even if a verified pull is there")
    ] = False,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Download a finished run's outputs, verify their checksums, extract them into runs/RUN/.

    A rerun after a verified pull downloads nothing. A checksum mismatch or an unsafe archive
    is refused: the files go to runs/<run>.rejected/ and the command exits 1.

    Example: orchestrate pull-artifacts alice/ppo-traffic-s1
    """
    from rich.console import Console

    from orchestrator.artifacts import render_result
    from orchestrator.runs import pull_run, resolve_run

    settings = load(config)
    ledger = make_ledger(settings)
    ref = resolve_run(run, ledger)
    with make_client(settings) as client:
        result = pull_run(settings, ledger, client, ref, dest, force=force)
    if json_mode:
        sys.stdout.write(json.dumps({"run": ref.ref, **result.to_json()}) + "\n")
    else:
        render_result(Console(), ref.ref, result)
    if not result.verified:
        if json_mode:
            raise typer.Exit(1)
        raise RunFailed(
            f"{ref.ref}: outputs did not verify ({'; '.join(result.problems)}); kept in {result.dir}"
        )
