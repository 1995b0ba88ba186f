"""Bad input ends as exactly one `error:` line on stderr, exit 2, and nothing written."""

from __future__ import annotations

import pytest

from tests.support.cli import clean_env, files_under, orchestrate, run_main
from tests.support.project import write_project


@pytest.fixture
def project(tmp_path):
    directory = tmp_path / "project"
    write_project(directory, kaggle='owner = "alice"')
    return directory


def assert_one_line_bad_input(result, needle):
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_line(result.stderr, needle)


def assert_one_line(stderr, needle):
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["build", "--set", "run.algoo=PPO"], "unknown key 'algoo'"),
        (["build", "--set", "run.total_timesteps=-5"], "total_timesteps"),
        (["build", "--slug", "abc"], "shorter than 5"),
        (["build", "--slug", "Bad_Slug!"], "lowercase"),
        (["build", "--title", "Hi"], "title"),
        (["build", "--title", "Unrelated Title"], "slugifies"),
        (["build", "--accelerator", "QuantumX"], "unknown accelerator"),
        (["launch", "--slug", "abc"], "shorter than 5"),
        (["launch", "--accelerator", "QuantumX"], "unknown accelerator"),
        (["preflight", "--set", "run.algoo=PPO"], "unknown key"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    project, tmp_path, monkeypatch, capsys, args, needle
):
    before = files_under(project)
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config")}
    code, _, err = run_main(monkeypatch, capsys, *args, cwd=project, env=env)
    assert code == 2, err
    assert_one_line(err, needle)
    assert "Value error" not in err  # pydantic's prefix is noise before our own sentence
    assert files_under(project) == before


def test_build_outside_a_project_says_to_run_init(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = orchestrate("build", cwd=outside, env=clean_env(home=tmp_path / "home"))
    assert_one_line_bad_input(result, "run `orchestrate init`")
    assert files_under(outside) == set()


def test_bad_config_file_is_one_line(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "orchestrate.toml").write_text('[run]\nalgo = "XYZ"\n')
    result = orchestrate("build", cwd=project, env=clean_env(home=tmp_path / "home"))
    assert_one_line_bad_input(result, "algo")
    assert files_under(project) == {"orchestrate.toml"}


def test_launch_without_credentials_is_one_line(project, tmp_path):
    before = files_under(project)
    result = orchestrate("launch", cwd=project, env=clean_env(home=tmp_path / "home"))
    assert_one_line_bad_input(result, "credentials")
    assert files_under(project) == before  # no ledger entry, no kernel folder


def test_init_refuses_to_overwrite(tmp_path):
    env = clean_env(home=tmp_path / "home")
    first = orchestrate("init", "--slug", "my-first-run", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    original = (tmp_path / "orchestrate.toml").read_text()
    again = orchestrate("init", "--slug", "another-run", cwd=tmp_path, env=env)
    assert_one_line_bad_input(again, "--force")
    assert (tmp_path / "orchestrate.toml").read_text() == original
    forced = orchestrate("init", "--slug", "another-run", "--force", cwd=tmp_path, env=env)
    assert forced.returncode == 0
    assert 'slug = "another-run"' in (tmp_path / "orchestrate.toml").read_text()


def test_init_then_build_round_trip(tmp_path):
    env = clean_env(home=tmp_path / "home")
    assert orchestrate("init", "--slug", "round-trip", cwd=tmp_path, env=env).returncode == 0
    result = orchestrate("build", "--owner", "alice", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    import json

    report = json.loads(result.stdout)
    assert report["metadata"]["id"] == "alice/round-trip"
    assert (tmp_path / "build" / "kernels" / "round-trip" / "round-trip.py").is_file()


def test_build_without_owner_or_credentials_is_one_line(tmp_path):
    env = clean_env(home=tmp_path / "home")
    write_project(tmp_path / "p")
    result = orchestrate("build", cwd=tmp_path / "p", env=env)
    assert_one_line_bad_input(result, "owner")


def test_kaggle_client_errors_map_to_the_documented_exit_codes():
    from orchestrator import kaggle
    from orchestrator.commands.exits import exit_code_for

    expected = {
        kaggle.CredentialsNotFound("x"): 2,
        kaggle.AuthenticationError("x"): 2,
        kaggle.BadRequest("x"): 2,
        kaggle.Throttled("x"): 3,
        kaggle.ServiceUnavailable("x"): 3,
        kaggle.CapacityRefused("x"): 3,
        kaggle.QuotaExhausted("x"): 3,
        kaggle.AmbiguousPush("x"): 3,
    }
    assert {type(e).__name__: exit_code_for(e) for e in expected} == {
        type(e).__name__: code for e, code in expected.items()
    }
    assert exit_code_for(RuntimeError("a bug")) is None  # bugs keep their traceback
