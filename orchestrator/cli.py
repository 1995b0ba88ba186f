"""The `orchestrate` command: a Typer app that registers every command of the tool.

Commands stay thin: each loads settings, calls a library function and prints its result
(`--json`: one JSON document on stdout and nothing else there). Every error ends as one
line `error: ...` on stderr with the exit code of `orchestrator.errors` (0 done, 1 run
failed, 2 bad input, 3 infrastructure). Nothing heavy is imported here, so `--help` is quick.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click as typer._click; older typer uses click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

from .errors import ExitCode, OrchestrateError, UserError
from .help_text import use_plain_help

# --------------------------------------------------------------------------- error handling


def exit_code_for(error: BaseException) -> int | None:
    """The exit code of an error the CLI reports as one line, or None for a bug."""
    if isinstance(error, OrchestrateError):
        return int(error.exit_code)
    config = sys.modules.get("kernel_template.config")
    if config is not None and isinstance(error, config.ConfigError):
        return int(ExitCode.BAD_INPUT)
    kaggle = sys.modules.get("orchestrator.kaggle.errors")  # loaded by any command that used it
    if kaggle is not None and isinstance(error, kaggle.KaggleError):
        bad_input = (
            kaggle.CredentialsNotFound,
            kaggle.AuthenticationError,
            kaggle.BadRequest,
            kaggle.NotFoundError,
            kaggle.KernelNotVisible,
        )
        return int(ExitCode.BAD_INPUT if isinstance(error, bad_input) else ExitCode.INFRASTRUCTURE)
    return None


def with_fix(error: BaseException) -> str:
    """The error's message, plus the fix for refused credentials when it does not name one."""
    text = str(error)
    kaggle = sys.modules.get("orchestrator.kaggle.errors")
    if kaggle is not None and isinstance(error, kaggle.AuthenticationError) and "fix:" not in text:
        text = f"{text}; fix: {kaggle.CREDENTIALS_FIX}"
    return text


def one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def fail(message: str, code: int, *, json_mode: bool = False) -> typer.Exit:
    """The one `error:` line on stderr; under --json also `{"error", "exit_code"}` on stdout,
    so a script reading stdout always gets a document."""
    typer.echo(f"error: {one_line(message)}", err=True)
    if json_mode:
        typer.echo(json.dumps({"error": one_line(message), "exit_code": int(code)}))
    return typer.Exit(code)


def wants_json(args: list[str]) -> bool:
    """`--json` among the command-line arguments (before a `--`)."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def show_help(error: Any) -> None:
    """`orchestrate` or a group run without a command: its help, as --help shows it."""
    text = error.format_message()  # typer's rich formatter already printed it and left ""
    if text:
        typer.echo(text)


class OrchestrateGroup(TyperGroup):
    """The root group: turns every known error of every command into one line and an exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        use_plain_help(self)  # flag names never cut at 80 columns, example lines kept

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta[JSON_ERRORS] = wants_json(list(args))  # every sub-context shares ctx.meta
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        json_mode = bool(ctx.meta.get(JSON_ERRORS))
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except click_exceptions.NoArgsIsHelpError as error:
            show_help(error)
            raise typer.Exit(0) from None
        except click_exceptions.UsageError as error:
            where = error.ctx.command_path if error.ctx else "orchestrate"
            raise fail(
                f"{error.format_message()} (see `{where} --help`)",
                ExitCode.BAD_INPUT,
                json_mode=json_mode,
            ) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130, json_mode=json_mode) from None
        except Exception as error:
            code = exit_code_for(error)
            if code is None:
                raise
            raise fail(with_fix(error), code, json_mode=json_mode) from None


JSON_ERRORS = "orchestrate.json_errors"


app = typer.Typer(
    name="orchestrate",
    cls=OrchestrateGroup,
    help=(
        "Run long stable-baselines3 training on Kaggle across many sessions without losing work.\n\n"
        "Start with `orchestrate init`, then `orchestrate launch --quick-test`, `orchestrate plan`, "
        "and `orchestrate chain run`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)

# --------------------------------------------------------------------------- shared options

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="orchestrate.toml to use (default: nearest one upward from here)"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
SlugOpt = Annotated[
    str | None, typer.Option("--slug", help="kernel slug (overrides [kernel] slug)")
]
TitleOpt = Annotated[
    str | None, typer.Option("--title", help="kernel title; must slugify to the slug")
]
AcceleratorOpt = Annotated[
    str | None,
    typer.Option("--accelerator", help="NvidiaTeslaT4, TpuV5E8 or 'none' (overrides [kernel])"),
]
OwnerOpt = Annotated[str | None, typer.Option("--owner", help="Kaggle user that owns the kernel")]
ApiUrlOpt = Annotated[
    str | None, typer.Option("--api-url", help="Kaggle API root, e.g. http://127.0.0.1:7777/api/v1")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="override any setting: section.key=value, e.g. run.total_timesteps=2000"
    ),
]
KernelSourceOpt = Annotated[
    list[str] | None,
    typer.Option("--kernel-source", help="extra kernel source owner/slug (repeatable)"),
]


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def console(json_mode: bool = False):
    """Human output: stdout normally, stderr under --json (stdout then holds only the document)."""
    from rich.console import Console

    return Console(stderr=json_mode, highlight=False, soft_wrap=True)


def load(
    config: Path | None,
    sets: list[str] | None = None,
    *,
    slug: str | None = None,
    title: str | None = None,
    accelerator: str | None = None,
    owner: str | None = None,
    api_url: str | None = None,
):
    """Settings from the config file with every given flag laid over it."""
    from .settings import apply_overrides, load_settings, with_kernel_overrides

    settings = load_settings(config)
    if sets:
        settings = apply_overrides(settings, sets)
    if slug is not None and title is None:
        title = derived_title(settings.kernel.title, slug)
    return with_kernel_overrides(
        settings, slug=slug, title=title, machine_shape=accelerator, owner=owner, api_url=api_url
    )


def derived_title(configured: str | None, slug: str) -> str | None:
    """The title for a `--slug` given without `--title`: the configured one when it fits the
    slug (or names its prefix), else one made from the slug (Kaggle wants them to match)."""
    from .build import title_for_slug
    from .settings import check_slug

    try:
        check_slug(slug, error=UserError)
    except UserError:
        return None  # the slug's own error is the one to show
    return title_for_slug(configured, slug, strict=False)


def make_client(settings):
    """A KaggleClient for these settings ([kaggle] api_url, else the environment)."""
    from .kaggle import KaggleClient

    return KaggleClient(settings.kaggle.api_url)


def make_ledger(settings):
    from .ledger import Ledger

    return Ledger(settings.project_dir)


# --------------------------------------------------------------------------- init / build


@app.command("init")
def init_command(
    slug: Annotated[
        str, typer.Option("--slug", help="the kernel slug to start with")
    ] = "my-training-run",
    directory: Annotated[
        Path, typer.Option("--dir", help="where to write orchestrate.toml")
    ] = Path("."),
    force: Annotated[
        bool, typer.Option("--force", help="overwrite an existing orchestrate.toml")
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Write a commented starter orchestrate.toml.

    Example: `orchestrate init --slug ppo-traffic`
    """
    from kernel_template.layout import atomic_write_text

    from .settings import CONFIG_FILE_NAME, starter_toml

    target = directory / CONFIG_FILE_NAME
    if target.exists() and not force:
        raise UserError(f"{target} already exists; edit it, or pass --force to overwrite it")
    text = starter_toml(slug)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, text)
    if json_mode:
        emit_json({"path": str(target)})
    else:
        console().print(
            f"wrote {target}; edit it, then run `orchestrate build` or `orchestrate launch --quick-test`"
        )


@app.command("build")
def build_command(
    config: ConfigOpt = None,
    slug: SlugOpt = None,
    title: TitleOpt = None,
    accelerator: AcceleratorOpt = None,
    owner: OwnerOpt = None,
    sets: SetOpt = None,
    kernel_source: KernelSourceOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="kernel folder to write (default build/kernels/SLUG)"),
    ] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Render the kernel folder (kernel-metadata.json + one self-contained script) without pushing.

    Example: `orchestrate build --slug ppo-traffic --out kernel/` then `kaggle kernels push -p kernel/`
    """
    from .build import default_build_dir, render_kernel

    settings = load(config, sets, slug=slug, title=title, accelerator=accelerator, owner=owner)
    chosen = settings.require_slug()
    folder = render_kernel(
        settings,
        settings.run,
        slug=chosen,
        kernel_sources=tuple(kernel_source or ()),
        out_dir=out or default_build_dir(settings, chosen),
    )
    for warning in folder.warnings:
        typer.echo(warning, err=True)
    if json_mode:
        emit_json(
            {
                "path": str(folder.path),
                "script": str(folder.script_path),
                "metadata": folder.metadata,
                "config_hash": folder.config_hash,
                "bundle_sha256": folder.bundle_sha256,
                "embedded_files": list(folder.embedded_files),
            }
        )
    else:
        out_console = console()
        out_console.print(f"kernel {folder.ref} rendered in {folder.path}")
        out_console.print(
            f"  script      {folder.script_path.name} ({folder.script_path.stat().st_size:,} bytes)"
        )
        out_console.print(f"  config hash {folder.config_hash[:16]}")
        out_console.print(f"  embedded    {len(folder.embedded_files)} files")


# --------------------------------------------------------------------------- launch / preflight


@app.command("launch")
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
    from .kaggle import TERMINAL_STATUSES
    from .launch import launch, next_free_slug, quick_test_variant

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
            from .watch import denial_grace_for, follow

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


@app.command("preflight")
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
    from .preflight import run_preflight

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
    from .kaggle import CredentialsNotFound

    try:
        return make_client(settings)
    except CredentialsNotFound:
        return None


# --------------------------------------------------------------------------- status / runs / delete


@app.command("status")
def status_command(
    run: Annotated[
        str | None, typer.Argument(help="run (kernel slug); default: the newest in the ledger")
    ] = None,
    config: ConfigOpt = None,
    api_url: ApiUrlOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Show a run's Kaggle status next to its ledger record.

    Example: `orchestrate status ppo-traffic-quick`
    """
    from .runs import run_status

    settings = load(config, api_url=api_url)
    with make_client(settings) as client:
        report = run_status(settings, make_ledger(settings), client, run)
    if json_mode:
        emit_json(report)
    else:
        from .runs import print_status

        print_status(report, console())


@app.command("runs")
def runs_command(
    config: ConfigOpt = None,
    chain: Annotated[str | None, typer.Option("--chain", help="only this chain's runs")] = None,
    json_mode: JsonOpt = False,
) -> None:
    """List the runs in the ledger, first asking Kaggle about those it thinks still going.

    Example: `orchestrate runs --chain ppo-long --json`
    """
    from .runs import list_runs, print_runs, settle_listed_runs

    settings = load(config)
    ledger = make_ledger(settings)
    settle_listed_runs(settings, ledger, console(json_mode=True))  # notes go to stderr
    records = list_runs(ledger, chain=chain)
    if json_mode:
        emit_json([record.cli_json() for record in records])
    else:
        print_runs(records, console())


@app.command("delete")
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
    from .runs import delete_run

    settings = load(config, api_url=api_url)
    from .chain.parent import chains_resuming_from

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


@app.command("doctor")
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

    from .doctor import live_check
    from .kaggle import KaggleClient

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
    from kernel_template.layout import atomic_write_text

    atomic_write_text(report_path, json.dumps(data, indent=2) + "\n")
    if json_mode:
        emit_json(data)
    else:
        for item in report.observations:
            say(f"{item.verdict:>11}  {item.row}: {item.behaviour}: {item.observed!r}")
        say(f"report: {report_path} ({len(report.contradictions)} contradiction(s))")
    if report.problems:
        raise typer.Exit(int(ExitCode.INFRASTRUCTURE))


# --------------------------------------------------------------------------- the others' commands

# (command name, module, attribute): typer command functions and sub-apps owned by others.
_COMMANDS = (
    ("watch", "orchestrator.watch", "watch_command"),
    ("pull-artifacts", "orchestrator.artifacts", "pull_artifacts_command"),
    ("plan", "orchestrator.plan", "plan_command"),
    ("sweep", "orchestrator.chain.cli", "sweep_command"),
    ("quota", "orchestrator.quota", "quota_command"),
)
_SUB_APPS = (
    ("chain", "orchestrator.chain.cli", "app", "Run a training as a chain of resumed sessions."),
    (
        "emulator",
        "orchestrator.emulator.cli",
        "app",
        "A local Kaggle-compatible API that really runs kernels.",
    ),
)
MISSING_COMMANDS: list[str] = []


def _import_attr(module: str, attribute: str) -> Any:
    """The attribute, or None while that module is not written yet."""
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name and module.startswith(error.name):
            return None
        raise
    return getattr(loaded, attribute, None)


def _mount_others() -> None:
    for name, module, attribute in _COMMANDS:
        function = _import_attr(module, attribute)
        if function is None:
            MISSING_COMMANDS.append(name)
        else:
            app.command(name)(function)
    for name, module, attribute, help_text in _SUB_APPS:
        sub_app = _import_attr(module, attribute)
        if sub_app is None:
            MISSING_COMMANDS.append(name)
        else:
            app.add_typer(sub_app, name=name, help=help_text)


_mount_others()


def main(argv: list[str] | None = None) -> int:
    """The `orchestrate` console script."""
    command = typer.main.get_command(app)
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        code = command.main(args=arguments, prog_name="orchestrate", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as error:
        show_help(error)
        return 0
    except click_exceptions.UsageError as error:  # before any command runs: an unknown command
        message = f"{error.format_message()} (see `orchestrate --help`)"
        fail(message, ExitCode.BAD_INPUT, json_mode=wants_json(arguments))
        return ExitCode.BAD_INPUT
    except typer.Abort:
        fail("aborted", 130, json_mode=wants_json(arguments))
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
