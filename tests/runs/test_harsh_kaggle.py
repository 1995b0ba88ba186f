"""The everyday commands against an emulator as harsh as kaggle.com (its faithful default).

403 for unknown and just-pushed kernels, a crashed script that ends COMPLETE, the account's
listing as the only proof of existence: each test shows how a command copes.
"""

from __future__ import annotations

import json
import shutil
import time

from orchestrator.capacity import SESSION_LIMIT_S
from orchestrator.kaggle import (
    Credentials,
    KaggleClient,
    KernelNotVisible,
    PushSpec,
    RetryPolicy,
)
from orchestrator.launch import session_timeout_s
from orchestrator.ledger import Ledger
from tests.support.cli import clean_env, orchestrate, run_main
from tests.support.project import write_project

CRASHER = """
import sys
print("about to fail", flush=True)
open("partial.txt", "w").write("half done\\n")
raise RuntimeError("the user's code broke")
"""


def alice(emulator) -> KaggleClient:
    credentials = Credentials(username="alice", key=emulator.users["alice"], source="test")
    return KaggleClient(emulator.api_url, credentials, retry=RetryPolicy.fast())


def push_script(emulator, slug: str, text: str) -> None:
    with alice(emulator) as client:
        client.push(PushSpec(id=f"alice/{slug}", title=slug.replace("-", " ").title(), text=text))


def test_crashed_script_ends_complete_on_kaggle_but_watch_exits_1(emulator, tmp_path):
    """Kaggle calls a crashed script COMPLETE: `watch` judges by the session summary, which a
    crash never writes, and shows the traceback's last lines."""
    write_project(tmp_path)
    push_script(emulator, "crashing-run", CRASHER)
    proc = orchestrate(
        "watch", "alice/crashing-run", "--poll", "0.5", cwd=tmp_path, env=clean_env(emulator.env())
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "status: COMPLETE" in proc.stdout
    assert "no session summary was written" in proc.stdout + proc.stderr
    assert "RuntimeError: the user's code broke" in proc.stdout  # among the last lines


def test_crashed_script_watch_json_says_complete_and_exit_1(emulator, tmp_path):
    write_project(tmp_path)
    push_script(emulator, "crashing-json", CRASHER)
    proc = orchestrate(
        "watch",
        "alice/crashing-json",
        "--poll",
        "0.5",
        "--json",
        cwd=tmp_path,
        env=clean_env(emulator.env()),
    )
    result = json.loads(proc.stdout)
    assert proc.returncode == 1 and result["status"] == "COMPLETE" and result["exit_code"] == 1
    assert result["artifacts"] is None


def test_watch_right_after_a_push_waits_through_the_403s(
    emulator_factory, tmp_path, monkeypatch, capsys
):
    """Reads of a just-pushed kernel are denied for a while; watch says so and goes on."""
    emulator = emulator_factory(read_lag="4:4")
    write_project(tmp_path)
    push_script(emulator, "lagging-run", "print('hello from a lagging kernel')\n")
    code, out, err = run_main(
        monkeypatch,
        capsys,
        "watch",
        "alice/lagging-run",
        "--poll",
        "0.5",
        cwd=tmp_path,
        env=emulator.env(),
    )
    assert "not visible on Kaggle yet" in out
    assert "hello from a lagging kernel" in out
    # A bare script writes no session summary, so the run itself is a failure: exit 1, not 2.
    assert code == 1, err


def test_status_of_an_unknown_kernel_names_the_possible_causes(emulator, tmp_path):
    """A lasting 403 is not a credentials problem (they are proven first): exit 2 with the
    plain possibilities, after the short grace for a run this ledger did not push."""
    write_project(tmp_path)
    proc = orchestrate("status", "alice/never-pushed", cwd=tmp_path, env=clean_env(emulator.env()))
    assert proc.returncode == 2, proc.stderr
    assert "credentials are fine" in proc.stderr and "misspelt" in proc.stderr


def test_status_with_a_wrong_key_is_a_credentials_error(emulator, tmp_path):
    write_project(tmp_path)
    env = clean_env({**emulator.env(), "KAGGLE_KEY": "not-the-key"})
    proc = orchestrate("status", "alice/never-pushed", cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert "refused the credentials" in proc.stderr


def test_status_just_after_launch_is_not_visible_yet(emulator_factory, tmp_path):
    emulator = emulator_factory(read_lag="20:20")
    write_project(tmp_path, slug="lag-status", title="Lag Status")
    env = clean_env(emulator.env())
    launched = orchestrate("launch", "--skip-preflight", "--json", cwd=tmp_path, env=env)
    assert launched.returncode == 0, launched.stderr
    proc = orchestrate("status", "lag-status", "--json", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["kernel_status"] == "NOT_VISIBLE_YET"


def test_launch_adopts_a_listed_slug_instead_of_pushing_twice(emulator, tmp_path):
    """A lost ledger update (a restored ledger, a second machine) must not start a second
    session: the account's listing shows the slug, so launch adopts it."""
    write_project(tmp_path, slug="adopt-me", title="Adopt Me")
    env = clean_env(emulator.env())
    ledger_file = Ledger(tmp_path).path
    first = orchestrate("launch", "--skip-preflight", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    shutil.rmtree(ledger_file.parent)  # the ledger never learnt of the push
    with alice(emulator) as client:
        deadline = time.monotonic() + 30
        while client.find_own_kernel("alice", "adopt-me") is None:  # Kaggle lists it later
            assert time.monotonic() < deadline
            time.sleep(0.1)
    second = orchestrate("launch", "--skip-preflight", "--json", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    assert "adopting it, not pushing again" in second.stdout + second.stderr
    assert json.loads(second.stdout)["state"] == "pushed"
    assert emulator.call_counts()["SaveKernel.accepted"] == 1


def test_a_session_at_the_platform_maximum_sends_no_timeout():
    assert session_timeout_s(SESSION_LIMIT_S) is None
    assert session_timeout_s(SESSION_LIMIT_S + 10) is None
    assert session_timeout_s(3600.0) == 3600


def test_get_kernel_of_an_unknown_kernel_is_denied_not_absent(emulator):
    with alice(emulator) as client:
        try:
            client.get_kernel("alice", "no-such-kernel")
        except KernelNotVisible as error:
            assert error.status_code == 403
        else:
            raise AssertionError("the faithful emulator answers 403 for an unknown kernel")
        assert client.find_own_kernel("alice", "no-such-kernel") is None


def test_pull_right_after_a_push_says_it_is_not_visible_yet(emulator_factory, tmp_path):
    emulator = emulator_factory(read_lag="20:20")
    write_project(tmp_path)
    push_script(emulator, "pull-too-early", "print('hi')\n")
    proc = orchestrate(
        "pull-artifacts", "alice/pull-too-early", cwd=tmp_path, env=clean_env(emulator.env())
    )
    assert proc.returncode == 2
    assert "not visible yet, so wait with `orchestrate watch alice/pull-too-early`" in proc.stderr
