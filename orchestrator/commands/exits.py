"""The one seam where errors become exit codes (httpx `_exceptions.py`: one tree, one mapping).

Every error the CLI reports as one line carries its exit code as a class attribute: the
tree is drawn in `orchestrator/errors.py`. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json

import typer

from orchestrator.errors import ExitCode, OrchestrateError


def reported_errors() -> tuple[type[BaseException], ...]:
    """The roots of the error tree. Imported only once something failed, so --help stays light."""
    from kernel_template.config import ConfigError
    from orchestrator.kaggle.errors import KaggleError

    return (OrchestrateError, KaggleError, ConfigError)


def exit_code_for(error: BaseException) -> int | None:
    """The exit code of an error the CLI reports as one line, or None for a bug."""
    if isinstance(error, reported_errors()):
        return int(error.exit_code)
    return None


def with_fix(error: BaseException) -> str:
    """The error's message, plus the fix for refused credentials when it does not name one."""
    from orchestrator.kaggle.errors import CREDENTIALS_FIX, AuthenticationError

    text = str(error)
    if isinstance(error, AuthenticationError) and "fix:" not in text:
        text = f"{text}; fix: {CREDENTIALS_FIX}"
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


def bad_input(message: str, *, json_mode: bool = False) -> typer.Exit:
    return fail(message, ExitCode.BAD_INPUT, json_mode=json_mode)
