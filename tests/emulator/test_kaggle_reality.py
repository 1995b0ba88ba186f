"""Where kaggle.com is harsher than a kind emulator (notes/kaggle-reality.md), on by default.

Each test drives the real emulator subprocess over raw HTTP. The crash-ends-COMPLETE,
SIGKILL-at-the-limit and mount tests live in test_executor.py; 403 for someone else's
kernel in test_auth.py; image pinning in test_docker_image.py.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from orchestrator.emulator.api import default_docker_image
from orchestrator.emulator.app import EmulatorOptions
from orchestrator.emulator.executor import ExecutorOptions
from orchestrator.emulator.middleware import RateLimiter, parse_rate_limit
from tests.support.emulator import DENIED, Rpc, user_files

SLEEPER = "import time\nprint('up', flush=True)\ntime.sleep(120)\n"


def _reads(rpc: Rpc, slug: str) -> list[httpx.Response]:
    body = {"userName": rpc.user, "kernelSlug": slug}
    return [
        rpc.call("GetKernel", body),
        rpc.call("GetKernelSessionStatus", body),
        rpc.call("ListKernelSessionOutput", body),
        rpc.http.get(f"/kernels/logs/stream/{rpc.user}/{slug}"),
    ]


def _listed(rpc: Rpc) -> list[str]:
    body = rpc.call("ListKernels", {"group": "PROFILE", "pageSize": 100}).json()
    return [k["ref"] for k in body.get("kernels", [])]


def _json_output(rpc: Rpc, slug: str) -> dict:
    status = rpc.wait(slug)
    assert status["status"] == "COMPLETE", status
    (item,) = user_files(rpc.output(slug))
    return httpx.get(item["url"]).json()


# -- 1. 403, and the read-after-write lag ----------------------------------------------
def test_unknown_kernel_is_403_on_every_read_and_delete(alice):
    for response in _reads(alice, "never-pushed"):
        assert (response.status_code, response.json()) == (403, DENIED)
    deleted = alice.call("DeleteKernel", {"userName": "alice", "kernelSlug": "never-pushed"})
    assert deleted.status_code == 403
    assert deleted.json() == {"code": 403, "message": "Permission 'kernels.delete' was denied"}
    wrong_key = httpx.post(
        f"{alice.emulator.api_url}/kernels.KernelsApiService/GetKernel",
        json={"userName": "alice", "kernelSlug": "never-pushed"},
        auth=("alice", "wrong"),
    )
    assert wrong_key.status_code == 401  # bad credentials stay 401


def test_read_after_write_lag_denies_and_hides_a_new_kernel(emulator_factory):
    emulator = emulator_factory(read_lag="1.5:2", seed=11)
    alice = Rpc(emulator)
    alice.push("lagged", "print('hi')\n")
    pushed = time.time()
    for response in _reads(alice, "lagged"):  # even its owner is denied for a while
        assert (response.status_code, response.json()) == (403, DENIED)
    assert "alice/lagged" not in _listed(alice)

    record = emulator.kernel_record("alice", "lagged")
    lag = record["visible_at"] - record["versions"][0]["created_at"]
    assert 1.5 <= lag <= 2.0 + 0.01
    time.sleep(max(0.0, record["visible_at"] - time.time()) + 0.05)
    assert time.time() - pushed >= 1.4
    assert alice.call("GetKernel", {"userName": "alice", "kernelSlug": "lagged"}).status_code == 200
    assert "alice/lagged" in _listed(alice)

    # a new version of a visible kernel has no lag
    assert alice.push("lagged", "print('again')\n")["versionNumber"] == 2
    got = alice.call("GetKernel", {"userName": "alice", "kernelSlug": "lagged"})
    assert got.status_code == 200 and got.json()["metadata"]["currentVersionNumber"] == 2

    # visible_at is part of the stored record: a restart does not reset it
    alice.push("lagged-restart", "print(1)\n")
    before = json.loads((emulator.root / "kernels/alice/lagged-restart/kernel.json").read_text())
    emulator.restart()
    alice = Rpc(emulator)
    after = json.loads((emulator.root / "kernels/alice/lagged-restart/kernel.json").read_text())
    assert after["visible_at"] == before["visible_at"] > 0
    alice.wait("lagged-restart")


def test_read_lag_draws_are_seeded(emulator_factory):
    def lags(emulator) -> list[float]:
        rpc = Rpc(emulator)
        for i in range(3):
            rpc.push(f"seeded-{i}", "print(1)\n", kernelExecutionType="QUICK_SAVE")
        records = [
            json.loads((emulator.root / f"kernels/alice/seeded-{i}/kernel.json").read_text())
            for i in range(3)
        ]
        return [r["visible_at"] - r["versions"][0]["created_at"] for r in records]

    first = lags(emulator_factory(read_lag="1:5", seed=5))
    second = lags(emulator_factory(read_lag="1:5", seed=5))
    assert all(0.99 <= lag <= 5.01 for lag in first)
    assert max(first) - min(first) > 0.05  # drawn, not constant
    assert all(abs(a - b) < 0.05 for a, b in zip(first, second, strict=True))


# -- 3. boot time ----------------------------------------------------------------------
def test_session_clock_starts_at_container_start_before_the_script(emulator_factory):
    emulator = emulator_factory(boot_time=1.5)
    alice = Rpc(emulator)
    probe = (
        "import json, os, time\n"
        "json.dump({'script_start': time.time(),"
        " 'session_start': os.environ['ORCHESTRATE_SESSION_START']}, open('t.json', 'w'))\n"
    )
    alice.push("boot", probe)
    alice.wait("boot", statuses=("RUNNING",))
    (version,) = emulator.kernel_versions("alice", "boot")
    assert version["status"] == "RUNNING" and version["pid"] is None  # booting: no script yet
    seen = _json_output(alice, "boot")
    (version,) = emulator.kernel_versions("alice", "boot")
    assert float(seen["session_start"]) == pytest.approx(version["started_at"], abs=1e-3)
    assert seen["script_start"] - float(seen["session_start"]) >= 1.5

    # the limit counts from the container's start: a 1 s limit ends during the boot
    alice.push("boot-limit", "open('ran.txt', 'w').write('x')\n", sessionTimeoutSeconds=1)
    assert alice.wait("boot-limit")["status"] == "CANCEL_ACKNOWLEDGED"
    out = alice.output("boot-limit")
    assert user_files(out) == []
    assert [e["data"] for e in json.loads(out["log"])] == ["Exit code: 137"]

    # GPU quota bills the boot too
    alice.push("boot-gpu", "pass\n", enableGpu=True)
    assert alice.wait("boot-gpu")["status"] == "COMPLETE"
    used = alice.call("GetAcceleratorQuotaStatistics").json()["gpuQuota"]["timeUsed"]
    assert float(used.removesuffix("s")) >= 1.5


# -- 5. the image lacks stable-baselines3; pip cannot reach out ------------------------
IMAGE_PROBE = """
import importlib, importlib.util, json, os, sys, tempfile
found = {}
try:
    import stable_baselines3
    found["host"] = stable_baselines3.__file__
except ModuleNotFoundError as exc:
    found["host"] = str(exc)
found["find_spec_none"] = importlib.util.find_spec("stable_baselines3") is None
import six
found["six"] = six.__file__
embedded = tempfile.mkdtemp()
os.makedirs(os.path.join(embedded, "stable_baselines3"))
with open(os.path.join(embedded, "stable_baselines3", "__init__.py"), "w") as f:
    f.write("EMBEDDED = True\\n")
sys.path.insert(0, embedded)
importlib.invalidate_caches()
import stable_baselines3
found["embedded"] = stable_baselines3.EMBEDDED
found["embedded_file"] = stable_baselines3.__file__.startswith(embedded)
json.dump(found, open("found.json", "w"))
"""


def test_kernels_cannot_import_stable_baselines3_from_the_host(alice):
    # the host interpreter has it (else this test would prove nothing)
    host = importlib.util.find_spec("stable_baselines3")
    assert host is not None and "site-packages" in host.origin
    alice.push("image-lacks-sb3", IMAGE_PROBE)
    found = _json_output(alice, "image-lacks-sb3")
    assert found["host"] == "No module named 'stable_baselines3'"
    assert found["find_spec_none"] is True
    assert found["six"]  # what the image has imports as before
    assert found["embedded"] is True and found["embedded_file"] is True  # a copy it brings works


PIP_PROBE = """
import json, os, subprocess, sys
result = subprocess.run([sys.executable, "-m", "pip", "install", "six"],
                        capture_output=True, text=True, timeout=60)
json.dump({"rc": result.returncode, "err": result.stderr[-2000:],
           "target": os.environ.get("PIP_TARGET"), "no_index": os.environ.get("PIP_NO_INDEX"),
           "listed": sorted(os.listdir(os.environ["PIP_TARGET"]))}, open("pip.json", "w"))
"""


def test_pip_without_internet_fails_and_never_touches_the_host(emu, alice):
    alice.push("pip-offline", PIP_PROBE, enableInternet=False)
    found = _json_output(alice, "pip-offline")
    assert found["rc"] != 0, found["err"]
    assert found["no_index"] == "1"
    assert found["listed"] == []
    target = Path(found["target"])
    assert target.is_relative_to(emu.root / "kernels/alice/pip-offline/v1")
    assert not target.is_relative_to(emu.root / "kernels/alice/pip-offline/v1/working")


def test_pip_with_internet_installs_into_the_session(emu, alice):
    probe = (
        "import json, os\njson.dump({'target': os.environ.get('PIP_TARGET'),"
        " 'no_index': os.environ.get('PIP_NO_INDEX'),"
        " 'path': os.environ['PYTHONPATH']}, open('env.json', 'w'))\n"
    )
    alice.push("pip-online", probe, enableInternet=True)
    found = _json_output(alice, "pip-online")
    assert found["no_index"] is None
    assert Path(found["target"]).is_relative_to(emu.root / "kernels/alice/pip-online/v1")
    assert found["target"] in found["path"].split(":")  # what pip installs imports


# -- 6. capacity and images ------------------------------------------------------------
def _refused(rpc: Rpc, slug: str, **fields) -> str:
    body = {
        "slug": f"{rpc.user}/{slug}",
        "text": SLEEPER,
        "language": "python",
        "kernelType": "script",
        **fields,
    }
    response = rpc.call("SaveKernel", body)
    assert response.status_code == 200
    return response.json().get("error", "")


def test_cpu_and_tpu_session_caps(emulator_factory):
    emulator = emulator_factory()  # defaults: 5 CPU, 1 TPU, 2 GPU
    alice, bob = Rpc(emulator, "alice"), Rpc(emulator, "bob")
    for i in range(5):
        assert not alice.push(f"cpu-{i}", SLEEPER).get("error")
    assert _refused(alice, "cpu-5") == "Maximum batch CPU session count of 5 reached."
    assert emulator.kernel_versions("alice", "cpu-5") == []
    assert not bob.push("cpu-bob", "print(1)\n").get("error")  # per user
    assert not alice.push("tpu-0", SLEEPER, enableTpu=True).get("error")  # its own cap
    assert _refused(alice, "tpu-1", enableTpu=True) == (
        "Maximum batch TPU session count of 1 reached."
    )
    assert not alice.push("gpu-0", SLEEPER, enableGpu=True).get("error")
    assert not alice.push("saved", SLEEPER, kernelExecutionType="QUICK_SAVE").get("error")
    counts = emulator.call_counts()
    assert counts["SaveKernel"] == 11 and counts["SaveKernel.accepted"] == 9


def test_gpu_and_cpu_sessions_report_kaggle_shaped_images(alice):
    probe = "import os\nopen('image.txt', 'w').write(os.environ['KAGGLE_DOCKER_IMAGE'])\n"
    alice.push("image-cpu", probe)
    alice.push("image-gpu", probe, enableGpu=True)
    images = {}
    for slug in ("image-cpu", "image-gpu"):
        assert alice.wait(slug)["status"] == "COMPLETE"
        (item,) = user_files(alice.output(slug))
        images[slug] = httpx.get(item["url"]).text
    assert images["image-cpu"] == default_docker_image(gpu=False)
    assert images["image-gpu"] == default_docker_image(gpu=True)
    assert images["image-cpu"].startswith("gcr.io/kaggle-images/python@sha256:")
    assert images["image-gpu"].startswith("gcr.io/kaggle-gpu-images/python@sha256:")
    assert images["image-cpu"].split(":")[-1] != images["image-gpu"].split(":")[-1]


def test_unknown_docker_image_is_refused_known_ones_run(emulator_factory):
    unknown = "gcr.io/kaggle-images/python@sha256:" + "c" * 64
    listed = "gcr.io/kaggle-images/python@sha256:" + "d" * 64
    retired = "gcr.io/kaggle-images/python@sha256:" + "e" * 64
    emulator = emulator_factory(known_images=[listed])
    alice = Rpc(emulator)
    error = _refused(alice, "image-unknown", dockerImage=unknown)
    assert error == f"The requested docker image is not available: {unknown}"
    assert emulator.kernel_versions("alice", "image-unknown") == []
    assert not alice.push("image-listed", "print(1)\n", dockerImage=listed).get("error")
    for gpu in (False, True):
        image = default_docker_image(gpu)
        assert not alice.push(f"image-default-{gpu:d}", "print(1)\n", dockerImage=image).get(
            "error"
        )
    # an image a version once ran on stays known, also after a restart
    emulator.force_docker_image(retired)
    alice.push("image-retired", "print(1)\n")
    alice.wait("image-retired")
    emulator.force_docker_image(None)
    emulator.restart()
    alice = Rpc(emulator)
    assert not alice.push("image-again", "print(1)\n", dockerImage=retired).get("error")


# -- 7. rate limit ---------------------------------------------------------------------
def test_rate_limit_answers_429_with_retry_after(emulator_factory):
    emulator = emulator_factory(rate_limit="5/3")
    alice, bob = Rpc(emulator, "alice"), Rpc(emulator, "bob")
    alice.push("limited", "open('x.txt', 'w').write('x')\n")  # 1
    start = time.monotonic()
    for _ in range(3):  # 2..4
        assert alice.call("GetAcceleratorQuotaStatistics").status_code == 200
    assert alice.http.get("/kernels/logs/stream/alice/limited").status_code == 403  # 5
    refused = alice.call("GetAcceleratorQuotaStatistics")
    assert refused.status_code == 429
    assert refused.json()["code"] == 429 and refused.json()["message"]
    retry = int(refused.headers["retry-after"])
    assert 1 <= retry <= 3
    assert alice.http.get("/kernels/logs/stream/alice/limited").status_code == 429
    assert bob.call("GetAcceleratorQuotaStatistics").status_code == 200  # per user
    counts = emulator.call_counts()  # the test API is not limited, and counts the 429s
    assert counts["GetAcceleratorQuotaStatistics"] == 5 and counts["logs_stream"] == 2

    # once the window has room again, calls pass
    deadline = time.monotonic() + 30
    while emulator.kernel_versions("alice", "limited")[0]["status"] != "COMPLETE":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(max(0.0, start + 3.1 - time.monotonic()))
    (item,) = user_files(alice.output("limited"))
    # downloads are not limited
    for _ in range(8):
        assert httpx.get(item["url"]).status_code == 200


def test_default_rate_limit_spares_slow_polls_and_stops_a_one_second_loop():
    assert parse_rate_limit("40/60") == (40, 60.0)
    assert parse_rate_limit("off") == (0, 0.0)
    with pytest.raises(ValueError):
        parse_rate_limit("fast")
    calls, window = EmulatorOptions(root=Path("."), users={}).rate_limit
    assert (calls, window) == (40, 60.0)

    def refusals(period: float, calls_per_poll: int, minutes: int = 10) -> int:
        limiter = RateLimiter(calls, window)
        refused = 0
        for tick in range(int(minutes * 60 / period)):
            for i in range(calls_per_poll):
                refused += limiter.hit("alice", tick * period + i * 0.01) is not None
        return refused

    assert refusals(30, 3) == 0  # a chain: status, output, a push now and then
    assert refusals(5, 2) == 0  # watch: status and a log read every 5 s
    assert refusals(1, 1) > 0  # a 1-second poll loop meets it
    limiter = RateLimiter(2, 10)
    assert limiter.hit("a", 0) is None and limiter.hit("a", 1) is None
    assert limiter.hit("a", 2.5) == math.ceil(10 - 2.5)


# -- 8. queue delays -------------------------------------------------------------------
def test_realistic_defaults():
    options = ExecutorOptions()
    assert (options.queue_delay_s, options.gpu_queue_delay_s) == (60, 300)
    assert (options.boot_time_s, options.kill_grace_s) == (20, 0)
    assert not options.honest_exit_status and not options.legacy_mounts
    app = EmulatorOptions(root=Path("."), users={})
    assert (app.queue_delay_s, app.gpu_queue_delay_s, app.boot_time_s) == (60, 300, 20)
    assert (app.read_lag_s, app.kill_grace_s) == ((2, 8), 0)
    assert (app.cpu_slots, app.gpu_slots, app.tpu_slots) == (5, 2, 1)
    assert app.image_lacks == ("stable-baselines3", "sb3-contrib")
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.emulator", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert result.returncode == 0
    for flag in (
        "--read-lag",
        "--seed",
        "--honest-exit-status",
        "--kill-grace",
        "--boot-time",
        "--legacy-mounts",
        "--image-lacks",
        "--cpu-slots",
        "--tpu-slots",
        "--known-images",
        "--rate-limit",
        "--queue-delay",
        "--gpu-queue-delay",
        "Example",
    ):
        assert flag in result.stdout, flag


def test_gpu_sessions_queue_longer(emulator_factory):
    emulator = emulator_factory(queue_delay=0.1, gpu_queue_delay=6)
    alice = Rpc(emulator)
    alice.push("queue-gpu", "print(1)\n", enableGpu=True)
    alice.push("queue-cpu", "print(1)\n")
    assert alice.wait("queue-cpu")["status"] == "COMPLETE"
    assert alice.status("queue-gpu")["status"] in ("NEW_SCRIPT", "QUEUED")
