"""Kernels really run: sandboxes, env, logs, exit codes, time limits and kills."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import httpx

from tests.emulator.conftest import Rpc

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
    url = alice.output("exec-env")["files"][0]["url"]
    env = httpx.get(url).json()
    assert env["cwd"] == env["ORCHESTRATE_WORKING_DIR"]
    assert Path(env["cwd"]).is_relative_to(emu.root)
    assert Path(env["ORCHESTRATE_INPUT_DIR"]).is_dir()
    assert env["KAGGLE_KERNEL_RUN_TYPE"] == "Batch" and env["PYTHONUNBUFFERED"] == "1"
    assert env["KAGGLE_KEY"] is None and env["KAGGLE_USERNAME"] is None
    assert Path(env["python"]).parent == Path(os.sys.executable).parent


def test_nonzero_exit_ends_error_with_exit_code_and_last_stderr_line(alice):
    alice.push("exec-fail", "import sys\nprint('working')\nsys.exit('boom: bad config')\n")
    status = alice.wait("exec-fail")
    assert status["status"] == "ERROR"
    assert "exited with code 1" in status["failureMessage"]
    assert "boom: bad config" in status["failureMessage"]


def test_uncaught_exception_names_it(alice):
    alice.push("exec-raise", "raise ValueError('no such env')\n")
    status = alice.wait("exec-raise")
    assert status["status"] == "ERROR"
    assert "ValueError: no such env" in status["failureMessage"]


def test_session_limit_sends_sigterm_and_keeps_outputs(emulator_factory):
    emulator = emulator_factory(max_session=3)  # room for a slow interpreter start
    rpc = Rpc(emulator)
    rpc.push("exec-timeout", SIGTERM_AWARE)
    status = rpc.wait("exec-timeout")
    assert status["status"] == "CANCEL_ACKNOWLEDGED"
    assert "exceeded the max allowed execution duration" in status["failureMessage"]
    out = rpc.output("exec-timeout")
    names = {f["fileName"] for f in out["files"]}
    assert names == {"before.txt", "terminated.txt"}
    assert any(e["data"] == "caught SIGTERM\n" for e in json.loads(out["log"]))


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
    assert {f["fileName"] for f in out["files"]} == {"alive.txt"}
    assert [e["data"] for e in json.loads(out["log"])] == ["ignoring SIGTERM\n"]


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
    names = {f["fileName"] for f in alice.output("exec-forced-timeout")["files"]}
    assert names == {"before.txt", "terminated.txt"}


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


def test_kernel_sources_are_mounted_read_only_in_both_layouts(emu, alice):
    alice.push(
        "exec-parent",
        "import os\nos.makedirs('ckpt')\nopen('ckpt/state.txt','w').write('step 100')\n",
    )
    assert alice.wait("exec-parent")["status"] == "COMPLETE"
    child_script = """
import json, os
base = os.environ["ORCHESTRATE_INPUT_DIR"]
found = {}
for layout in ("notebooks/alice/exec-parent", "exec-parent"):
    path = os.path.join(base, layout, "ckpt", "state.txt")
    found[layout] = open(path).read()
    try:
        open(path, "a").write("tampered")
        found[layout + ":writable"] = True
    except OSError:
        found[layout + ":writable"] = False
json.dump(found, open("found.json", "w"))
"""
    alice.push("exec-child", child_script, kernelDataSources=["alice/exec-parent"])
    status = alice.wait("exec-child")
    assert status["status"] == "COMPLETE", status
    found = httpx.get(alice.output("exec-child")["files"][0]["url"]).json()
    assert found["notebooks/alice/exec-parent"].startswith("step 100")
    assert found["exec-parent"].startswith("step 100")
    input_dir = emu.root / "kernels/alice/exec-child/v1/input"
    for layout in ("notebooks/alice/exec-parent", "exec-parent"):
        mounted = input_dir / layout / "ckpt" / "state.txt"
        assert not mounted.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        if os.geteuid() != 0:  # root ignores permission bits
            assert found[layout + ":writable"] is False
    # a later write to the parent's output does not show through the copy
    parent_file = emu.root / "kernels/alice/exec-parent/v1/working/ckpt/state.txt"
    parent_file.write_text("changed later")
    assert (input_dir / "exec-parent/ckpt/state.txt").read_text().startswith("step 100")


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
