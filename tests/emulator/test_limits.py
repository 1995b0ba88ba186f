"""GPU session cap and weekly GPU quota, refused in SaveKernel.error as Kaggle does (HTTP 200)."""

from __future__ import annotations

from datetime import timedelta

from kagglesdk.kernels.types.kernels_api_service import ApiGetAcceleratorQuotaStatisticsResponse

from tests.support.emulator import Rpc

SLEEPER = "import time\nprint('on the gpu', flush=True)\ntime.sleep(120)\n"


def test_gpu_session_cap(emulator_factory):
    emulator = emulator_factory(gpu_slots=2)
    alice, bob = Rpc(emulator, "alice"), Rpc(emulator, "bob")
    assert not alice.push("gpu-one", SLEEPER, enableGpu=True).get("error")
    assert not alice.push("gpu-two", SLEEPER, machineShape="NvidiaTeslaT4").get("error")
    refused = alice.call(
        "SaveKernel",
        {
            "slug": "alice/gpu-three",
            "text": SLEEPER,
            "language": "python",
            "kernelType": "script",
            "enableGpu": True,
        },
    )
    assert refused.status_code == 200
    assert refused.json()["error"] == "Maximum batch GPU session count of 2 reached."
    assert emulator.kernel_versions("alice", "gpu-three") == []  # no version was created
    # CPU pushes and other users are unaffected
    assert not alice.push("cpu-one", "print(1)\n").get("error")
    assert not bob.push("gpu-bob", "print(1)\n", enableGpu=True).get("error")
    counts = emulator.call_counts()
    assert counts["SaveKernel"] == 5 and counts["SaveKernel.accepted"] == 4
    # a slot frees when a session ends
    emulator.kill_kernel("alice", "gpu-one")
    alice.wait("gpu-one")
    assert not alice.push("gpu-three", "print(1)\n", enableGpu=True).get("error")


def test_weekly_quota_refusal_and_accounting(emulator_factory):
    emulator = emulator_factory(weekly_gpu_quota=1)
    alice = Rpc(emulator, "alice")
    emulator.set_gpu_used("alice", 3600)
    body = alice.push("gpu-over-quota", "print(1)\n", enableGpu=True)
    assert "quota" in body["error"].lower()
    assert not alice.push("cpu-still-fine", "print(1)\n").get("error")

    emulator.set_gpu_used("alice", 0)
    alice.push("gpu-billed", "import time\ntime.sleep(1)\n", enableGpu=True)
    assert alice.wait("gpu-billed")["status"] == "COMPLETE"
    quota = ApiGetAcceleratorQuotaStatisticsResponse.from_dict(
        alice.call("GetAcceleratorQuotaStatistics").json()
    )
    assert timedelta(seconds=1) <= quota.gpu_quota.time_used < timedelta(minutes=5)
    assert quota.gpu_quota.total_time_allowed == timedelta(hours=1)
    bob_quota = Rpc(emulator, "bob").call("GetAcceleratorQuotaStatistics").json()
    assert bob_quota["gpuQuota"]["timeUsed"] == "0s"


def test_cpu_sessions_do_not_bill_gpu_quota(alice):
    alice.push("cpu-only", "import time\ntime.sleep(0.5)\n")
    alice.wait("cpu-only")
    assert alice.call("GetAcceleratorQuotaStatistics").json()["gpuQuota"]["timeUsed"] == "0s"
