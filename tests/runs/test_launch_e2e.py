"""launch / status / runs / delete against the real emulator, running real tiny trainings."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from orchestrator.build import IMPORT_LOG_PREFIX, render_kernel
from orchestrator.errors import InfrastructureError
from orchestrator.kaggle import (
    VISIBILITY_GRACE_S,
    AmbiguousPush,
    Credentials,
    KaggleClient,
    RetryPolicy,
)
from orchestrator.launch import launch
from orchestrator.ledger import Ledger, RunRecord
from orchestrator.settings import load_settings
from tests.support.cli import emulator_cli_env, orchestrate, run_main
from tests.support.emulator import wait_terminal
from tests.support.project import launch_quick_test, write_project
from tests.support.tools import KAGGLE_CLI as KAGGLE
from tests.support.tools import missing_tool


def wait_listed(client, slug, timeout=30):
    deadline = time.monotonic() + timeout
    while (info := client.find_own_kernel("alice", slug)) is None:
        assert time.monotonic() < deadline, f"{slug} not listed after {timeout} s"
        time.sleep(0.2)
    return info


def client_for(emulator, user="alice"):
    credentials = Credentials(username=user, key=emulator.users[user])
    return KaggleClient(emulator.api_url, credentials, retry=RetryPolicy.fast())


@pytest.mark.slow
def test_quick_test_runs_for_real_and_its_summary_feeds_preflight(
    emulator, tmp_path, monkeypatch, capsys
):
    project, _, result = launch_quick_test(emulator, tmp_path, "--quick-steps", "600", steps=5000)
    assert "✔ embedded runtime" in result.stdout
    imported = [line for line in result.stdout.splitlines() if IMPORT_LOG_PREFIX in line]
    assert (
        imported and "/tmp/orchestrate-runtime-" in imported[0]
    )  # the embedded copy, not the repo's
    assert str(Path(__file__).resolve().parents[2]) not in imported[0]

    record = Ledger(project).get("tiny-dqn-quick")
    assert (record.state, record.kernel_status, record.version) == ("terminal", "COMPLETE", 1)
    quick_config = load_settings(project / "orchestrate.toml").run.model_copy(
        update={"total_timesteps": 600}
    )
    assert record.config_hash == quick_config.config_hash()

    def cli(*args):
        return run_main(monkeypatch, capsys, *args, cwd=project, env=emulator.env("alice"))

    code, out, _ = cli("runs", "--json")
    assert code == 0 and [r["run"] for r in json.loads(out)] == ["tiny-dqn-quick"]
    code, out, _ = cli("status", "tiny-dqn-quick", "--json")
    assert code == 0 and json.loads(out)["kernel_status"] == "COMPLETE"

    # Delete only after a verified pull.
    code, _, err = cli("delete", "tiny-dqn-quick")
    assert code == 2 and "pull-artifacts" in err
    code, _, err = cli("pull-artifacts", "tiny-dqn-quick", "--json")
    assert code == 0, err

    # The pulled quick test's summary now sizes the session budget.
    code, out, err = cli("preflight", "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 0, err
    assert checks["session budget"]["status"] == "pass"
    assert "session_summary.json" in checks["session budget"]["detail"]
    assert checks["credentials"]["status"] == "pass"

    code, _, err = cli("delete", "tiny-dqn-quick", "--json")
    assert code == 0, err
    code, out, _ = cli("status", "tiny-dqn-quick", "--json")
    assert json.loads(out)["kernel_status"] == "NOT_FOUND"

    # The slug is spent: launching it again is refused before any push; a new quick test gets -2.
    code, _, err = cli("launch", "--slug", "tiny-dqn-quick", "--skip-preflight")
    assert code == 2 and "already" in err
    assert emulator.call_counts().get("SaveKernel.accepted") == 1
    from orchestrator.launch import next_free_slug

    assert next_free_slug(Ledger(project), "tiny-dqn-quick") == "tiny-dqn-quick-2"


GRID_ENV = """\
import gymnasium as gym
import numpy as np


class GridEnv(gym.Env):
    \"\"\"A tiny custom env that exists only in the user's project, not in kernel_template.\"\"\"

    observation_space = gym.spaces.Box(0.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(4, np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.full(4, self.t / 20, np.float32)
        return obs, float(action), self.t >= 20, False, {}
"""


def test_official_cli_pushes_a_rendered_folder_that_runs_unchanged(emulator, tmp_path):
    """A kernel with a user env package, pushed by `kaggle kernels push`, trains to COMPLETE."""
    if not KAGGLE.exists():
        missing_tool("the official kaggle CLI is not installed")
    project = tmp_path / "project"
    write_project(
        project,
        slug="official-push",
        title="Official Push",
        kaggle='owner = "alice"',
        env="gridpkg.grid:GridEnv",
        kernel_extra='user_modules = ["gridpkg"]',
    )
    (project / "gridpkg").mkdir()
    (project / "gridpkg" / "__init__.py").write_text("")
    (project / "gridpkg" / "grid.py").write_text(GRID_ENV)
    settings = load_settings(project / "orchestrate.toml")
    folder = render_kernel(
        settings, settings.run, slug="official-push", out_dir=tmp_path / "kernel"
    )
    pushed = subprocess.run(
        [str(KAGGLE), "kernels", "push", "-p", str(folder.path)],
        env=emulator.subprocess_env("alice"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "does not resolve" not in pushed.stdout  # the title slugifies to the slug
    with client_for(emulator) as client:
        assert wait_terminal(client, "alice", "official-push", timeout=180) == "COMPLETE"
        listing = client.list_output("alice", "official-push")
        info = client.get_kernel("alice", "official-push")
    names = {f.name for f in listing.files}
    assert {"session_summary.json", "artifacts.zip", "artifacts.zip.sha256"} <= names
    assert any(IMPORT_LOG_PREFIX in entry.data for entry in listing.log)
    assert info.source == folder.script_path.read_text()


class AmbiguousAfterPush(KaggleClient):
    """The push reaches Kaggle, then the answer is lost and Kaggle stops answering listings."""

    def __init__(self, emulator, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.emulator = emulator

    def push(self, spec):
        super().push(spec)
        self.emulator.set_faults("ListKernels=503*40")
        raise AmbiguousPush("connection reset after the request was sent", ref=spec.id)


def test_ambiguous_push_is_settled_by_asking_kaggle_never_by_pushing_again(
    emulator_factory, tmp_path
):
    emulator = emulator_factory(read_lag="3:3")  # a new kernel is unlisted for 3 s
    project = tmp_path / "project"
    write_project(project, slug="ambiguous-run", title="Ambiguous Run", kaggle='owner = "alice"')
    settings = load_settings(project / "orchestrate.toml")
    ledger = Ledger(project)
    credentials = Credentials(username="alice", key=emulator.users["alice"])
    lossy = AmbiguousAfterPush(emulator, emulator.api_url, credentials, retry=RetryPolicy.fast())
    with lossy, pytest.raises(InfrastructureError, match="may or may not"):
        launch(settings, settings.run, client=lossy, ledger=ledger, preflight=False)
    assert ledger.get("ambiguous-run").state == "intent"

    emulator.clear_faults()
    with client_for(emulator) as client:
        # Not listed yet (the lag): absence proves nothing, so nothing is pushed.
        with pytest.raises(InfrastructureError, match="run the same command again in"):
            launch(settings, settings.run, client=client, ledger=ledger, preflight=False)
        deadline = time.monotonic() + 30
        while client.find_own_kernel("alice", "ambiguous-run") is None:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        record = launch(settings, settings.run, client=client, ledger=ledger, preflight=False)
        assert record.state == "pushed" and record.version == 1
        assert emulator.call_counts().get("SaveKernel.accepted") == 1  # adopted, not pushed again
        assert client.status("alice", "ambiguous-run").status != "ERROR"


def test_intent_left_by_a_crash_before_the_push_is_pushed_once(emulator, tmp_path):
    project = tmp_path / "project"
    write_project(project, slug="crashed-run", title="Crashed Run", kaggle='owner = "alice"')
    settings = load_settings(project / "orchestrate.toml")
    ledger = Ledger(project)
    # The orchestrator wrote its intent, then died before the push; later (past the grace in
    # which an unlisted push may still appear) the launch is run again.
    written = datetime.now(timezone.utc) - timedelta(seconds=VISIBILITY_GRACE_S + 1)
    ledger.record_intent(
        RunRecord(slug="crashed-run", owner="alice", created_at=written.isoformat())
    )
    with client_for(emulator) as client:
        record = launch(settings, settings.run, client=client, ledger=ledger, preflight=False)
        assert record.state == "pushed"
        assert emulator.call_counts().get("SaveKernel.accepted") == 1
        assert wait_listed(client, "crashed-run").current_version_number == 1


def test_intent_left_by_a_crash_is_not_pushed_within_the_grace(emulator, tmp_path):
    """Within the grace an unlisted intent may be a push Kaggle does not list yet."""
    project = tmp_path / "project"
    write_project(project, slug="fresh-intent", title="Fresh Intent", kaggle='owner = "alice"')
    settings = load_settings(project / "orchestrate.toml")
    ledger = Ledger(project)
    ledger.record_intent(RunRecord(slug="fresh-intent", owner="alice"))
    with client_for(emulator) as client, pytest.raises(InfrastructureError, match="again in"):
        launch(settings, settings.run, client=client, ledger=ledger, preflight=False)
    assert emulator.call_counts().get("SaveKernel", 0) == 0


@pytest.mark.slow  # test_capacity, chain/test_harsh_kaggle check both fast; make test runs it
def test_gpu_session_cap_refuses_before_and_at_the_push(emulator_factory, tmp_path):
    emulator = emulator_factory(gpu_slots=1)
    busy = tmp_path / "busy"
    write_project(
        busy, slug="busy-gpu", title="Busy Gpu", accelerator="NvidiaTeslaT4", steps=10_000_000
    )
    env = emulator_cli_env(emulator, tmp_path)
    first = orchestrate(
        "launch", "--skip-preflight", "--set", "kaggle.gpu_session_cap=1", cwd=busy, env=env
    )
    assert first.returncode == 0, first.stderr
    try:
        # Same project: the ledger knows the busy run, so nothing is pushed.
        write_project(
            busy / "second", slug="second-gpu", title="Second Gpu", accelerator="NvidiaTeslaT4"
        )
        refused = orchestrate(
            "launch",
            "--skip-preflight",
            "--set",
            "kaggle.gpu_session_cap=1",
            "--config",
            str(busy / "orchestrate.toml"),
            "--slug",
            "second-gpu",
            "--title",
            "Second Gpu",
            cwd=busy,
            env=env,
        )
        assert refused.returncode == 3, refused.stderr
        assert "busy-gpu" in refused.stderr and len(refused.stderr.splitlines()) == 1
        assert Ledger(busy).get("second-gpu") is None

        # Another project (its own ledger): Kaggle itself refuses the push.
        other = tmp_path / "other"
        write_project(other, slug="other-gpu", title="Other Gpu", accelerator="NvidiaTeslaT4")
        capped = orchestrate("launch", "--skip-preflight", cwd=other, env=env)
        assert capped.returncode == 3, capped.stderr
        record = Ledger(other).get("other-gpu")
        assert record.state == "failed_push" and "session" in record.failure_message.lower()
    finally:
        emulator.kill_kernel("alice", "busy-gpu")
