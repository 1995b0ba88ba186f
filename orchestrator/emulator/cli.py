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
    cpu_slots: int = typer.Option(5, "--cpu-slots", help="Concurrent CPU sessions per user."),
    tpu_slots: int = typer.Option(1, "--tpu-slots", help="Concurrent TPU sessions per user."),
    weekly_gpu_quota: float = typer.Option(30, "--weekly-gpu-quota", help="GPU hours per week."),
    queue_delay: float = typer.Option(
        60, "--queue-delay", help="Seconds from push to container start, CPU/TPU."
    ),
    gpu_queue_delay: float = typer.Option(
        300, "--gpu-queue-delay", help="Seconds from push to container start, GPU."
    ),
    boot_time: float = typer.Option(
        20,
        "--boot-time",
        help="Seconds from container start (RUNNING, session clock) to the script's start.",
    ),
    kill_grace: float = typer.Option(
        0,
        "--kill-grace",
        help="At the session limit: 0 = SIGKILL at once (Kaggle); S > 0 = SIGTERM, S s, SIGKILL.",
    ),
    read_lag: str = typer.Option(
        "2:8",
        "--read-lag",
        help="MIN:MAX seconds a new kernel stays denied (403) and unlisted after its push.",
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed for the read-lag draws."),
    rate_limit: str = typer.Option(
        "40/60",
        "--rate-limit",
        help="Per user: N calls per S seconds over the RPCs and the log stream, or off.",
    ),
    image_lacks: str = typer.Option(
        "stable-baselines3,sb3-contrib",
        "--image-lacks",
        help="Distributions Kaggle's image lacks: kernels cannot import the host's copy.",
    ),
    known_images: str = typer.Option(
        "", "--known-images", help="More docker images a push may ask for (comma-separated)."
    ),
    honest_exit_status: bool = typer.Option(
        False,
        "--honest-exit-status",
        help="A non-zero exit ends ERROR (Kaggle says COMPLETE); for focused unit tests.",
    ),
    legacy_mounts: bool = typer.Option(
        False,
        "--legacy-mounts",
        help="Also mount kernel sources at the old flat input/<slug>/.",
    ),
    dataset_processing: float = typer.Option(
        30,
        "--dataset-processing",
        help="Seconds a new dataset is processed before it is READY and attachable.",
    ),
    faults: str = typer.Option("", "--faults", help="Fault spec, e.g. 'SaveKernel=503*1,seed=7'."),
    test_api: bool = typer.Option(
        False, "--test-api", help="Enable the /_emulator/ control API (loopback clients only)."
    ),
) -> None:
    """Serve Kaggle's kernels API on HOST:PORT under /api/v1; kernels run as the local user.

    Behaves as harshly as kaggle.com by default: 403 for unknown kernels and for new ones
    during a read-after-write lag, a crashed script ends COMPLETE, SIGKILL at the limit,
    queue and boot delays, session caps, no stable-baselines3 in the image, rate limits.

    Example: orchestrate emulator serve --root /tmp/emu --users alice:secret --port 7777,
    then export ORCHESTRATE_KAGGLE_API=http://127.0.0.1:7777/api/v1 KAGGLE_USERNAME=alice
    KAGGLE_KEY=secret

    Fast, for a demo: ... --queue-delay 1 --gpu-queue-delay 1 --boot-time 1 --read-lag 0.5:2
    """
    from orchestrator import kernel_extra

    kernel_extra.require(
        {**kernel_extra.EMULATOR_MODULES, **kernel_extra.TRAINING_MODULES}, "the emulator"
    )
    import uvicorn

    from orchestrator.emulator.api import parse_read_lag
    from orchestrator.emulator.app import EmulatorOptions, create_app
    from orchestrator.emulator.auth import parse_users
    from orchestrator.emulator.faults import parse_spec
    from orchestrator.emulator.middleware import parse_rate_limit

    try:
        user_keys = parse_users(users)
        parse_spec(faults)
        lag = parse_read_lag(read_lag)
        limit = parse_rate_limit(rate_limit)
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
        cpu_slots=cpu_slots,
        tpu_slots=tpu_slots,
        weekly_gpu_quota_h=weekly_gpu_quota,
        queue_delay_s=queue_delay,
        gpu_queue_delay_s=gpu_queue_delay,
        boot_time_s=boot_time,
        kill_grace_s=kill_grace,
        read_lag_s=lag,
        seed=seed,
        rate_limit=limit,
        honest_exit_status=honest_exit_status,
        legacy_mounts=legacy_mounts,
        dataset_processing_s=dataset_processing,
        image_lacks=tuple(filter(None, (d.strip() for d in image_lacks.split(",")))),
        known_images=tuple(filter(None, (i.strip() for i in known_images.split(",")))),
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
