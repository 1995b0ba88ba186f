"""Preflight rehearses a user loop from the kernel's unpacked copy: a few steps, a
checkpoint and a resume, on this machine before any push."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.demo import write_loop_project
from orchestrator.preflight import run_preflight
from orchestrator.settings import load_settings
from tests.support.cli import clean_env, orchestrate
from tests.support.core_install import core_only_env


def loop_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    write_loop_project(
        project, user="alice", api_url="http://127.0.0.1:9/api/v1", total=600, segments=3
    )
    return project


def entrypoint_check(project: Path):
    settings = load_settings(project / "orchestrate.toml")
    report = run_preflight(settings, settings.run, offline=True)
    return report, {c.name: c for c in report.checks}["entrypoint"]


def test_the_example_loop_trains_checkpoints_and_resumes_in_preflight(tmp_path) -> None:
    report, check = entrypoint_check(loop_project(tmp_path))
    assert report.ok, [c.line() for c in report.failures]
    assert check.status == "pass", check.line()
    assert "regression:train trained 8 steps" in check.detail
    assert "resumed to step 16" in check.detail


def test_a_loop_that_never_checkpoints_fails_with_the_fix(tmp_path) -> None:
    project = loop_project(tmp_path)
    module = project / "regression.py"
    module.write_text(module.read_text().replace("session.checkpoint(", "print("))
    report, check = entrypoint_check(project)
    assert check.status == "fail" and not report.ok
    assert "left no checkpoint" in check.detail and "session.checkpoint" in check.fix


def test_a_loop_that_raises_fails_naming_the_error(tmp_path) -> None:
    project = loop_project(tmp_path)
    toml = project / "orchestrate.toml"
    toml.write_text(toml.read_text().replace("hidden = 32", 'hidden = "wide"'))
    report, check = entrypoint_check(project)
    assert check.status == "fail", check.line()
    assert "regression:train (first session): TypeError" in check.detail


def test_the_output_size_of_a_loop_comes_from_its_rehearsed_checkpoint(tmp_path) -> None:
    report, _check = entrypoint_check(loop_project(tmp_path))
    size = {c.name: c for c in report.checks}["output size"]
    assert size.status == "pass", size.line()
    assert "estimated from the rehearsal's" in size.detail and "MB checkpoint" in size.detail


def test_without_the_kernel_extra_a_loop_skips_its_entrypoint_not_env_and_model(
    tmp_path,
) -> None:
    project = loop_project(tmp_path)
    env = {**clean_env(home=tmp_path / "home"), **core_only_env(tmp_path / "blocker")}
    result = orchestrate("preflight", "--offline", "--json", cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["entrypoint"]["status"] == "skip"
    assert "not installed here" in checks["entrypoint"]["detail"]
    assert "env" not in checks and "model" not in checks
    assert checks["output size"]["status"] == "skip"
    assert "entrypoint rehearsal" in checks["output size"]["detail"]
