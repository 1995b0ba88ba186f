"""The `orchestrate` command: the root Typer app, every command registered in one list.

Commands stay thin: each loads settings, calls a library function and prints its result
(`--json`: one JSON document on stdout and nothing else there). Every error ends as one
line `error: ...` on stderr with its class's exit code (`orchestrator/errors.py`: 0 done,
1 run failed, 2 bad input, 3 infrastructure), mapped in `exits.py`. Nothing heavy is
imported here, so `--help` is quick.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click as typer._click; older typer uses click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

from orchestrator.errors import ExitCode

from . import chain, doctor, emulator, launch, plan, project, runs
from .exits import exit_code_for, fail, with_fix
from .help_text import use_plain_help

JSON_ERRORS = "orchestrate.json_errors"


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

# Every command, in the order `orchestrate --help` lists them.
COMMANDS = (
    ("init", project.init_command),
    ("build", project.build_command),
    ("launch", launch.launch_command),
    ("preflight", launch.preflight_command),
    ("status", runs.status_command),
    ("runs", runs.runs_command),
    ("delete", runs.delete_command),
    ("doctor", doctor.doctor_command),
    ("watch", runs.watch_command),
    ("pull-artifacts", runs.pull_artifacts_command),
    ("plan", plan.plan_command),
    ("sweep", chain.sweep_command),
    ("quota", plan.quota_command),
)
GROUPS = (
    ("chain", chain.app, "Run a training as a chain of resumed sessions."),
    ("emulator", emulator.app, "A local Kaggle-compatible API that really runs kernels."),
)
for _name, _function in COMMANDS:
    app.command(_name)(_function)
for _name, _group, _help in GROUPS:
    app.add_typer(_group, name=_name, help=_help)


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
