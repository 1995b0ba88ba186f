"""Run a GitHub Actions job's shell steps as a runner would, to test a workflow as written.

What a hosted runner does around `run:` steps is done here in its smallest form: each script
runs under `bash -e` in the workspace, with the workflow's, job's and step's `env:`
(`${{ secrets.X }}` and `${{ inputs.X }}` filled in; any other expression in a `run:` step is
refused, so the recipe stays runnable), `$GITHUB_PATH` and `$GITHUB_STEP_SUMMARY` files,
and `if: always()` steps run after a failure while the others are skipped. `uses:` steps
(checkout, setup-python, cache, upload) are the caller's to stand in for: they are skipped.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

EXPRESSION = re.compile(r"\$\{\{\s*(secrets|inputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass
class StepRun:
    name: str
    outcome: str  # "success", "failure", "skipped" (after a failure), "uses" (not run here)
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""


def load_workflow(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _expand(values: dict | None, context: dict[str, dict[str, str]]) -> dict[str, str]:
    expanded = {}
    for key, value in (values or {}).items():
        text = EXPRESSION.sub(lambda m: context[m.group(1)].get(m.group(2), ""), str(value))
        assert "${{" not in text, f"env {key}: an expression this runner does not know: {value}"
        expanded[key] = text
    return expanded


def run_job(
    workflow: dict,
    job_name: str,
    workspace: Path,
    *,
    base_env: dict[str, str],
    secrets: dict[str, str],
    inputs: dict[str, str],
    runner_temp: Path,
    timeout: float = 300,
) -> list[StepRun]:
    job = workflow["jobs"][job_name]
    context = {"secrets": secrets, "inputs": inputs}
    runner_temp.mkdir(parents=True, exist_ok=True)
    github_path = runner_temp / "github_path"
    summary = runner_temp / "step_summary.md"
    github_path.write_text("")
    env = {
        **base_env,
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(workspace),
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_PATH": str(github_path),
        "GITHUB_STEP_SUMMARY": str(summary),
        **_expand(workflow.get("env"), context),
        **_expand(job.get("env"), context),
    }
    failed = False
    runs: list[StepRun] = []
    for index, step in enumerate(job["steps"]):
        name = step.get("name") or step.get("uses") or f"step {index}"
        if "run" not in step:
            runs.append(StepRun(name, "uses"))
            continue
        condition = step.get("if")
        assert condition in (None, "always()"), f"{name}: this runner knows only `if: always()`"
        if failed and condition != "always()":
            runs.append(StepRun(name, "skipped"))
            continue
        assert "${{" not in step["run"], f"{name}: pass expressions through env:, not the script"
        added = [line for line in github_path.read_text().splitlines() if line.strip()]
        step_env = {**env, **_expand(step.get("env"), context)}
        step_env["PATH"] = ":".join([*reversed(added), env["PATH"]])
        script = runner_temp / f"step-{index}.sh"
        script.write_text(step["run"])
        done = subprocess.run(
            ["bash", "-e", str(script)],
            cwd=workspace,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        outcome = "success" if done.returncode == 0 else "failure"
        failed = failed or done.returncode != 0
        runs.append(StepRun(name, outcome, done.returncode, done.stdout, done.stderr))
    return runs
