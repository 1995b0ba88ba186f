"""Benchmarks (make bench): the emulator's overheads against what they wrap."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.emulator import Rpc, user_files

pytestmark = pytest.mark.bench

SIZE_MB = 64


def test_bench_output_download_vs_local_copy(emulator, tmp_path, bench_record):
    """Target: >= 50 MiB/s over loopback, so a 1 GiB output pulls in under ~20 s."""
    rpc = Rpc(emulator)
    rpc.push("bench-download", f"open('big.bin', 'wb').write(b'\\x5a' * {SIZE_MB} * 2**20)\n")
    assert rpc.wait("bench-download")["status"] == "COMPLETE"
    url = user_files(rpc.output("bench-download"))[0]["url"]
    source = emulator.root / "kernels/alice/bench-download/v1/working/big.bin"

    start = time.perf_counter()
    shutil.copyfile(source, tmp_path / "copy.bin")
    copy_s = time.perf_counter() - start

    start = time.perf_counter()
    with httpx.stream("GET", url, timeout=60) as response, (tmp_path / "dl.bin").open("wb") as f:
        for chunk in response.iter_bytes(1 << 20):
            f.write(chunk)
    download_s = time.perf_counter() - start
    assert (tmp_path / "dl.bin").stat().st_size == SIZE_MB * 2**20
    assert bench_record(
        "emulator_download_mib_per_s",
        SIZE_MB / download_s,
        unit=" MiB/s",
        baseline=SIZE_MB / copy_s,
        ratio=copy_s / download_s,
        target=">= 50 MiB/s",
        met=SIZE_MB / download_s >= 50,
    )


def test_bench_push_to_complete_vs_bare_interpreter(emulator_factory, bench_record):
    """Target: push -> COMPLETE of an empty kernel <= 1.5 s with no queue delay (the test
    timings' boot and read lag included)."""
    rpc = Rpc(emulator_factory(queue_delay=0))
    runs = 5
    start = time.perf_counter()
    for _ in range(runs):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare_s = (time.perf_counter() - start) / runs

    start = time.perf_counter()
    for i in range(runs):
        rpc.push(f"bench-latency-{i}", "pass\n")
        assert rpc.wait(f"bench-latency-{i}")["status"] == "COMPLETE"
    push_s = (time.perf_counter() - start) / runs
    assert bench_record(
        "emulator_push_to_complete_s",
        push_s,
        unit=" s",
        baseline=bare_s,
        ratio=push_s / bare_s,
        target="<= 1.5 s",
        met=push_s <= 1.5,
    )
