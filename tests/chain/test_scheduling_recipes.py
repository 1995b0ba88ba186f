"""The scheduling recipes of docs/scheduling.md, run as written against the real emulator.

* GitHub Actions: docs/github-actions-chain.yml's shell steps in fresh clones of a fresh
  repository, three runs in a row (start + push; pull + push + report; an ALERT), with an
  `orchestrate` that cannot find the `[kernel]` extra (the core install), whose `chain start`
  sees only the source of stable-baselines3 the recipe keeps for it.
* cron: the documented crontab command mails (prints) ALERTs and nothing on a quiet step.
* systemd: the documented units pass `systemd-analyze verify`, and `Persistent=` has a
  calendar timer to act on.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chain_helpers import REPO_ROOT, project_toml
from core_install import KERNEL_EXTRA_MODULES, core_only_env
from workflow_runner import load_workflow, run_job

from orchestrator.kaggle import Credentials, KaggleClient
from orchestrator.kaggle.errors import KernelNotVisible

WORKFLOW = REPO_ROOT / "docs" / "github-actions-chain.yml"
SCHEDULING = REPO_ROOT / "docs" / "scheduling.md"
LEDGER_BRANCH = "orchestrate-ledger"
CHAIN = "ci-chain"
# The recipe keeps the source `chain start` embeds here, under the cached venv.
KERNEL_SOURCE = "kernel-source"


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def core_orchestrate(bin_dir: Path, blocker: Path) -> Path:
    """An `orchestrate` of the core install: this repository, without the `[kernel]` extra
    (PYTHONPATH entries the caller sets come first and stay visible)."""
    [pythonpath] = core_only_env(blocker).values()
    bin_dir.mkdir(parents=True, exist_ok=True)
    command = bin_dir / "orchestrate"
    command.write_text(
        "#!/bin/sh\n"
        f'PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{pythonpath}" exec "{sys.executable}" -m orchestrator "$@"\n'
    )
    command.chmod(0o755)
    return command


def kernel_source(target: Path) -> None:
    """What `pip install --no-deps --target` leaves for stable-baselines3: its package and
    metadata (links to this venv's copy; the blocker hides only the venv's own path)."""
    import importlib.metadata

    dist = importlib.metadata.distribution("stable-baselines3")
    target.mkdir(parents=True, exist_ok=True)
    package = Path(str(dist.locate_file("stable_baselines3")))
    (target / "stable_baselines3").symlink_to(package, target_is_directory=True)
    [metadata] = [f for f in dist.files or () if f.name == "METADATA"]
    info = Path(str(dist.locate_file(metadata))).parent  # the .dist-info dir
    (target / info.name).symlink_to(info, target_is_directory=True)


def _base_env(home: Path) -> dict[str, str]:
    python_dir = home / "python-bin"  # what actions/setup-python puts on PATH
    python_dir.mkdir(parents=True, exist_ok=True)
    if not (python_dir / "python").exists():
        (python_dir / "python").symlink_to(sys.executable)
    return {
        "PATH": f"{python_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }


def _ledger_on_branch(origin: Path) -> dict:
    return json.loads(_git("--git-dir", str(origin), "show", f"{LEDGER_BRANCH}:ledger.json"))


def _wait_terminal(api_url: str, key: str, slug: str, timeout: float = 180) -> str:
    with KaggleClient(api_url, Credentials(username="alice", key=key)) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = client.status("alice", slug)
            except KernelNotVisible:  # read-after-write lag
                status = None
            if status is not None and status.is_terminal:
                return status.status
            time.sleep(0.5)
    raise AssertionError(f"{slug} did not end within {timeout} s")


@pytest.mark.slow
def test_github_actions_recipe_runs_as_written_in_fresh_clones(emulator, tmp_path) -> None:
    workflow = load_workflow(WORKFLOW)
    key = emulator.users["alice"]
    secrets = {"KAGGLE_USERNAME": "alice", "KAGGLE_KEY": key}

    # A fresh repository: the project and the workflow, nothing else.
    origin = tmp_path / "origin.git"
    _git("init", "--quiet", "--bare", "-b", "main", str(origin))
    seed = tmp_path / "seed"
    seed.mkdir()
    _git("init", "--quiet", "-b", "main", cwd=seed)
    toml = project_toml(emulator.api_url, slug=CHAIN, total=1000)
    (seed / "orchestrate.toml").write_text(toml + "\n[chain]\nmax_unknowns = 1\n")
    (seed / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(WORKFLOW, seed / ".github" / "workflows" / "chain.yml")
    _git("add", "-A", cwd=seed)
    _git("commit", "--quiet", "-m", "project", cwd=seed)
    _git("push", "--quiet", str(origin), "main", cwd=seed)

    home = tmp_path / "home"
    # A cache hit of the workflow's venv: the install step finds `orchestrate` and adds it
    # to PATH (the cache-miss pip lines are checked against pyproject.toml below).
    core_orchestrate(home / ".orchestrate-venv" / "bin", tmp_path / "not-installed")
    kernel_source(home / ".orchestrate-venv" / KERNEL_SOURCE)

    def run(number: int, inputs: dict[str, str]) -> dict[str, object]:
        workspace = tmp_path / f"run-{number}" / "workspace"
        _git("clone", "--quiet", "--depth", "1", f"file://{origin}", str(workspace))
        steps = run_job(
            workflow,
            "step",
            workspace,
            base_env={**_base_env(home), "GITHUB_RUN_ID": str(number)},
            secrets=secrets,
            inputs=inputs,
            runner_temp=tmp_path / f"run-{number}" / "temp",
        )
        return {s.name: s for s in steps}

    # Run 1, from "Run workflow" with start arguments: the branch is made, segment 1 pushed.
    first = run(1, {"start": f"{CHAIN} --segments 500,500"})
    failed = {n: s.stderr[-1500:] for n, s in first.items() if s.outcome == "failure"}
    assert not failed, failed
    assert "no branch orchestrate-ledger yet" in first["Restore the ledger from its branch"].stdout
    ledger = _ledger_on_branch(origin)
    assert list(ledger["runs"]) == [f"{CHAIN}-s1"]
    runtime = f"chains/{CHAIN}/runtime.zip"  # what a core-install step pushes again
    assert runtime in _git("--git-dir", str(origin), "ls-tree", "-r", "--name-only", LEDGER_BRANCH)
    assert emulator.call_counts()["SaveKernel.accepted"] == 1

    _wait_terminal(emulator.api_url, key, f"{CHAIN}-s1")

    # Run 2, scheduled, in a new clone: the ledger comes back from the branch, so segment 1 is
    # pulled (not pushed again), segment 2 pushed, and the report kept on the branch.
    second = run(2, {})
    failed = {n: s.stderr[-1500:] for n, s in second.items() if s.outcome == "failure"}
    assert not failed, failed
    ledger = _ledger_on_branch(origin)
    assert ledger["runs"][f"{CHAIN}-s1"]["state"] == "pulled"
    assert ledger["runs"][f"{CHAIN}-s1"]["pulled_dir"] == f"runs/{CHAIN}-s1"
    assert f"{CHAIN}-s2" in ledger["runs"]
    assert emulator.call_counts()["SaveKernel.accepted"] == 2
    files = _git("--git-dir", str(origin), "ls-tree", "-r", "--name-only", LEDGER_BRANCH).split()
    assert (
        f"reports/{CHAIN}/report.html" in files and f"reports/{CHAIN}/learning_curve.png" in files
    )

    # Run 3: Kaggle answers the status read with an error; max_unknowns = 1 makes it an ALERT,
    # which fails the job visibly while the ledger and report are still kept.
    emulator.set_faults("GetKernelSessionStatus=400*1")
    third = run(3, {})
    advance = third["Advance every active chain by one step"]
    assert advance.outcome == "failure" and advance.returncode == 1, advance.stderr
    assert f"ALERT chain {CHAIN}:" in advance.stderr
    assert re.search(rf"^::error title=orchestrate ALERT::chain {CHAIN}: ", advance.stdout, re.M)
    kept = {n: s.outcome for n, s in third.items() if n.startswith(("Report", "Keep"))}
    assert set(kept.values()) == {"success"}, {n: third[n].stderr for n in kept}
    ledger = _ledger_on_branch(origin)
    alerts = [n for n in ledger["chains"][CHAIN]["notes"] if n["level"] == "alert"]
    assert alerts and "could not read Kaggle" in alerts[-1]["message"]
    # A fresh runner has no runs/: the report pulled segment 1 again, complete.
    report = third["Report every chain"]
    assert "incomplete" not in report.stderr, report.stderr
    assert emulator.call_counts()["SaveKernel.accepted"] == 2  # nothing pushed twice

    history = _git("--git-dir", str(origin), "log", "-p", LEDGER_BRANCH)
    assert key not in history


def test_github_actions_installs_the_core_only() -> None:
    """The cache-miss install: the package without extras (its own dependencies as
    pyproject.toml declares them), and apart from it, for `chain start`, the pinned source
    of what the kernel embeds, without dependencies."""
    import tomllib
    from packaging.requirements import Requirement

    workflow = load_workflow(WORKFLOW)
    [install] = [s for s in workflow["jobs"]["step"]["steps"] if "Install" in s.get("name", "")]
    lines = [line.strip() for line in install["run"].splitlines()]
    assert not Requirement(workflow["env"]["ORCHESTRATE_PACKAGE"]).extras
    [core] = [line for line in lines if "pip" in line and "--no-deps" not in line]
    assert shlex.split(core)[1:] == ["install", "--quiet", "$ORCHESTRATE_PACKAGE"]
    [source] = [line for line in lines if "--no-deps" in line]
    words = shlex.split(source)
    assert words[words.index("--target") + 1] == f"$venv/{KERNEL_SOURCE}"
    sb3 = Requirement(words[-1])  # pinned: a chain's segments must all carry the same version
    [pinned] = [spec.version for spec in sb3.specifier if spec.operator == "=="]
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    core_deps = {Requirement(r).name.replace("-", "_") for r in project["dependencies"]}
    assert not core_deps & set(KERNEL_EXTRA_MODULES)
    kernel = {
        Requirement(r).name: Requirement(r) for r in project["optional-dependencies"]["kernel"]
    }
    assert kernel[sb3.name].specifier.contains(pinned)


def _cron_command() -> str:
    block = SCHEDULING.read_text().split("```cron", 1)[1].split("```", 1)[0]
    [entry] = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return entry.split(None, 5)[5]  # after minute, hour, day of month, month, day of week


def test_cron_line_mails_alerts_and_stays_quiet_otherwise(emulator, tmp_path) -> None:
    project = tmp_path / "traffic"
    project.mkdir()
    toml = project_toml(emulator.api_url, slug=CHAIN, total=1000)
    (project / "orchestrate.toml").write_text(toml + "\n[chain]\nmax_unknowns = 1\n")
    orchestrate = core_orchestrate(tmp_path / "venv" / "bin", tmp_path / "not-installed")
    command = _cron_command()
    assert (
        "/home/me/traffic" in command
        and "/home/me/kaggle-orchestrate/.venv/bin/orchestrate" in command
    )
    command = command.replace("/home/me/kaggle-orchestrate/.venv/bin/orchestrate", str(orchestrate))
    command = command.replace("/home/me/traffic", str(project))
    env = {**emulator.subprocess_env("alice"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def cron() -> str:
        """What cron would mail: everything the command writes to its stdout and stderr."""
        done = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True)
        return done.stdout + done.stderr

    started = subprocess.run(  # where the [kernel] extra is installed: it renders the runtime
        [sys.executable, "-m", "orchestrator", "chain", "start", CHAIN, "--segments", "1000"],
        cwd=project,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
    )
    assert started.returncode == 0, started.stderr
    assert cron() == ""  # the push: logged, no mail
    log = (project / "chain-step.log").read_text()
    assert f"{CHAIN}: advanced" in log

    emulator.set_faults("GetKernelSessionStatus=400*1")
    mailed = cron()
    assert mailed.startswith(f"ALERT chain {CHAIN}: "), mailed
    assert mailed in (project / "chain-step.log").read_text()  # and kept in the log


def _ini_block(title: str) -> str:
    text = SCHEDULING.read_text()
    after = text.split(f"`~/.config/systemd/user/{title}`:", 1)[1]
    return after.split("```ini", 1)[1].split("```", 1)[0]


def test_systemd_units_verify_and_persistent_has_a_calendar(tmp_path) -> None:
    service, timer = _ini_block("orchestrate-chain.service"), _ini_block("orchestrate-chain.timer")
    # Persistent= only acts on OnCalendar= timers; with OnUnitActiveSec= alone it does nothing.
    if re.search(r"^Persistent=true", timer, re.M):
        assert re.search(r"^OnCalendar=", timer, re.M), timer
    assert not re.search(r"^OnUnitActiveSec=", timer, re.M) or not re.search(
        r"^Persistent=true", timer, re.M
    )
    assert re.search(r"^SuccessExitStatus=3$", service, re.M)  # 3 = try again later
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze to verify the units with")
    [calendar] = re.findall(r"^OnCalendar=(.+)$", timer, re.M)
    assert subprocess.run([analyze, "calendar", calendar], capture_output=True).returncode == 0
    units = tmp_path / "units"
    units.mkdir()
    fake_home = tmp_path / "home"
    (fake_home / "kaggle-orchestrate" / ".venv" / "bin").mkdir(parents=True)
    binary = fake_home / "kaggle-orchestrate" / ".venv" / "bin" / "orchestrate"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    (fake_home / "traffic").mkdir()
    (units / "orchestrate-chain.service").write_text(service.replace("%h", str(fake_home)))
    (units / "orchestrate-chain.timer").write_text(timer)
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(units / "orchestrate-chain.timer")],
        capture_output=True,
        text=True,
        cwd=units,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
