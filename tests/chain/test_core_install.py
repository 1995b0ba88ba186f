"""The core install orchestrates a chain on its own: `chain step`, `status`, `pull-artifacts`
and `report` run without torch, stable-baselines3 or gymnasium, because a chain carries the
runtime bundle it rendered at `chain start` (where the `[kernel]` extra is installed).

The emulator and `chain start` run in this full venv; the commands under test run in a core
install: stood in for by an import blocker (`core_install.py`) in the default suite, and a
real venv with `pip install -e <repo>` (no extras) in the slow one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.chain.bundle import BUNDLE_ZIP, bundle_dir, load_bundle
from orchestrator.chain.start import start_chain
from orchestrator.errors import UserError
from orchestrator.ledger import Ledger
from orchestrator.settings import load_settings
from tests.support import REPO_ROOT
from tests.support.core_install import core_only_env
from tests.support.project import ChainProject, project_toml
from tests.support.tools import missing_tool

CHAIN = "core-chain"


def _run_chain_to_the_end(run, name: str, timeout: float = 240) -> list[str]:
    """`chain step` until the chain is done; every step must exit 0."""
    said = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = run("chain", "step", name)
        assert step.returncode == 0, step.stderr
        said.append(step.stdout.strip())
        if f"{name}: done" in step.stdout:
            return said
        time.sleep(0.5)
    raise AssertionError(f"chain {name} not done within {timeout} s: {said[-3:]}")


def _check_core_commands(project: Path, run) -> None:
    """A chain started with the full install, carried to its end and reported by `run`."""
    ledger = Ledger(project)
    chain = ledger.get_chain(CHAIN)
    stored = (bundle_dir(ledger, CHAIN) / BUNDLE_ZIP).read_bytes()
    assert chain.runtime_sha256 and load_bundle(ledger, chain).data == stored

    said = _run_chain_to_the_end(run, CHAIN)
    assert any("pushed segment 2" in line for line in said), said
    for segment in (1, 2):  # both sessions ran the runtime rendered at chain start
        script = project / "build" / "kernels" / f"{CHAIN}-s{segment}" / f"{CHAIN}-s{segment}.py"
        assert f'BUNDLE_SHA256 = "{chain.runtime_sha256}"' in script.read_text()

    status = run("chain", "status", CHAIN, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "done"

    shutil.rmtree(project / "runs" / f"{CHAIN}-s1")
    pulled = run("pull-artifacts", f"{CHAIN}-s1")
    assert pulled.returncode == 0, pulled.stderr
    assert (project / "runs" / f"{CHAIN}-s1" / "session_summary.json").is_file()

    report = run("chain", "report", CHAIN)
    assert report.returncode == 0, report.stderr
    assert (project / "reports" / CHAIN / "report.html").is_file()
    assert (project / "reports" / CHAIN / "learning_curve.png").is_file()


def _runner(project: ChainProject, env: dict[str, str], command: list[str]):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*command, *args],
            cwd=project.dir,
            env={**project.env(), **env},
            capture_output=True,
            text=True,
            timeout=300,
        )

    return run


def _blocked_runner(project: ChainProject, tmp_path: Path):
    return _runner(
        project, core_only_env(tmp_path / "core"), [sys.executable, "-m", "orchestrator"]
    )


def test_the_blocker_hides_the_kernel_extra(tmp_path) -> None:
    env = {**os.environ, **core_only_env(tmp_path / "core")}
    for module in ("torch", "stable_baselines3", "gymnasium", "uvicorn"):
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True
        )
        assert done.returncode != 0 and "core install" in done.stderr, module
    code = "from orchestrator.build import render_bundle, embedded_packages_files; embedded_packages_files()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "kaggle-orchestrate[kernel]" in done.stderr


def test_the_emulator_asks_for_the_kernel_extra(tmp_path) -> None:
    env = {**os.environ, **core_only_env(tmp_path / "core")}
    serve = ["emulator", "serve", "--root", str(tmp_path / "emu"), "--users", "alice:key"]
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *serve], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert "the emulator needs starlette, uvicorn, torch, gymnasium" in done.stderr
    assert "kaggle-orchestrate[kernel]" in done.stderr


@pytest.mark.slow  # the fast tier stays under 4 minutes; make test runs it
def test_a_core_install_steps_pulls_and_reports_a_chain(emulator, chain_project, tmp_path) -> None:
    project = chain_project(emulator, total=1000)
    project.cli("chain", "start", CHAIN, "--segments", "500,500", check=True)  # full install
    _check_core_commands(project.dir, _blocked_runner(project, tmp_path))


def test_a_chain_from_before_stored_runtimes_steps_on_a_full_install(
    emulator, chain_project, tmp_path
) -> None:
    project = chain_project(emulator, total=1000)
    project.cli("chain", "start", CHAIN, "--segments", "1000", check=True)
    # What the previous code left: no runtime field in the ledger, no bundle beside it.
    ledger_file = project.dir / ".orchestrate" / "ledger.json"
    document = json.loads(ledger_file.read_text())
    del document["chains"][CHAIN]["runtime_sha256"]
    ledger_file.write_text(json.dumps(document))
    shutil.rmtree(bundle_dir(project.ledger, CHAIN))

    core = _blocked_runner(project, tmp_path)("chain", "step", CHAIN)
    assert core.returncode == 2, core.stderr
    assert "stable_baselines3 is not installed here" in core.stderr
    assert "pip install 'kaggle-orchestrate[kernel]'" in core.stderr

    full = project.cli("chain", "step", CHAIN)
    assert full.returncode == 0 and "pushed segment 1" in full.stdout, full.stderr


def test_a_lost_or_changed_runtime_bundle_stops_the_chain(tmp_path) -> None:
    (tmp_path / "orchestrate.toml").write_text(project_toml("http://127.0.0.1:9/api/v1"))
    ledger = Ledger(tmp_path)
    chain = start_chain(
        load_settings(tmp_path / "orchestrate.toml"), ledger, CHAIN, owner="alice", segments=[3000]
    )
    assert load_bundle(ledger, chain).sha256 == chain.runtime_sha256
    stored = bundle_dir(ledger, CHAIN) / BUNDLE_ZIP
    stored.write_bytes(stored.read_bytes() + b"\0")
    with pytest.raises(UserError, match="not the one it started with"):
        load_bundle(ledger, chain)
    stored.unlink()
    with pytest.raises(UserError, match="runtime bundle, rendered at chain start, is unreadable"):
        load_bundle(ledger, chain)
    # A second start under the same name leaves the first chain's runtime alone.
    stored.write_bytes(b"kept")
    with pytest.raises(UserError, match="already exists"):
        start_chain(
            load_settings(tmp_path / "orchestrate.toml"),
            ledger,
            CHAIN,
            owner="alice",
            segments=[3000],
        )
    assert stored.read_bytes() == b"kept"


def test_preflight_names_each_check_a_core_install_skips(emulator, chain_project, tmp_path) -> None:
    project = chain_project(emulator, total=1000)
    full = project.cli("preflight", "--offline")
    core = _blocked_runner(project, tmp_path)("preflight", "--offline")
    assert core.returncode == full.returncode, (core.stderr, full.stderr)
    skipped = [
        line for line in core.stdout.splitlines() if line.startswith("- ") and "skipped:" in line
    ]
    assert [line.split(":")[0] for line in skipped] == [
        "- kernel renders",
        "- embedded runtime",
        "- env",
        "- model",
    ], core.stdout
    assert all("kaggle-orchestrate[kernel]" in line for line in skipped)
    assert "✔ model:" in full.stdout and "skipped" not in full.stdout


# -- a real core install ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def core_venv(tmp_path_factory) -> Path:
    """A venv with `pip install -e <repo>`: the core dependencies only, from the registry."""
    venv = tmp_path_factory.mktemp("core-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "-e", str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        missing_tool(f"could not install the core: {done.stderr.strip()[-500:]}")
    return venv


@pytest.mark.slow
def test_a_real_core_venv_steps_pulls_and_reports_a_chain(
    emulator, chain_project, core_venv
) -> None:
    python = core_venv / "bin" / "python"
    for module in ("torch", "stable_baselines3", "gymnasium", "uvicorn"):
        assert subprocess.run(
            [str(python), "-c", f"import {module}"], capture_output=True
        ).returncode
    project = chain_project(emulator, total=1000)
    project.cli("chain", "start", CHAIN, "--segments", "500,500", check=True)  # full install
    orchestrate = [str(core_venv / "bin" / "orchestrate")]
    _check_core_commands(project.dir, _runner(project, {"PYTHONPATH": ""}, orchestrate))
