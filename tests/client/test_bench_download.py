"""Benchmark: a large output file through the client (sha256 on the fly) vs a plain streaming copy.

Both run in fresh subprocesses against the same emulator file, so peak RSS is the downloader's
own. Size: ORCHESTRATE_BENCH_DOWNLOAD_MB (default 1024).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

SIZE_MB = int(os.environ.get("ORCHESTRATE_BENCH_DOWNLOAD_MB", "1024"))

# Writes SIZE_MB of a repeating 1 MiB pattern into the kernel's working dir.
WRITER = f"""
import os
block = bytes(range(256)) * 4096
with open("big.bin", "wb") as out:
    for _ in range({SIZE_MB}):
        out.write(block)
"""

CLIENT_DOWNLOAD = """
import json, resource, sys, time
from pathlib import Path
from orchestrator.kaggle import KaggleClient
url, dest = sys.argv[1], Path(sys.argv[2])
with KaggleClient.from_env(timeout=120) as client:
    start = time.perf_counter()
    result = client.download(url, dest)
    seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "size": result.size, "sha256": result.sha256,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

PLAIN_COPY = """
import json, resource, sys, time
import httpx
url, dest = sys.argv[1], sys.argv[2]
start = time.perf_counter()
size = 0
with httpx.stream("GET", url, timeout=120) as response, open(dest, "wb") as out:
    for chunk in response.iter_bytes():
        out.write(chunk)
        size += len(chunk)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "size": size,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_python(code: str, *args: str, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.bench
def test_bench_large_download_with_hash_vs_plain_copy(emulator, tmp_path):
    import hashlib

    from orchestrator.kaggle import KaggleClient, PushSpec, RetryPolicy

    env = emulator.subprocess_env("alice")
    client = KaggleClient(emulator.api_url, _creds(emulator), retry=RetryPolicy.fast())
    client.push(PushSpec(id="alice/bench-big-output", title="Bench big output", text=WRITER))
    deadline = time.monotonic() + 600
    while not client.status("alice", "bench-big-output").is_terminal:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    url = {f.name: f.url for f in client.list_output("alice", "bench-big-output").files}["big.bin"]

    expected = hashlib.sha256()
    block = bytes(range(256)) * 4096
    for _ in range(SIZE_MB):
        expected.update(block)

    # Alternate and keep the best of two, so page-cache warmth favours neither side.
    plain_runs, client_runs = [], []
    for round_ in range(2):
        plain_runs.append(
            run_python(PLAIN_COPY, url, str(tmp_path / f"plain-{round_}.bin"), env=env)
        )
        (tmp_path / f"plain-{round_}.bin").unlink()
        client_runs.append(
            run_python(CLIENT_DOWNLOAD, url, str(tmp_path / f"client-{round_}.bin"), env=env)
        )
        (tmp_path / f"client-{round_}.bin").unlink()
    for run in client_runs:
        assert run["size"] == SIZE_MB << 20 and run["sha256"] == expected.hexdigest()
    plain = min(r["seconds"] for r in plain_runs)
    ours = min(r["seconds"] for r in client_runs)
    rss = max(r["maxrss_mb"] for r in client_runs)
    mb = SIZE_MB
    print(
        f"\nBENCH download {mb} MiB with sha256 (MiB/s): {mb / ours:.0f} (baseline: {mb / plain:.0f} plain copy, ratio: {plain / ours:.2f}x)"
    )
    print(
        f"BENCH download peak RSS (MB): {rss:.0f} (baseline: {max(r['maxrss_mb'] for r in plain_runs):.0f} plain copy, ratio: {rss / max(r['maxrss_mb'] for r in plain_runs):.2f}x)"
    )
    assert rss < 150
    client.close()


def _creds(emulator):
    from orchestrator.kaggle import Credentials

    return Credentials(username="alice", key=emulator.users["alice"])
