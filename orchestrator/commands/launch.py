"""`orchestrate launch` and `orchestrate preflight`: push one session, after the checklist."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.errors import ExitCode

from .shared import (
    AcceleratorOpt,
    ApiUrlOpt,
    ConfigOpt,
    JsonOpt,
    KernelSourceOpt,
    OwnerOpt,
    SetOpt,
    SlugOpt,
    TitleOpt,
    console,
    emit_json,
    load,
    make_client,
    make_ledger,
)


def launch_command(
    config: ConfigOpt = None,
    slug: SlugOpt = None,
    title: TitleOpt = None,
    accelerator: AcceleratorOpt = None,
    owner: OwnerOpt = None,
    api_url: ApiUrlOpt = None,
    sets: SetOpt = None,
    kernel_source: KernelSourceOpt = None,
    skip_preflight: Annotated[
        bool, typer.Option("--skip-preflight", help="push without the checklist")
    ] = False,
    quick_test: Annotated[
        bool,
        typer.Option(
            "--quick-test",
            help="a short real session (slug suffix -quick) whose summary feeds `plan`",
        ),
    ] = False,
    quick_minutes: Annotated[
        float,
        typer.Option(
            "--quick-minutes", min=0.1, help="session minutes of a --quick-test (trains until then)"
        ),
    ] = 5.0,
    quick_steps: Annotated[
        int | None,
        typer.Option("--quick-steps", min=1, help="stop a --quick-test after this many timesteps"),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="follow the run until it ends")
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Build, check, record and push one kernel session; print its URL.

    Example: `orchestrate launch --quick-test --watch`, then `orchestrate plan`
    """
    from orchestrator.kaggle import TERMINAL_STATUSES
    from orchestrator.launch import launch, next_free_slug, quick_test_variant

    settings = load(
        config, sets, slug=slug, title=title, accelerator=accelerator, owner=owner, api_url=api_url
    )
    run_config = settings.run
    chosen = settings.require_slug()
    if quick_test:
        run_config, chosen = quick_test_variant(
            run_config, chosen, steps=quick_steps, minutes=quick_minutes
        )
        chosen = next_free_slug(make_ledger(settings), chosen)
    out = console(json_mode)
    with make_client(settings) as client:
        record = launch(
            settings,
            run_config,
            client=client,
            ledger=make_ledger(settings),
            slug=chosen,
            kernel_sources=tuple(kernel_source or ()),
            preflight=not skip_preflight,
            console=out,
        )
        if not json_mode:
            out.print(f"pushed {record.ref} (version {record.version}): {record.url}")
        exit_code = 0
        if watch:
            from orchestrator.watch import denial_grace_for, follow

            result = follow(
                client,
                record.owner,
                record.slug,
                console=out,
                denial_grace_s=denial_grace_for(record),
            )
            exit_code = result.exit_code
            record = make_ledger(settings).update(
                record.slug,
                kernel_status=result.status,
                failure_message=result.failure_message,
                **({"state": "terminal"} if result.status in TERMINAL_STATUSES else {}),
            )
    if json_mode:
        emit_json(record.cli_json())
    if exit_code:
        raise typer.Exit(exit_code)


def preflight_command(
    config: ConfigOpt = None,
    slug: SlugOpt = None,
    title: TitleOpt = None,
    accelerator: AcceleratorOpt = None,
    owner: OwnerOpt = None,
    api_url: ApiUrlOpt = None,
    sets: SetOpt = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="skip the checks that call Kaggle")
    ] = False,
    summary: Annotated[
        Path | None,
        typer.Option(
            "--summary", help="a quick test's session_summary.json (default: the pulled one)"
        ),
    ] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Run the zero-loss checklist: config, kernel render + embedded import, credentials, quota, budget.

    Example: `orchestrate preflight --json`
    """
    from orchestrator.preflight import run_preflight

    settings = load(
        config, sets, slug=slug, title=title, accelerator=accelerator, owner=owner, api_url=api_url
    )
    client = None if offline else _client_or_none(settings)
    try:
        report = run_preflight(
            settings,
            settings.run,
            client=client,
            ledger=make_ledger(settings),
            offline=offline,
            summary_path=summary,
        )
    finally:
        if client is not None:
            client.close()
    if json_mode:
        emit_json(report.as_json())
    else:
        report.print(console())
    if not report.ok:
        raise typer.Exit(ExitCode.BAD_INPUT if report.bad_input else ExitCode.INFRASTRUCTURE)


def _client_or_none(settings):
    """A client, or None when credentials are missing (preflight reports that as a failed check)."""
    from orchestrator.kaggle import CredentialsNotFound

    try:
        return make_client(settings)
    except CredentialsNotFound:
        return None
