"""`orchestrate emulator serve` (also `python -m orchestrator.emulator serve`)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="A local Kaggle-compatible API server that really runs the kernels pushed to it.",
    no_args_is_help=True,
)

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@app.callback()
def main() -> None:
    """A local Kaggle-compatible API that really runs kernels (loopback only).

    Example: orchestrate emulator serve --root /tmp/emu --users alice:secret
    """


@app.command()
def serve(
    root: Path = typer.Option(..., "--root", help="Directory for kernels, outputs and logs."),
    users: str = typer.Option(
        ...,
        "--users",
        help="NAME:KEY[,NAME2:KEY2]; each key works as Basic password and Bearer token.",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to bind (loopback by default)."
    ),
    port: int = typer.Option(
        7777, "--port", help="Port to listen on (7777 is kagglesdk's TEST env)."
    ),
    max_session: float = typer.Option(12 * 3600, "--max-session", help="Session limit in seconds."),
    gpu_slots: int = typer.Option(2, "--gpu-slots", help="Concurrent GPU sessions per user."),
    weekly_gpu_quota: float = typer.Option(30, "--weekly-gpu-quota", help="GPU hours per week."),
    queue_delay: float = typer.Option(0.5, "--queue-delay", help="Seconds between push and start."),
    kill_grace: float = typer.Option(5.0, "--kill-grace", help="Seconds from SIGTERM to SIGKILL."),
    faults: str = typer.Option("", "--faults", help="Fault spec, e.g. 'SaveKernel=503*1,seed=7'."),
    test_api: bool = typer.Option(
        False, "--test-api", help="Enable the /_emulator/ control API (loopback clients only)."
    ),
) -> None:
    """Serve Kaggle's kernels API on HOST:PORT under /api/v1; kernels run as the local user.

    Example: orchestrate emulator serve --root /tmp/emu --users alice:secret --port 7777,
    then export ORCHESTRATE_KAGGLE_API=http://127.0.0.1:7777/api/v1 KAGGLE_USERNAME=alice
    KAGGLE_KEY=secret
    """
    import uvicorn

    from orchestrator.emulator.app import EmulatorOptions, create_app
    from orchestrator.emulator.auth import parse_users
    from orchestrator.emulator.faults import parse_spec

    try:
        user_keys = parse_users(users)
        parse_spec(faults)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if host not in LOOPBACK:
        typer.secho(
            f"WARNING: binding {host} exposes an API that runs arbitrary code as you; "
            "use --host 127.0.0.1 unless you know why not.",
            err=True,
            fg="red",
        )
    root.mkdir(parents=True, exist_ok=True)
    options = EmulatorOptions(
        root=root,
        users=user_keys,
        max_session_s=max_session,
        gpu_slots=gpu_slots,
        weekly_gpu_quota_h=weekly_gpu_quota,
        queue_delay_s=queue_delay,
        kill_grace_s=kill_grace,
        faults=faults,
        test_api=test_api,
    )
    typer.echo(f"Kaggle emulator: http://{host}:{port}/api/v1 (root {root})", err=True)
    uvicorn.run(
        create_app(options),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
