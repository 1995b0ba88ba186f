"""`orchestrate doctor --live`: how Kaggle really behaves, against what we assume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.errors import ExitCode, UserError

from .shared import ApiUrlOpt, JsonOpt, console, emit_json


def doctor_command(
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="run the probes against Kaggle with your credentials (pushes small private "
            "CPU kernels, then deletes them)",
        ),
    ] = False,
    report_path: Annotated[
        Path, typer.Option("--report", help="where to write the JSON report")
    ] = Path("doctor-report.json"),
    poll: Annotated[
        float, typer.Option("--poll", min=0.05, help="seconds between status checks")
    ] = 30.0,
    keep: Annotated[bool, typer.Option("--keep", help="keep the kernels it made")] = False,
    api_url: ApiUrlOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Check how Kaggle really behaves against what the emulator and docs assume.

    With `--live`: proves the credentials, reads an unknown kernel, runs a probe script
    (status sequence, denial window after the push, image, session clock, no SB3, no pip
    offline, a crash's final status, output names), a quick real run (watched, pulled,
    verified) and a 2-segment CPU chain; then deletes what it made. The JSON report says,
    for each observation, which row of docs/kaggle-behaviour.md it confirms or contradicts.
    No GPU quota is used.

    Example: `orchestrate doctor --live --report kaggle-report.json`
    """
    import tempfile

    from kernel_template.layout import atomic_write_text
    from orchestrator.doctor import live_check
    from orchestrator.kaggle import KaggleClient

    if not live:
        raise UserError(
            "doctor needs --live: it pushes small private CPU kernels with your credentials "
            "and deletes them afterwards; run `orchestrate doctor --live`"
        )
    say = console(json_mode).print
    with (
        KaggleClient(api_url) as client,
        tempfile.TemporaryDirectory(prefix="orchestrate-doctor-") as workdir,
    ):
        report = live_check(client, Path(workdir), poll_s=poll, keep=keep, say=say)
    data = report.to_json()
    atomic_write_text(report_path, json.dumps(data, indent=2) + "\n")
    if json_mode:
        emit_json(data)
    else:
        for item in report.observations:
            say(f"{item.verdict:>11}  {item.row}: {item.behaviour}: {item.observed!r}")
        say(f"report: {report_path} ({len(report.contradictions)} contradiction(s))")
    if report.problems:
        raise typer.Exit(int(ExitCode.INFRASTRUCTURE))
