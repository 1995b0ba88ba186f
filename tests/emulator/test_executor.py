"""Kernels really run: sandboxes, env, logs, exit codes, time limits and kills."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import httpx

from orchestrator.emulator.executor import RUNNER_FILES
from tests.support.emulator import Rpc, user_files

SIGTERM_AWARE = """
import os, signal, sys, time
def on_term(signum, frame):
    open("terminated.txt", "w").write("got SIGTERM")
    print("caught SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open("before.txt", "w").write("written before the limit")
print("started", flush=True)
time.sleep(120)
"""


def test_env_and_working_directory(emu, alice):
    script = """
import json, os, sys
env = {k: os.environ.get(k) for k in ("ORCHESTRATE_WORKING_DIR", "ORCHESTRATE_INPUT_DIR",
       "KAGGLE_KERNEL_RUN_TYPE", "PYTHONUNBUFFERED", "KAGGLE_KEY", "KAGGLE_USERNAME")}
env["cwd"] = os.getcwd()
env["python"] = sys.executable
json.dump(env, open("env.json", "w"))
"""
    alice.push("exec-env", script)
    assert alice.wait("exec-env")["status"] == "COMPLETE"
    url = user_files(alice.output("exec-env"))[0]["url"]
    env = httpx.get(url).json()
    assert env["cwd"] == env["ORCHESTRATE_WORKING_DIR"]
    assert Path(env["cwd"]).is_relative_to(emu.root)
    assert Path(env["ORCHESTRATE_INPUT_DIR"]).is_dir()
    assert env["KAGGLE_KERNEL_RUN_TYPE"] == "Batch" and env["PYTHONUNBUFFERED"] == "1"
    assert env["KAGGLE_KEY"] is None and env["KAGGLE_USERNAME"] is None
    assert Path(env["python"]).parent == Path(os.sys.executable).parent


def test_crashed_script_ends_complete_with_traceback_in_log_and_runner_files(alice):
    alice.push(
        "exec-raise", "open('partial.txt', 'w').write('x')\nraise ValueError('no such env')\n"
    )
    status = alice.wait("exec-raise")
    assert status == {"status": "COMPLETE"}  # as Kaggle: no failure message at all
    out = alice.output("exec-raise")
    log = json.loads(out["log"])
    stderr = "".join(e["data"] for e in log if e["stream_name"] == "stderr")
    assert "Traceback (most recent call last)" in stderr
    assert "ValueError: no such env" in stderr
    names = {f["fileName"] for f in out["files"]}
    assert names == {"partial.txt", *RUNNER_FILES}
    results = next(f for f in out["files"] if f["fileName"] == "__results__.html")
    assert "ValueError: no such env" in httpx.get(results["url"]).text
    output = next(f for f in out["files"] if f["fileName"] == "__output__.json")
    assert httpx.get(output["url"]).json()["nbformat"] == 4


def test_runner_files_also_follow_a_clean_run(alice):
    alice.push("exec-clean", "print('fine')\n")
    assert alice.wait("exec-clean") == {"status": "COMPLETE"}
    assert {f["fileName"] for f in alice.output("exec-clean")["files"]} == set(RUNNER_FILES)


def test_honest_exit_status_flag_restores_error(emulator_factory):
    rpc = Rpc(emulator_factory(honest_exit_status=True))
    rpc.push("exec-fail", "import sys\nprint('working')\nsys.exit('boom: bad config')\n")
    rpc.push("exec-raise", "raise ValueError('no such env')\n")
    status = rpc.wait("exec-fail")
    assert status["status"] == "ERROR"
    assert "exited with code 1" in status["failureMessage"]
    assert "boom: bad config" in status["failureMessage"]
    status = rpc.wait("exec-raise")
    assert status["status"] == "ERROR"
    assert "ValueError: no such env" in status["failureMessage"]


def test_session_limit_is_a_sigkill_with_exit_code_137_and_keeps_outputs(emulator_factory):
    emulator = emulator_factory(max_session=3)  # room for a slow interpreter start
    rpc = Rpc(emulator)
    rpc.push("exec-timeout", SIGTERM_AWARE)
    status = rpc.wait("exec-timeout")
    assert status["status"] == "CANCEL_ACKNOWLEDGED"
    assert "exceeded the max allowed execution duration" in status["failureMessage"]
    out = rpc.output("exec-timeout")
    assert {f["fileName"] for f in user_files(out)} == {"before.txt"}  # no SIGTERM handler ran
    log = json.loads(out["log"])
    assert [e["data"] for e in log] == ["started\n", "Exit code: 137"]
    assert log[-1]["time"] >= 3 - 0.5


def test_positive_kill_grace_sends_sigterm_first(emulator_factory):
    emulator = emulator_factory(max_session=3, kill_grace=2)
    rpc = Rpc(emulator)
    rpc.push("exec-grace", SIGTERM_AWARE)
    assert rpc.wait("exec-grace")["status"] == "CANCEL_ACKNOWLEDGED"
    out = rpc.output("exec-grace")
    assert {f["fileName"] for f in user_files(out)} == {"before.txt", "terminated.txt"}
    data = [e["data"] for e in json.loads(out["log"])]
    assert "caught SIGTERM\n" in data and data[-1] == "Exit code: 137"


def test_push_timeout_shorter_than_the_server_limit_wins(alice):
    alice.push("exec-push-timeout", SIGTERM_AWARE, sessionTimeoutSeconds=1)
    assert alice.wait("exec-push-timeout")["status"] == "CANCEL_ACKNOWLEDGED"


def test_sigkill_after_grace_when_sigterm_is_ignored(emulator_factory):
    emulator = emulator_factory(max_session=3, kill_grace=0.5)
    rpc = Rpc(emulator)
    script = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open('alive.txt', 'w').write('x')\nprint('ignoring SIGTERM', flush=True)\ntime.sleep(120)\n"
    )
    rpc.push("exec-stubborn", script)
    status = rpc.wait("exec-stubborn", timeout=30)
    assert status["status"] == "CANCEL_ACKNOWLEDGED"
    out = rpc.output("exec-stubborn")
    assert {f["fileName"] for f in user_files(out)} == {"alive.txt"}
    assert [e["data"] for e in json.loads(out["log"])] == ["ignoring SIGTERM\n", "Exit code: 137"]


def test_kill_reaches_child_processes(emu, alice):
    script = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open("child.pid", "w").write(str(child.pid))
print("spawned", flush=True)
time.sleep(120)
"""
    alice.push("exec-children", script)
    alice.wait("exec-children", statuses=("RUNNING",))
    pid_file = emu.root / "kernels/alice/exec-children/v1/working/child.pid"
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline, "kernel never wrote its child's pid"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    emu.kill_kernel("alice", "exec-children")
    status = alice.wait("exec-children")
    assert status["status"] == "ERROR" and "terminated" in status["failureMessage"]
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the kernel's child survived the kill"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_kill_kernel_as_timeout(emu, alice):
    alice.push("exec-forced-timeout", SIGTERM_AWARE)
    alice.wait("exec-forced-timeout", statuses=("RUNNING",))
    _wait_for_log(alice, "exec-forced-timeout", "started\n")
    emu.kill_kernel("alice", "exec-forced-timeout", as_timeout=True)
    assert alice.wait("exec-forced-timeout")["status"] == "CANCEL_ACKNOWLEDGED"
    out = alice.output("exec-forced-timeout")
    assert {f["fileName"] for f in user_files(out)} == {"before.txt"}  # SIGKILL: no handler
    assert json.loads(out["log"])[-1]["data"] == "Exit code: 137"


def _wait_for_log(rpc: Rpc, slug: str, data: str) -> None:
    deadline = time.monotonic() + 30
    while not any(e["data"] == data for e in json.loads(rpc.output(slug)["log"] or "[]")):
        assert time.monotonic() < deadline, f"{data!r} never appeared in {slug}'s log"
        time.sleep(0.05)


def test_push_shows_new_script_then_queued(emulator_factory):
    rpc = Rpc(emulator_factory(queue_delay=4))  # NEW_SCRIPT for 1.2 s, QUEUED 2.8 s
    rpc.push("exec-phases", "print(1)\n")
    seen = []
    while not seen or seen[-1] not in ("COMPLETE", "ERROR"):
        status = rpc.status("exec-phases")["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.02)
    assert seen[0] == "NEW_SCRIPT"
    assert seen[-1] == "COMPLETE"
    assert seen.index("QUEUED") < seen.index("COMPLETE")


def test_second_push_to_a_running_slug_starts_a_second_session(emu, alice):
    alice.push("exec-twice", "import time\nprint('first', flush=True)\ntime.sleep(120)\n")
    alice.wait("exec-twice", statuses=("RUNNING",))
    second = alice.push("exec-twice", "print('second')\n")
    assert second["versionNumber"] == 2
    assert alice.wait("exec-twice")["status"] == "COMPLETE"  # status follows the latest version
    first = alice.call(
        "GetKernelSessionStatus",
        {"userName": "alice", "kernelSlug": "exec-twice", "versionLabel": "v1"},
    ).json()
    assert first["status"] == "RUNNING"  # the first session still runs (and bills)
    assert [e["data"] for e in json.loads(alice.output("exec-twice")["log"])] == ["second\n"]
    alice.call("DeleteKernel", {"userName": "alice", "kernelSlug": "exec-twice"})


def test_live_log_stream_then_stored_array(emu, alice):
    alice.push(
        "exec-stream",
        "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.2)\n",
    )
    alice.wait("exec-stream", statuses=("RUNNING", "COMPLETE"))
    url = f"{emu.api_url}/kernels/logs/stream/alice/exec-stream"
    auth = ("alice", emu.users["alice"])
    with httpx.stream("GET", url, auth=auth, timeout=30) as response:
        if response.headers["content-type"].startswith("text/event-stream"):
            lines = [line for line in response.iter_lines() if line.startswith("data:")]
            assert lines[-1] == "data: END_OF_LOG"
            data = [json.loads(line.removeprefix("data: "))["data"] for line in lines[:-1]]
        else:  # the session ended before we connected
            data = [e["data"] for e in json.loads(response.read())]
    assert data == ["0\n", "1\n", "2\n"]
    alice.wait("exec-stream")
    after = httpx.get(url, auth=auth)
    assert after.headers["content-type"].startswith("application/json")
    assert [e["data"] for e in after.json()] == ["0\n", "1\n", "2\n"]


MOUNT_PROBE = """
import json, os
base = os.environ["ORCHESTRATE_INPUT_DIR"]
found = {}
for layout in ("notebooks/alice/exec-parent", "exec-parent"):
    path = os.path.join(base, layout, "ckpt", "state.txt")
    try:
        found[layout] = open(path).read()
    except OSError:
        found[layout] = None
        continue
    try:
        open(path, "a").write("tampered")
        found[layout + ":writable"] = True
    except OSError:
        found[layout + ":writable"] = False
json.dump(found, open("found.json", "w"))
"""
PARENT = "import os\nos.makedirs('ckpt')\nopen('ckpt/state.txt','w').write('step 100')\n"


def _mounted(rpc: Rpc, slug: str) -> dict:
    status = rpc.wait(slug)
    assert status["status"] == "COMPLETE", status
    return httpx.get(user_files(rpc.output(slug))[0]["url"]).json()


def test_kernel_sources_are_mounted_read_only_under_notebooks_only(emu, alice):
    alice.push("exec-parent", PARENT)
    assert alice.wait("exec-parent")["status"] == "COMPLETE"
    alice.push("exec-child", MOUNT_PROBE, kernelDataSources=["alice/exec-parent"])
    found = _mounted(alice, "exec-child")
    assert found["notebooks/alice/exec-parent"].startswith("step 100")
    assert found["exec-parent"] is None  # the flat legacy layout is gone
    input_dir = emu.root / "kernels/alice/exec-child/v1/input"
    assert sorted(p.name for p in input_dir.iterdir()) == ["notebooks"]
    mounted = input_dir / "notebooks/alice/exec-parent/ckpt/state.txt"
    assert not mounted.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    if os.geteuid() != 0:  # root ignores permission bits
        assert found["notebooks/alice/exec-parent:writable"] is False
    # a later write to the parent's output does not show through the copy
    parent_file = emu.root / "kernels/alice/exec-parent/v1/working/ckpt/state.txt"
    parent_file.write_text("changed later")
    assert mounted.read_text().startswith("step 100")


def test_legacy_mounts_flag_adds_the_flat_layout(emulator_factory):
    rpc = Rpc(emulator_factory(legacy_mounts=True))
    rpc.push("exec-parent", PARENT)
    assert rpc.wait("exec-parent")["status"] == "COMPLETE"
    rpc.push("exec-child", MOUNT_PROBE, kernelDataSources=["alice/exec-parent"])
    found = _mounted(rpc, "exec-child")
    assert found["notebooks/alice/exec-parent"].startswith("step 100")
    assert found["exec-parent"].startswith("step 100")


def test_a_source_still_running_mounts_nothing(emu, alice):
    script = (
        "open('early.txt', 'w').write('x')\nprint('up', flush=True)\nimport time\ntime.sleep(120)\n"
    )
    alice.push("exec-busy-parent", script)
    alice.wait("exec-busy-parent", statuses=("RUNNING",))
    _wait_for_file(emu.root / "kernels/alice/exec-busy-parent/v1/working/early.txt")
    probe = (
        "import json, os\nbase = os.environ['ORCHESTRATE_INPUT_DIR']\n"
        "json.dump(sorted(os.listdir(base)), open('found.json', 'w'))\n"
    )
    body = alice.push("exec-early-child", probe, kernelDataSources=["alice/exec-busy-parent"])
    assert not body.get("error") and body.get("invalidKernelSources", []) == []  # pushed
    assert _mounted(alice, "exec-early-child") == []  # but nothing is mounted
    assert not (emu.root / "kernels/alice/exec-early-child/v1/input/notebooks").exists()
    alice.call("DeleteKernel", {"userName": "alice", "kernelSlug": "exec-busy-parent"})


def _wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_unknown_or_foreign_kernel_sources_are_reported_invalid(alice, bob):
    bob.push("bobs-secret", "print(1)\n")
    body = alice.push(
        "exec-bad-source", "print(1)\n", kernelDataSources=["bob/bobs-secret", "alice/nope"]
    )
    assert body["invalidKernelSources"] == ["bob/bobs-secret", "alice/nope"]


def test_notebook_code_cells_run_in_order(alice):
    notebook = {
        "cells": [
            {"cell_type": "markdown", "source": "# title"},
            {"cell_type": "code", "source": ["x = 20\n", "y = 22\n"], "outputs": []},
            {"cell_type": "code", "source": "print(x + y)", "outputs": []},
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    alice.push("exec-notebook", json.dumps(notebook), kernelType="notebook")
    assert alice.wait("exec-notebook")["status"] == "COMPLETE"
    assert [e["data"] for e in json.loads(alice.output("exec-notebook")["log"])] == ["42\n"]


def test_quick_save_makes_a_version_without_running_it(alice):
    body = alice.push("exec-quick-save", "open('ran.txt', 'w')\n", kernelExecutionType="QUICK_SAVE")
    assert body["versionNumber"] == 1
    assert alice.status("exec-quick-save")["status"] == "COMPLETE"
    out = alice.output("exec-quick-save")
    assert out.get("files", []) == [] and json.loads(out["log"]) == []
