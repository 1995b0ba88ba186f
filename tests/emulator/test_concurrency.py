"""Concurrent pushes: the GPU cap holds under a race, and every accepted push runs once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.emulator import Rpc

SLEEPER = "import time\ntime.sleep(120)\n"


def _race_gpu_pushes(emulator, pushes: int) -> list[dict]:
    def push(i: int) -> dict:
        rpc = Rpc(emulator)
        try:
            return rpc.push(f"race-gpu-{i}", SLEEPER, enableGpu=True)
        finally:
            rpc.close()

    with ThreadPoolExecutor(max_workers=pushes) as pool:
        return list(pool.map(push, range(pushes)))


def test_concurrent_gpu_pushes_never_exceed_the_cap(emulator_factory):
    emulator = emulator_factory(gpu_slots=2)
    results = _race_gpu_pushes(emulator, 8)
    accepted = [r for r in results if not r.get("error")]
    refused = [r for r in results if r.get("error")]
    assert len(accepted) == 2
    assert {r["error"] for r in refused} == {"Maximum batch GPU session count of 2 reached."}
    assert emulator.call_counts()["SaveKernel.accepted"] == 2


def test_concurrent_cpu_pushes_all_complete(emulator):
    def push_and_wait(i: int) -> str:
        rpc = Rpc(emulator, "alice" if i % 2 else "bob")
        try:
            rpc.push(f"race-cpu-{i}", f"print({i})\n")
            return rpc.wait(f"race-cpu-{i}")["status"]
        finally:
            rpc.close()

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(push_and_wait, range(6))) == ["COMPLETE"] * 6


@pytest.mark.reliability
def test_gpu_cap_race_repeated(emulator_factory):
    for _ in range(20):
        emulator = emulator_factory(gpu_slots=2)
        results = _race_gpu_pushes(emulator, 16)
        assert sum(1 for r in results if not r.get("error")) == 2
        emulator.stop()
