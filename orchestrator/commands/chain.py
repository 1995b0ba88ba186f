"""`orchestrate chain start | resume | extend | step | run | status | list | report | cancel |
notify-test` and `orchestrate sweep`.

Thin commands: each loads settings, opens the ledger and a client, and calls the library
(`start_chain`, `ChainStepper.step`, `run_chains`, `chain_status`, `build_report`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.errors import ExitCode, UserError

from .shared import (
    ConfigOpt,
    JsonOpt,
    SetOpt,
    console,
    emit_json,
    load,
    make_client,
    make_ledger,
)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Run a training as a chain of resumed sessions, one Kaggle kernel per segment.",
)

NameArg = Annotated[str, typer.Argument(help="chain name (also the prefix of its kernel slugs)")]
SegmentsOpt = Annotated[
    str | None, typer.Option("--segments", help="explicit segment sizes, e.g. 12000,12000")
]
SegmentSizeOpt = Annotated[
    int | None, typer.Option("--segment-timesteps", min=1, help="split into segments of this size")
]
CountOpt = Annotated[
    int | None, typer.Option("--count", min=1, help="split into this many segments")
]
TimestepsOpt = Annotated[
    int | None,
    typer.Option("--timesteps", min=1, help="total timesteps (default: [chain] or [run])"),
]
PlanFromOpt = Annotated[
    Path | None,
    typer.Option(
        "--plan-from", help="a quick test's session_summary.json: plan the segments from it"
    ),
]
RetriesOpt = Annotated[
    int | None,
    typer.Option("--max-retries", min=0, help="retries of a segment that fails without progress"),
]
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="a pulled run (its kernel output is attached) or a verified local checkpoint dir "
        "(uploaded as a private Kaggle dataset) to continue from",
    ),
]
PollOpt = Annotated[
    float, typer.Option("--poll-interval", min=0.1, help="seconds between status checks")
]


def _settings(config: Path | None, sets: list[str] | None = None):
    from orchestrator.notify import notifier_for

    settings = load(config, sets)
    notifier_for(settings)  # a bad ORCHESTRATE_NOTIFY_URL: exit 2 before anything is written
    return settings


def _owner(settings, client) -> str:
    return settings.kaggle.owner or client.username


def _stepper(settings, client, ledger):
    from orchestrator.chain.step import ChainStepper

    return ChainStepper(settings, client, ledger)


def _start(
    settings,
    ledger,
    client,
    name,
    *,
    segments,
    segment_timesteps,
    count,
    timesteps,
    plan_from,
    max_retries,
    start_from=None,
):
    from orchestrator.chain.start import parse_segments, start_chain

    source = None
    if start_from is not None:
        from orchestrator.chain.start_point import resolve_source

        source = resolve_source(ledger, start_from)
    return start_chain(
        settings,
        ledger,
        name,
        owner=_owner(settings, client),
        total_timesteps=timesteps,
        segments=parse_segments(segments) if segments else None,
        segment_timesteps=segment_timesteps,
        count=count,
        plan_from=plan_from,
        max_retries=max_retries,
        start_from=source,
        client=client,
    )


@app.command("start")
def start_command(
    name: NameArg,
    segments: SegmentsOpt = None,
    segment_timesteps: SegmentSizeOpt = None,
    count: CountOpt = None,
    timesteps: TimestepsOpt = None,
    plan_from: PlanFromOpt = None,
    max_retries: RetriesOpt = None,
    start_from: FromOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Record a new chain (run config + segment plan); nothing is pushed until `step` or `run`.

    With --from, the first segment resumes that checkpoint and the segments cover the rest.

    Example: orchestrate chain start ppo-long --segments 12000,12000
    Example: orchestrate chain start ppo-more --from runs/ppo-s2/checkpoints/000000024000
    """
    settings = _settings(config, sets)
    with make_client(settings) as client:
        record = _start(
            settings,
            make_ledger(settings),
            client,
            name,
            segments=segments,
            segment_timesteps=segment_timesteps,
            count=count,
            timesteps=timesteps,
            plan_from=plan_from,
            max_retries=max_retries,
            start_from=start_from,
        )
    if json_mode:
        emit_json(record.cli_json())
    else:
        start = record.start_from
        origin = f" from step {start.step} ({start.kind} {start.ref})" if start else ""
        typer.echo(
            f"chain {record.name}: {len(record.segments)} segment(s) {record.segments} for "
            f"{record.total_timesteps} timesteps{origin}; next: orchestrate chain run {record.name}"
        )


@app.command("resume")
def resume_command(
    name: NameArg,
    start_from: FromOpt = None,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Take a failed or cancelled chain on from its newest verified checkpoint.

    Earlier failures are forgiven; nothing is pushed until `step` or `run`. With --from, the
    chain continues from that checkpoint instead (e.g. when the kernel holding its newest one
    was deleted): a local dir is uploaded as a private Kaggle dataset.

    Example: orchestrate chain resume ppo-long
    Example: orchestrate chain resume ppo-long --from runs/ppo-long-s2/checkpoints/000000024000
    """
    from orchestrator.chain.restart import resume_chain

    settings = _settings(config)
    ledger = make_ledger(settings)
    with make_client(settings) as client:
        source = None
        if start_from is not None:
            from orchestrator.chain.start_point import resolve_source

            source = resolve_source(ledger, start_from)
        record = resume_chain(ledger, name, source=source, client=client)
    _print_record(record, json_mode, f"chain {name} is active again: {record.notes[-1].message}")


@app.command("extend")
def extend_command(
    name: NameArg,
    to: Annotated[int, typer.Option("--to", min=1, help="the new total timesteps")],
    segments: SegmentsOpt = None,
    segment_timesteps: SegmentSizeOpt = None,
    count: CountOpt = None,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Raise a chain's total; a finished chain becomes active and trains on from its last checkpoint.

    The new segments default to the chain's largest planned segment. Nothing is pushed until
    `step` or `run`.

    Example: orchestrate chain extend ppo-long --to 2000000
    """
    from orchestrator.chain.restart import extend_chain
    from orchestrator.chain.start import parse_segments

    settings = _settings(config)
    record = extend_chain(
        make_ledger(settings),
        name,
        to,
        segments=parse_segments(segments) if segments else None,
        segment_timesteps=segment_timesteps,
        count=count,
    )
    warnings = [n.message for n in record.notes[-3:] if n.level == "warning"]
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    _print_record(
        record,
        json_mode,
        f"chain {name}: {record.total_timesteps} timesteps, segments {record.segments}; "
        f"next: orchestrate chain run {name}",
    )


def _print_record(record, json_mode: bool, line: str) -> None:
    if json_mode:
        emit_json(record.cli_json())
    else:
        typer.echo(line)


@app.command("step")
def step_command(
    names: Annotated[
        list[str] | None, typer.Argument(help="chain name(s); none with --all")
    ] = None,
    all_chains: Annotated[bool, typer.Option("--all", help="step every active chain")] = False,
    lock_timeout: Annotated[
        float,
        typer.Option("--lock-timeout", min=0, help="seconds to wait for another step to finish"),
    ] = 10.0,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Make one idempotent advance and exit (for cron, systemd timers, CI schedules).

    Exit 0 advanced / running / waiting / done, 1 chain failed or ALERT, 2 bad input,
    3 Kaggle unreadable.

    Example: orchestrate chain step ppo-long
    """
    from orchestrator.chain.scheduler import exit_code

    settings = _settings(config)
    ledger = make_ledger(settings)
    chosen = _chosen_chains(ledger, names, all_chains)
    results = {}
    with make_client(settings) as client:
        stepper = _stepper(settings, client, ledger)
        for name in chosen:
            result = stepper.step(name, lock_timeout=lock_timeout)
            results[name] = result
            if not json_mode:
                _print_result(result)
    if json_mode:
        emit_json([r.to_json() for r in results.values()])
    raise typer.Exit(exit_code(results))


def _chosen_chains(ledger, names: list[str] | None, all_chains: bool) -> list[str]:
    if all_chains:
        return [c.name for c in ledger.chains() if not c.state.finished]
    if not names:
        raise UserError("name a chain (orchestrate chain step NAME) or pass --all")
    from orchestrator.chain.names import require_chain

    for name in names:  # all checked before any is stepped
        require_chain(ledger, name)
    return names


def _print_result(result) -> None:
    until = f" (until {result.until:%Y-%m-%d %H:%M} UTC)" if result.until else ""
    typer.echo(f"{result.chain}: {result.outcome}: {result.message}{until}")


@app.command("run")
def run_command(
    name: NameArg,
    poll_interval: PollOpt = 30.0,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="show the live log of each segment")
    ] = True,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Step a chain in the foreground until it is done. It never creates one: `chain start` does.

    Ctrl-C stops only this loop; `orchestrate chain run NAME` or `chain step NAME` carries on.

    Example: orchestrate chain start ppo-long --segments 12000,12000, then
    orchestrate chain run ppo-long --poll-interval 60
    """
    from orchestrator.chain.names import require_chain
    from orchestrator.chain.scheduler import exit_code, run_chains

    settings = _settings(config)
    ledger = make_ledger(settings)
    require_chain(ledger, name)  # a misspelt name must not start a new training
    # The live log of each segment: stdout, or stderr when stdout carries the JSON result.
    out = console(json_mode)
    with make_client(settings) as client:
        stepper = _stepper(settings, client, ledger)
        try:
            results = run_chains(
                stepper,
                [name],
                poll_interval=poll_interval,
                follow=follow,
                console=out,
                on_result=None if json_mode else _print_result,
            )
        except KeyboardInterrupt:
            typer.echo(f"stopped following; continue with `orchestrate chain run {name}`", err=True)
            raise typer.Exit(130) from None
    if json_mode:
        from orchestrator.chain.status import chain_status

        emit_json({"result": results[name].to_json(), "status": chain_status(ledger, name)})
    raise typer.Exit(exit_code(results))


@app.command("status")
def status_command(
    name: Annotated[str | None, typer.Argument(help="chain name; default: every chain")] = None,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Every segment of a chain: slug, status, steps, verified checkpoint hash, GPU hours.

    Example: orchestrate chain status ppo-long --json
    """
    from orchestrator.chain.status import chain_status, print_status

    settings = _settings(config)
    ledger = make_ledger(settings)
    names = [name] if name else [c.name for c in ledger.chains()]
    if name:
        from orchestrator.chain.names import require_chain

        require_chain(ledger, name)
    statuses = [chain_status(ledger, n) for n in names]
    if json_mode:
        emit_json(statuses[0] if name else statuses)
        return
    if not statuses:
        typer.echo("no chains yet; start one with `orchestrate chain start NAME --segments ...`")
    for status in statuses:
        print_status(status)


@app.command("list")
def list_command(config: ConfigOpt = None, json_mode: JsonOpt = False) -> None:
    """One line per chain: state, steps done, segments, GPU hours, final evaluation.

    Example: orchestrate chain list
    """
    from orchestrator.chain.overview import describe_chain, list_chains

    rows = list_chains(make_ledger(_settings(config)))
    if json_mode:
        emit_json(rows)
    elif not rows:
        typer.echo("no chains yet; start one with `orchestrate chain start NAME --segments ...`")
    for row in [] if json_mode else rows:
        typer.echo(describe_chain(row))


@app.command("report")
def report_command(
    name: Annotated[str | None, typer.Argument(help="chain name; none with --all")] = None,
    all_chains: Annotated[
        bool, typer.Option("--all", help="every chain with a pulled segment: OUT/NAME/ each")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="folder for report.html and PNGs (default reports/NAME)"),
    ] = None,
    pull: Annotated[
        bool,
        typer.Option(
            "--pull/--no-pull", help="pull segment outputs missing from runs/ again from Kaggle"
        ),
    ] = True,
    config: ConfigOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Learning curve stitched across segments, time per segment, GPU hours, evaluation: PNG + HTML.

    Segment outputs missing from runs/ (a fresh checkout, a CI runner) are pulled again from
    Kaggle; any that stay missing are named on stderr and in the report.

    Example: orchestrate chain report ppo-long --out reports/ppo-long
    """
    from contextlib import ExitStack

    from orchestrator.chain.report import build_report
    from orchestrator.chain.report_inputs import pull_again

    settings = _settings(config)
    ledger = make_ledger(settings)
    names = _report_names(ledger, name, all_chains)
    base = out or settings.project_dir / "reports"
    reports = []
    with ExitStack() as stack:
        fetch = pull_again(settings.kaggle.api_url, stack) if pull else None
        for chain_name in names:
            target = base / chain_name if all_chains or out is None else base
            report = build_report(ledger, chain_name, target, fetch=fetch)
            reports.append(report)
            for line in report.missing_lines():
                typer.echo(f"warning: chain {chain_name} report is incomplete: {line}", err=True)
    if json_mode:
        emit_json([r.to_json() for r in reports] if all_chains else reports[0].to_json())
        return
    if not reports:
        typer.echo("no chain has a pulled segment yet: no report", err=True)
    for report in reports:
        typer.echo(f"report: {report.html}")
        for image in report.images:
            typer.echo(f"figure: {image}")


def _report_names(ledger, name: str | None, all_chains: bool) -> list[str]:
    if all_chains:
        if name:
            raise UserError("name a chain or pass --all, not both")
        from orchestrator.chain.report import pulled_segments

        return [c.name for c in ledger.chains() if pulled_segments(ledger.runs(c.name))]
    if not name:
        raise UserError("name a chain (orchestrate chain report NAME) or pass --all")
    from orchestrator.chain.names import require_chain

    require_chain(ledger, name)
    return [name]


@app.command("cancel")
def cancel_command(name: NameArg, config: ConfigOpt = None, json_mode: JsonOpt = False) -> None:
    """Stop advancing the chain. The running segment is not stopped: Kaggle has no usable cancel.

    Example: orchestrate chain cancel ppo-long
    """
    from orchestrator.chain.status import cancel_chain

    settings = _settings(config)
    message = cancel_chain(make_ledger(settings), name)
    if json_mode:
        typer.echo(json.dumps({"chain": name, "message": message}))
    else:
        typer.echo(message)


@app.command("notify-test")
def notify_test_command(config: ConfigOpt = None, json_mode: JsonOpt = False) -> None:
    """Post a test message to the [notify] webhook, to see that chain news will reach you.

    Exit 0 delivered, 2 no webhook configured, 3 not delivered.
    Example: ORCHESTRATE_NOTIFY_URL=https://ntfy.sh/my-topic orchestrate chain notify-test
    """
    from orchestrator.notify import NotifyEvent, notifier_for, webhook_host

    notifier = notifier_for(_settings(config))
    if not notifier.enabled:
        raise UserError(
            "no webhook: set [notify] url in orchestrate.toml or ORCHESTRATE_NOTIFY_URL"
        )
    event = NotifyEvent("test", "notify-test", "orchestrate: test message; chain news lands here")
    failures = notifier.send([event])
    where = webhook_host(notifier.url)
    if json_mode:
        emit_json({"webhook": where, "format": notifier.fmt, "delivered": not failures})
    elif not failures:
        typer.echo(f"delivered to {where} ({notifier.fmt})")
    for failure in failures:
        typer.echo(f"error: {failure}", err=True)
    raise typer.Exit(int(ExitCode.INFRASTRUCTURE) if failures else 0)


def sweep_command(
    name: Annotated[str, typer.Argument(help="sweep name: the prefix of its chains")],
    seeds: Annotated[str, typer.Option("--seeds", help="comma-separated seeds, e.g. 0,1,2")] = "0",
    variants: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            help="one config variant as ';'-separated --set assignments (repeatable), "
            "e.g. 'run.hyperparams.learning_rate=0.001'",
        ),
    ] = None,
    segments: SegmentsOpt = None,
    segment_timesteps: SegmentSizeOpt = None,
    count: CountOpt = None,
    timesteps: TimestepsOpt = None,
    max_retries: RetriesOpt = None,
    poll_interval: PollOpt = 30.0,
    start_only: Annotated[
        bool, typer.Option("--start-only", help="record the chains and exit")
    ] = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Run several chains (seeds x config variants), scheduled within the GPU slot and quota limits.

    Rerunning the same sweep continues its chains; at the end a table compares them.

    Example: orchestrate sweep lr --seeds 0,1 --count 2
      --variant run.hyperparams.learning_rate=0.001
    """
    from orchestrator.chain.overview import ChangedResults, chain_overview, print_sweep_table
    from orchestrator.chain.scheduler import exit_code, run_chains
    from orchestrator.chain.sweep import plan_sweep, start_sweep

    settings = _settings(config, sets)
    ledger = make_ledger(settings)
    members = plan_sweep(settings, name, seeds, variants or [])
    with make_client(settings) as client:
        names = start_sweep(
            settings,
            ledger,
            members,
            owner=_owner(settings, client),
            total_timesteps=timesteps,
            segments=segments,
            segment_timesteps=segment_timesteps,
            count=count,
            max_retries=max_retries,
        )
        typer.echo(f"sweep {name}: chains {', '.join(names)}", err=True)
        if start_only:
            results = {}
        else:
            results = run_chains(
                _stepper(settings, client, ledger),
                names,
                poll_interval=poll_interval,
                follow=False,
                on_result=None if json_mode else ChangedResults(_print_result),
            )
    rows = [chain_overview(ledger, n) for n in names]
    if json_mode:
        emit_json(
            {
                "chains": names,
                "results": {n: r.to_json() for n, r in results.items()},
                "table": rows,
            }
        )
    elif results:
        print_sweep_table(rows, console())
    raise typer.Exit(exit_code(results) if results else int(ExitCode.OK))
