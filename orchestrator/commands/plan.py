"""`orchestrate plan` and `orchestrate quota`: the sessions a training needs, and the hours left."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .shared import ApiUrlOpt, ConfigOpt, JsonOpt, load


def plan_command(
    summary: Annotated[
        list[Path] | None,
        typer.Option(
            "--summary",
            help="session_summary.json of a quick test; give a CPU and a GPU one to compare",
        ),
    ] = None,
    timesteps: Annotated[
        int | None,
        typer.Option("--timesteps", min=1, help="steps to train (default: [run] total_timesteps)"),
    ] = None,
    session_limit_s: Annotated[
        float | None,
        typer.Option("--session-limit-s", help="session limit (default: [run] session_limit_s)"),
    ] = None,
    setup_s: Annotated[float | None, typer.Option("--setup-s", help="setup seconds")] = None,
    s_per_step: Annotated[
        float | None, typer.Option("--s-per-step", help="seconds per step")
    ] = None,
    checkpoint_s_per_step: Annotated[
        float | None, typer.Option("--checkpoint-s-per-step", help="checkpointing s per step")
    ] = None,
    eval_s: Annotated[float | None, typer.Option("--eval-s", help="evaluation seconds")] = None,
    finalize_s: Annotated[
        float | None, typer.Option("--finalize-s", help="finalization seconds")
    ] = None,
    log_lines_per_step: Annotated[
        float | None, typer.Option("--log-lines-per-step", help="log lines per step")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu or gpu, when timing comes from flags")
    ] = None,
    safety_factor: Annotated[
        float | None,
        typer.Option("--safety-factor", min=1.0, help="default 1.5 (short test) or 1.25"),
    ] = None,
    margin_floor_s: Annotated[
        float | None,
        typer.Option(
            "--margin-floor-s",
            min=0.0,
            help="least stop margin in seconds (default: the kernel's, [run] min_margin_s or limit/48)",
        ),
    ] = None,
    quota: Annotated[
        bool, typer.Option("--quota/--no-quota", help="ask Kaggle for the GPU quota left")
    ] = True,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Plan a run from a quick test: total time, sessions, margins, GPU quota, log volume.

    Example: orchestrate plan --summary runs/quick/session_summary.json --timesteps 24000
    Without a summary: orchestrate plan --timesteps 24000 --s-per-step 0.5 --setup-s 95
    """
    from rich.console import Console

    from orchestrator.plan import plan_from_flags, render_plan

    plan = plan_from_flags(
        load(config),
        summaries=summary or [],
        timesteps=timesteps,
        session_limit_s=session_limit_s,
        flags={
            "setup_s": setup_s,
            "s_per_step": s_per_step,
            "checkpoint_s_per_step": checkpoint_s_per_step,
            "eval_s": eval_s,
            "finalize_s": finalize_s,
            "log_lines_per_step": log_lines_per_step,
        },
        device=device,
        safety_factor=safety_factor,
        margin_floor_s=margin_floor_s,
        quota=quota,
    )
    if json_mode:
        sys.stdout.write(plan.model_dump_json() + "\n")
    else:
        render_plan(Console(), plan)


def quota_command(
    config: ConfigOpt = None,
    api_url: ApiUrlOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Show this account's weekly GPU and TPU quota: used, left, and when it refreshes.

    Example: orchestrate quota --json
    """
    from orchestrator.capacity import describe_quota, quota_report
    from orchestrator.kaggle import KaggleClient
    from orchestrator.settings import find_config_file

    url = api_url
    if url is None and (config is not None or find_config_file() is not None):
        url = load(config).kaggle.api_url  # outside a project: the environment's
    with KaggleClient(url) as client:
        report = quota_report(client.accelerator_quotas())
    if json_mode:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        for line in describe_quota(report):
            typer.echo(line)
