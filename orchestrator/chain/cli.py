"""`orchestrate chain start | step | run | status | report | cancel` and `orchestrate sweep`.

Thin commands: each loads settings, opens the ledger and a client, and calls the library
(`start_chain`, `ChainStepper.step`, `run_chains`, `chain_status`, `build_report`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.errors import ExitCode, UserError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Run a training as a chain of resumed sessions, one Kaggle kernel per segment.",
)

NameArg = Annotated[str, typer.Argument(help="chain name (also the prefix of its kernel slugs)")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="orchestrate.toml (default: the nearest one)")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override a setting: section.key=value (repeatable)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
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
PollOpt = Annotated[
    float, typer.Option("--poll-interval", min=0.1, help="seconds between status checks")
]


def _settings(config: Path | None, sets: list[str] | None = None):
    from orchestrator.notify import notifier_for
    from orchestrator.settings import apply_overrides, load_settings

    settings = load_settings(config)
    settings = apply_overrides(settings, sets) if sets else settings
    notifier_for(settings)  # a bad ORCHESTRATE_NOTIFY_URL: exit 2 before anything is written
    return settings


def _client(settings):
    from orchestrator.kaggle import KaggleClient

    return KaggleClient(settings.kaggle.api_url)


def _ledger(settings):
    from orchestrator.ledger import Ledger

    return Ledger(settings.project_dir)


def _owner(settings, client) -> str:
    return settings.kaggle.owner or client.username


def _stepper(settings, client, ledger):
    from orchestrator.chain.step import ChainStepper

    return ChainStepper(settings, client, ledger)


def _err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _emit(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


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
):
    from orchestrator.chain.start import parse_segments, start_chain

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
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Record a new chain (run config + segment plan); nothing is pushed until `step` or `run`.

    Example: orchestrate chain start ppo-long --segments 12000,12000
    """
    settings = _settings(config, sets)
    with _client(settings) as client:
        record = _start(
            settings,
            _ledger(settings),
            client,
            name,
            segments=segments,
            segment_timesteps=segment_timesteps,
            count=count,
            timesteps=timesteps,
            plan_from=plan_from,
            max_retries=max_retries,
        )
    if json_output:
        _emit(record.model_dump(mode="json"))
    else:
        typer.echo(
            f"chain {record.name}: {len(record.segments)} segment(s) {record.segments} for "
            f"{record.total_timesteps} timesteps; next: orchestrate chain run {record.name}"
        )


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
    json_output: JsonOpt = False,
) -> None:
    """Make one idempotent advance and exit (for cron, systemd timers, CI schedules).

    Exit 0 advanced / running / waiting / done, 1 chain failed, 2 bad input, 3 Kaggle unreadable.

    Example: orchestrate chain step ppo-long
    """
    from orchestrator.chain.scheduler import exit_code

    settings = _settings(config)
    ledger = _ledger(settings)
    chosen = _chosen_chains(ledger, names, all_chains)
    results = {}
    with _client(settings) as client:
        stepper = _stepper(settings, client, ledger)
        for name in chosen:
            result = stepper.step(name, lock_timeout=lock_timeout)
            results[name] = result
            if not json_output:
                _print_result(result)
    if json_output:
        _emit([r.to_json() for r in results.values()])
    raise typer.Exit(exit_code(results))


def _chosen_chains(ledger, names: list[str] | None, all_chains: bool) -> list[str]:
    if all_chains:
        return [c.name for c in ledger.chains() if c.state in ("active", "waiting")]
    if not names:
        raise UserError("name a chain (orchestrate chain step NAME) or pass --all")
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
    segments: SegmentsOpt = None,
    segment_timesteps: SegmentSizeOpt = None,
    count: CountOpt = None,
    timesteps: TimestepsOpt = None,
    plan_from: PlanFromOpt = None,
    max_retries: RetriesOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Step the chain in the foreground until it is done (starting it first if it is new).

    Ctrl-C stops only this loop; `orchestrate chain run NAME` or `chain step NAME` carries on.

    Example: orchestrate chain run ppo-long --segments 12000,12000 --poll-interval 60
    """
    from orchestrator.chain.scheduler import exit_code, run_chains

    settings = _settings(config, sets)
    ledger = _ledger(settings)
    from rich.console import Console

    # The live log of each segment: stdout, or stderr when stdout carries the JSON result.
    console = _err_console() if json_output else Console(highlight=False, soft_wrap=True)
    with _client(settings) as client:
        if ledger.get_chain(name) is None:
            record = _start(
                settings,
                ledger,
                client,
                name,
                segments=segments,
                segment_timesteps=segment_timesteps,
                count=count,
                timesteps=timesteps,
                plan_from=plan_from,
                max_retries=max_retries,
            )
            typer.echo(f"started chain {record.name}: segments {record.segments}", err=json_output)
        stepper = _stepper(settings, client, ledger)
        try:
            results = run_chains(
                stepper,
                [name],
                poll_interval=poll_interval,
                follow=follow,
                console=console,
                on_result=None if json_output else _print_result,
            )
        except KeyboardInterrupt:
            typer.echo(f"stopped following; continue with `orchestrate chain run {name}`", err=True)
            raise typer.Exit(130) from None
    if json_output:
        from orchestrator.chain.status import chain_status

        _emit({"result": results[name].to_json(), "status": chain_status(ledger, name)})
    raise typer.Exit(exit_code(results))


@app.command("status")
def status_command(
    name: Annotated[str | None, typer.Argument(help="chain name; default: every chain")] = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Every segment of a chain: slug, status, steps, verified checkpoint hash, GPU hours.

    Example: orchestrate chain status ppo-long --json
    """
    from orchestrator.chain.status import chain_status, print_status

    settings = _settings(config)
    ledger = _ledger(settings)
    names = [name] if name else [c.name for c in ledger.chains()]
    if name and ledger.get_chain(name) is None:
        raise UserError(f"no chain {name!r} in {ledger.path}; see `orchestrate chain status`")
    statuses = [chain_status(ledger, n) for n in names]
    if json_output:
        _emit(statuses[0] if name else statuses)
        return
    if not statuses:
        typer.echo("no chains yet; start one with `orchestrate chain start NAME --segments ...`")
    for status in statuses:
        print_status(status)


@app.command("report")
def report_command(
    name: NameArg,
    out: Annotated[
        Path | None, typer.Option("--out", help="folder for report.html and PNGs")
    ] = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Learning curve stitched across segments, time per segment, GPU hours, evaluation: PNG + HTML.

    Example: orchestrate chain report ppo-long --out reports/ppo-long
    """
    from orchestrator.chain.report import build_report

    settings = _settings(config)
    ledger = _ledger(settings)
    if ledger.get_chain(name) is None:
        raise UserError(f"no chain {name!r} in {ledger.path}; see `orchestrate chain status`")
    report = build_report(ledger, name, out or settings.project_dir / "reports" / name)
    if json_output:
        _emit(report.to_json())
    else:
        typer.echo(f"report: {report.html}")
        for image in report.images:
            typer.echo(f"figure: {image}")


@app.command("cancel")
def cancel_command(name: NameArg, config: ConfigOpt = None, json_output: JsonOpt = False) -> None:
    """Stop advancing the chain. The running segment is not stopped: Kaggle has no usable cancel.

    Example: orchestrate chain cancel ppo-long
    """
    from orchestrator.chain.status import cancel_chain

    settings = _settings(config)
    message = cancel_chain(_ledger(settings), name)
    if json_output:
        typer.echo(json.dumps({"chain": name, "message": message}))
    else:
        typer.echo(message)


@app.command("notify-test")
def notify_test_command(config: ConfigOpt = None, json_output: JsonOpt = False) -> None:
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
    if json_output:
        _emit({"webhook": where, "format": notifier.fmt, "delivered": not failures})
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
    json_output: JsonOpt = False,
) -> None:
    """Run several chains (seeds x config variants), scheduled within the GPU slot and quota limits.

    Rerunning the same sweep continues its chains. Example:
    orchestrate sweep lr --seeds 0,1 --variant run.hyperparams.learning_rate=0.001 --count 2
    """
    from orchestrator.chain.scheduler import exit_code, run_chains
    from orchestrator.chain.sweep import plan_sweep, start_sweep

    settings = _settings(config, sets)
    ledger = _ledger(settings)
    members = plan_sweep(settings, name, seeds, variants or [])
    with _client(settings) as client:
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
                on_result=None if json_output else _print_result,
            )
    if json_output:
        _emit({"chains": names, "results": {n: r.to_json() for n, r in results.items()}})
    raise typer.Exit(exit_code(results) if results else int(ExitCode.OK))


def main(argv: list[str] | None = None) -> int:
    """`python -m orchestrator.chain.cli ...` without the rest of the CLI (errors as one line)."""
    from orchestrator.cli import main as orchestrate_main

    return orchestrate_main(["chain", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
