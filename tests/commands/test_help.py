"""Every command answers --help, with an example, and the CLI loads nothing heavy to do it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from orchestrator.commands import app, main

MY_COMMANDS = ("init", "build", "launch", "preflight", "status", "runs", "delete")
EVERY_COMMAND = (*MY_COMMANDS, "watch", "pull-artifacts", "plan", "chain", "sweep", "emulator")
HEAVY = ("torch", "stable_baselines3", "pandas", "matplotlib", "gymnasium")


def command_paths():
    """Every command and sub-command as argv lists, found by walking the click tree."""
    root = typer.main.get_command(app)
    paths = []

    def walk(command, prefix):
        for name, sub in getattr(command, "commands", {}).items():
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


def test_every_command_is_registered():
    registered = {path[0] for path in command_paths()}
    missing = [name for name in EVERY_COMMAND if name not in registered]
    assert not missing, f"not registered: {missing}"


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p))
def test_help_of_every_command(path):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    if path[0] in MY_COMMANDS:
        assert "Example" in result.output


def test_root_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in MY_COMMANDS:
        assert name in out


def loaded_by(argvs: list[list[str]], modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has loaded after running the CLI with `argvs`."""
    code = (
        "import sys, json, contextlib, io\n"
        "from orchestrator.commands import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    for argv in {argvs!r}: main(argv)\n"
        f"print(json.dumps([m for m in {modules!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_imports_nothing_heavy():
    assert loaded_by([["--help"], ["launch", "--help"], ["build", "--help"]], HEAVY) == []


def test_root_help_does_not_even_load_pydantic():
    # The emulator's defaults (Kaggle's session limit) are read here: from a stdlib module.
    assert loaded_by([["--help"]], ("pydantic",)) == []


def test_unknown_command_and_option_are_one_line_bad_input(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert main(["build", "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--no-such-option" in err
