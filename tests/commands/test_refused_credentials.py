"""Issue #9 item 6: a wrong or revoked key is bad input (exit 2, the fix named) in every
command that talks to Kaggle, never "retry later" (3): schedules map 3 to success
(GitHub Actions recipe, systemd `SuccessExitStatus=3`), so a 3 would stall a chain unseen.

Each command family runs against the emulator (faithful default mode) as a user would,
with alice's name and a wrong key.
"""

from __future__ import annotations

import time

import pytest

from orchestrator.kaggle import Credentials, KaggleClient, PushSpec, RetryPolicy
from orchestrator.ledger import Ledger
from tests.support.cli import clean_env, orchestrate
from tests.support.project import write_project

WRONG_KEY = "not-the-key-at-all"


def envs(emulator) -> tuple[dict[str, str], dict[str, str]]:
    good = clean_env(emulator.env())
    return good, {**good, "KAGGLE_KEY": WRONG_KEY}


def assert_refused(done, what: str) -> None:
    """Exit 2, one `error:` line that says the credentials were refused and how to fix them."""
    assert done.returncode == 2, (what, done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "refused" in last, (what, last)
    assert "fix: " in last and "kaggle.com/settings" in last, (what, last)
    assert WRONG_KEY not in done.stdout + done.stderr


def alice(emulator) -> KaggleClient:
    credentials = Credentials(username="alice", key=emulator.users["alice"], source="test")
    return KaggleClient(emulator.api_url, credentials, retry=RetryPolicy.fast())


def wait_until_ended(emulator, slug: str) -> None:
    with alice(emulator) as client:
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.status("alice", slug).is_terminal:
                    return
            except Exception:  # 403 during the read-after-write lag
                pass
            assert time.monotonic() < deadline, f"{slug} did not end"
            time.sleep(0.2)


@pytest.mark.slow
def test_chain_step_run_and_sweep_with_a_wrong_key_exit_2(emulator, tmp_path):
    project = tmp_path / "project"
    write_project(project, slug="key-chain", title="Key Chain", steps=400)
    good, wrong = envs(emulator)
    assert (
        orchestrate("chain", "start", "key-chain", "--count", "1", cwd=project, env=good).returncode
        == 0
    )
    # Before the first push: the push itself is refused, and no intent is left behind.
    assert_refused(orchestrate("chain", "step", "key-chain", cwd=project, env=wrong), "push")
    assert Ledger(project).runs("key-chain") == []
    # A segment running: its status is refused.
    pushed = orchestrate("chain", "step", "key-chain", cwd=project, env=good)
    assert pushed.returncode == 0 and "pushed segment 1" in pushed.stdout, pushed.stderr
    assert_refused(orchestrate("chain", "step", "key-chain", cwd=project, env=wrong), "poll")
    assert_refused(
        orchestrate(
            "chain",
            "run",
            "key-chain",
            "--no-follow",
            "--poll-interval",
            "0.3",
            cwd=project,
            env=wrong,
        ),
        "chain run",
    )
    # A segment ended, its outputs not pulled yet (a step killed between the two): the pull
    # is refused; it used to count as "unknown" (exit 3) at every step.
    wait_until_ended(emulator, "key-chain-s1")
    Ledger(project).update("key-chain-s1", state="terminal", kernel_status="COMPLETE")
    assert_refused(orchestrate("chain", "step", "key-chain", cwd=project, env=wrong), "pull")
    assert Ledger(project).get("key-chain-s1").state == "terminal"
    assert Ledger(project).get_chain("key-chain").consecutive_unknowns == 0
    # A sweep steps its chains: the first push is refused.
    assert_refused(
        orchestrate(
            "sweep", "key-sweep", "--count", "1", "--poll-interval", "0.3", cwd=project, env=wrong
        ),
        "sweep",
    )
    assert Ledger(project).runs("key-sweep-seed0") == []


def test_a_gpu_chain_gate_with_a_wrong_key_exits_2(emulator, tmp_path):
    """A GPU chain asks for the quota before a push: refused there, not "quota unreadable"."""
    project = tmp_path / "project"
    write_project(project, slug="gpu-chain", title="Gpu Chain", accelerator="NvidiaTeslaT4")
    good, wrong = envs(emulator)
    assert (
        orchestrate("chain", "start", "gpu-chain", "--count", "1", cwd=project, env=good).returncode
        == 0
    )
    assert_refused(orchestrate("chain", "step", "gpu-chain", cwd=project, env=wrong), "gpu gate")
    assert Ledger(project).get_chain("gpu-chain").consecutive_unknowns == 0


def test_launch_with_a_wrong_key_exits_2_and_writes_no_intent(emulator, tmp_path):
    project = tmp_path / "project"
    write_project(project, slug="key-launch", title="Key Launch")
    _, wrong = envs(emulator)
    assert_refused(orchestrate("launch", "--skip-preflight", cwd=project, env=wrong), "launch")
    assert Ledger(project).runs() == []  # nothing half-written: the next launch is not blocked
    refused = orchestrate("launch", cwd=project, env=wrong)  # preflight's credentials check
    assert refused.returncode == 2 and "credentials: Kaggle refused them" in refused.stderr
    assert Ledger(project).runs() == []


def test_run_commands_with_a_wrong_key_exit_2(emulator, tmp_path):
    """watch, pull-artifacts, status, delete, preflight and doctor --live."""
    project = tmp_path / "project"
    write_project(project)
    with alice(emulator) as client:
        client.push(PushSpec(id="alice/key-run", title="Key Run", text="print('hello')\n"))
    _, wrong = envs(emulator)
    for args in (
        ("watch", "alice/key-run", "--poll", "0.5"),
        ("pull-artifacts", "alice/key-run"),
        ("status", "alice/key-run"),
        ("delete", "alice/key-run", "--force"),
        ("doctor", "--live", "--poll", "0.2", "--report", str(tmp_path / "doctor.json")),
    ):
        assert_refused(orchestrate(*args, cwd=project, env=wrong), args[0])
    checked = orchestrate("preflight", "--json", cwd=project, env=wrong)
    assert checked.returncode == 2
    assert '"credentials"' in checked.stdout and "kaggle.com/settings" in checked.stdout
