"""State survives a restart; a session running when the emulator died ends as ERROR."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.support.emulator import Rpc, user_files


def test_restart_keeps_kernels_statuses_logs_and_outputs(emulator):
    alice = Rpc(emulator)
    alice.push("persist-done", "print('kept')\nopen('out.txt','w').write('kept output')\n")
    assert alice.wait("persist-done")["status"] == "COMPLETE"
    emulator.set_gpu_used("alice", 120)
    emulator.restart()
    alice = Rpc(emulator)
    assert alice.status("persist-done") == {"status": "COMPLETE"}
    out = alice.output("persist-done")
    assert [e["data"] for e in json.loads(out["log"])] == ["kept\n"]
    assert httpx.get(user_files(out)[0]["url"]).text == "kept output"
    quota = alice.call("GetAcceleratorQuotaStatistics").json()
    assert quota["gpuQuota"]["timeUsed"] == "120s"
    assert alice.push("persist-done", "print(2)\n")["versionNumber"] == 2


def test_session_running_at_a_crash_ends_error_on_restart(emulator):
    alice = Rpc(emulator)
    alice.push("persist-running", "import time\nprint('running', flush=True)\ntime.sleep(120)\n")
    alice.wait("persist-running", statuses=("RUNNING",))
    meta = emulator.root / "kernels/alice/persist-running/kernel.json"
    pid = json.loads(meta.read_text())["versions"][0]["pid"]
    emulator.crash()  # SIGKILL: no graceful shutdown
    emulator.start()
    alice = Rpc(emulator)
    status = alice.status("persist-running")
    assert status["status"] == "ERROR"
    assert "emulator stopped" in status["failureMessage"]
    deadline = time.monotonic() + 10
    while _alive(pid):  # the orphaned kernel was killed by the restart
        assert time.monotonic() < deadline, "the orphaned kernel survived the restart"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
