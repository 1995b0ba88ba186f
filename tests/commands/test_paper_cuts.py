"""Small things a first-use review tripped on (issue #9), each tried as the user tried it."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import typer

from orchestrator.commands import app
from orchestrator.ledger import Ledger, RunRecord
from tests.support.cli import clean_env, emulator_cli_env, orchestrate, run_main
from tests.support.kaggle_fakes import mock_client
from tests.support.project import launch_quick_test, write_project

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def project(tmp_path):
    return write_project(tmp_path / "project", kaggle='owner = "alice"').parent


# -- help ------------------------------------------------------------------------------------


def every_command():
    def walk(command, prefix):
        yield prefix, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*prefix, name])

    return list(walk(typer.main.get_command(app), []))


@pytest.mark.parametrize("path", [["plan"], ["chain", "run"]], ids=" ".join)
def test_help_on_80_columns_keeps_flag_names_whole_and_example_lines(path, tmp_path):
    result = orchestrate(*path, "--help", cwd=tmp_path, env=clean_env({"COLUMNS": "80"}))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    command = dict((" ".join(p), c) for p, c in every_command())[" ".join(path)]
    for param in command.params:
        for flag in [*param.opts, *param.secondary_opts]:
            if flag.startswith("--"):
                assert re.search(rf"(^|[\s,]){re.escape(flag)}(\s|$|,)", text, re.M), flag
    if path == ["plan"]:  # two example lines, not one run-together paragraph
        assert re.search(r"^  Without a summary: orchestrate plan", text, re.M), text


def test_every_help_page_fits_80_columns(monkeypatch, capsys):
    from orchestrator.commands import main

    monkeypatch.setenv("COLUMNS", "80")
    for path, command in every_command():
        assert main([*path, "--help"]) == 0
        text = capsys.readouterr().out
        too_long = [line for line in text.splitlines() if len(line) > 80]
        assert not too_long, (path, too_long)
        for param in command.params:
            for flag in param.opts:
                if flag.startswith("--"):
                    assert re.search(rf"(^|[\s,]){re.escape(flag)}(\s|$|,|=)", text, re.M), (
                        path,
                        flag,
                    )


# -- --json errors and exit codes ------------------------------------------------------------


def test_json_errors_are_a_json_object_on_stdout(emulator, project, tmp_path, monkeypatch, capsys):
    env = emulator.env("alice")
    for args, needle in [
        (("status", "no-such-run", "--json"), "no-such-run"),
        (("chain", "status", "no-such-chain", "--json"), "no chain"),
        (("build", "--slug", "abc", "--json"), "shorter than 5"),
        (("no-such-command", "--json"), "No such command"),
    ]:
        code, out, err = run_main(monkeypatch, capsys, *args, cwd=project, env=env)
        assert code == 2, (args, err)
        document = json.loads(out)
        assert document == {"error": document["error"], "exit_code": 2}
        assert needle in document["error"] and err.startswith("error: ")
    # Without --json, stdout stays empty: the error is the one stderr line.
    code, out, err = run_main(monkeypatch, capsys, "status", "no-such-run", cwd=project, env=env)
    assert (code, out) == (2, "") and err.count("\n") == 1


@pytest.mark.slow
def test_status_of_an_unknown_kernel_exits_2_as_watch_and_pull_do(emulator, project, tmp_path):
    env = emulator_cli_env(emulator, tmp_path)
    for command in ("status", "watch", "pull-artifacts"):
        result = orchestrate(command, "alice/no-such-kernel", cwd=project, env=env)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "NOT_FOUND" not in result.stdout


def test_status_of_a_kernel_kaggle_answers_404_for_exits_2(tmp_path):
    """Kaggle answers 403 for unknown kernels, but some reads say 404: the same exit 2."""
    from orchestrator.errors import UserError
    from orchestrator.runs import run_status
    from orchestrator.settings import load_settings

    def not_found(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"code": 404, "message": "Kernel not found"})

    write_project(tmp_path / "p", kaggle='owner = "alice"')
    settings = load_settings(tmp_path / "p" / "orchestrate.toml")
    ledger = Ledger(tmp_path / "p")
    client = mock_client(not_found)
    with client:
        with pytest.raises(UserError, match="not found on Kaggle"):
            run_status(settings, ledger, client, "alice/gone-kernel")
        # A run this ledger deleted is reported, not refused.
        ledger.record_intent(RunRecord(slug="gone-kernel", owner="alice"))
        ledger.update("gone-kernel", state="pulled", deleted_at="2026-01-01T00:00:00Z")
        report = run_status(settings, ledger, client, "gone-kernel")
    assert report["kernel_status"] == "NOT_FOUND"


# -- launch --slug ---------------------------------------------------------------------------


def test_launch_with_another_slug_gets_a_matching_title(emulator, project, tmp_path):
    env = emulator_cli_env(emulator, tmp_path)
    for slug, title in (("other-run", "Other Run"), ("tiny-dqn-v2", "Tiny Dqn v2")):
        result = orchestrate(
            "launch", "--slug", slug, "--skip-preflight", "--json", cwd=project, env=env
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["run"] == slug
        script = project / "build" / "kernels" / slug / "kernel-metadata.json"
        assert json.loads(script.read_text())["title"] == title


# -- quota and plan --------------------------------------------------------------------------


def test_quota_shows_gpu_and_tpu_hours_and_the_refresh(emulator, project, tmp_path):
    env = emulator_cli_env(emulator, tmp_path)
    result = orchestrate("quota", "--json", cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["gpu"] == {"used_h": 0.0, "allowed_h": 30.0, "left_h": 30.0}
    assert report["tpu"] == {"used_h": 0.0, "allowed_h": 20.0, "left_h": 20.0}
    assert report["refresh_time"].endswith("Z") and 0 < report["refresh_in_h"] <= 7 * 24
    human = orchestrate("quota", cwd=project, env=env)
    assert human.returncode == 0, human.stderr
    assert "GPU: 0.00 h used of 30.00 h, 30.00 h left" in human.stdout
    assert "TPU: 0.00 h used of 20.00 h, 20.00 h left" in human.stdout
    assert "refreshes " in human.stdout


def test_quota_with_refused_credentials_is_one_json_error(emulator, project, tmp_path):
    env = emulator_cli_env(emulator, tmp_path, KAGGLE_KEY="wrong-key")
    result = orchestrate("quota", "--json", cwd=project, env=env)
    assert result.returncode == 2, result.stderr
    assert json.loads(result.stdout)["exit_code"] == 2


def test_plan_states_calendar_time_beyond_the_weekly_quota(emulator, project, tmp_path):
    env = emulator_cli_env(emulator, tmp_path)
    flags = ("--s-per-step", "0.3", "--setup-s", "95", "--device", "gpu")
    flags += ("--session-limit-s", "43200", "--safety-factor", "1.25")
    result = orchestrate("plan", "--timesteps", "2000000", *flags, cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    assert "calendar time: about 7 weeks (209 GPU h at 30 h/week)" in result.stdout
    assert "209 GPU h ≈ 7 weeks at 30 h/week" in result.stdout
    small = orchestrate("plan", "--timesteps", "20000", *flags, "--json", cwd=project, env=env)
    assert json.loads(small.stdout)["calendar_weeks"] is None


# -- quick test, runs ------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_test_trains_for_its_minutes_and_runs_shows_the_time(emulator, tmp_path):
    project, env, _ = launch_quick_test(
        emulator, tmp_path, "--quick-minutes", "0.3", steps=1_000_000
    )
    pulled = orchestrate("pull-artifacts", "tiny-dqn-quick", cwd=project, env=env)
    assert pulled.returncode == 0, pulled.stderr
    summary = json.loads((project / "runs" / "tiny-dqn-quick" / "session_summary.json").read_text())
    assert summary["status"] == "budget_stop" and summary["session_limit_s"] == 18
    assert summary["timesteps_end"] > 2000  # more than the old fixed 2,000 steps

    terminal = {**env, "FORCE_COLOR": "1", "COLUMNS": "80"}
    runs = orchestrate("runs", cwd=project, env=terminal)
    assert runs.returncode == 0, runs.stderr
    created = Ledger(project).get("tiny-dqn-quick").created_at  # e.g. 2026-11-29T22:24:23Z
    shown = created.replace("T", " ")[:16]
    row = ANSI.sub("", runs.stdout).splitlines()[-1]
    assert "tiny-dqn-quick" in row and row.rstrip().endswith(shown), runs.stdout


def test_quick_test_variant_is_a_time_not_a_step_count():
    from kernel_template.config import RunConfig
    from orchestrator.launch import quick_test_variant

    config = RunConfig(total_timesteps=5_000_000, session_limit_s=43200, min_margin_s=900)
    quick, slug = quick_test_variant(config, "ppo-long")
    assert slug == "ppo-long-quick"
    assert quick.session_limit_s == 300 and quick.total_timesteps == 5_000_000
    assert quick.min_margin_s == 30  # a 15-minute floor would leave no time to train
    capped, _ = quick_test_variant(config, "ppo-long", steps=600, minutes=2)
    assert (capped.session_limit_s, capped.total_timesteps) == (120, 600)
