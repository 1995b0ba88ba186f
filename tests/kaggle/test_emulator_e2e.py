"""The client against the real emulator: real kernels, real HTTP, injected faults."""

from __future__ import annotations

import hashlib
import time

import pytest

from orchestrator.kaggle import (
    AmbiguousPush,
    CapacityRefused,
    Credentials,
    KaggleClient,
    KernelNotVisible,
    PushSpec,
    QuotaExhausted,
    RetryPolicy,
)
from tests.support.emulator import wait_terminal

# Writes two outputs of known content and prints a few lines with pauses, so the log is live.
SCRIPT = """
import os, time
os.makedirs("sub", exist_ok=True)
open("sub/data.bin", "wb").write(bytes(range(256)) * 4096)
open("hello.txt", "w").write("hello from the kernel\\n")
for i in range(4):
    print("line", i, flush=True)
    time.sleep(0.15)
"""
DATA_BIN = bytes(range(256)) * 4096
SLEEPER = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"


def quick_retry() -> RetryPolicy:
    return RetryPolicy(
        max_attempts=5,
        max_total_s=30,
        initial_wait_s=0.01,
        max_wait_s=0.05,
        max_retry_after_s=0.05,
        listing_check_s=3.0,  # longer than the test emulator's read lag
        listing_poll_s=0.1,
    )


@pytest.fixture
def client(emulator, monkeypatch):
    for name, value in emulator.env("alice").items():
        monkeypatch.setenv(name, value)
    with KaggleClient.from_env(retry=quick_retry(), timeout=20) as made:
        yield made


def wait_visible(client: KaggleClient, slug: str, timeout: float = 30) -> None:
    """Until reads of a just-pushed kernel stop being denied (403)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.status("alice", slug)
            return
        except KernelNotVisible:
            time.sleep(0.1)
    raise AssertionError(f"{slug} still denied after {timeout}s")


def wait_listed(client: KaggleClient, slug: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.find_own_kernel(client.username, slug)
        if info is not None:
            return info
        time.sleep(0.1)
    raise AssertionError(f"{slug} not listed after {timeout}s")


def spec(slug: str, text: str = SCRIPT, **fields) -> PushSpec:
    return PushSpec(id=f"alice/{slug}", title=slug.replace("-", " ").title(), text=text, **fields)


def test_push_follow_log_list_and_download(client, emulator, tmp_path):
    assert client.username == "alice"
    result = client.push(spec("client-e2e"))
    assert result.ref == "alice/client-e2e" and result.version_number == 1 and result.url
    wait_visible(client, "client-e2e")
    live = [entry.data for entry in client.stream_log("alice", "client-e2e")]
    assert wait_terminal(client, "alice", "client-e2e") == "COMPLETE"
    assert [line for line in live if line.startswith("line")] == [f"line {i}\n" for i in range(4)]

    listing = client.list_output("alice", "client-e2e")
    by_name = {f.name: f for f in listing.files}
    assert {"hello.txt", "sub/data.bin"} <= set(by_name)
    assert [e.data for e in listing.log if e.data.startswith("line")] == [
        f"line {i}\n" for i in range(4)
    ]
    got = client.download(by_name["sub/data.bin"].url, tmp_path / "sub" / "data.bin")
    assert got.sha256 == hashlib.sha256(DATA_BIN).hexdigest() and got.size == len(DATA_BIN)
    assert (tmp_path / "sub" / "data.bin").read_bytes() == DATA_BIN

    # After the session the stream answers with the stored log: same entries.
    stored = [entry.data for entry in client.stream_log("alice", "client-e2e")]
    assert stored == live

    info = client.get_kernel("alice", "client-e2e")
    assert info.current_version_number == 1 and info.source == SCRIPT
    assert client.find_own_kernel("alice", "client-e2e").current_version_number == 1
    client.delete_kernel("alice", "client-e2e")
    # Kaggle answers 403 for a kernel that does not exist: absence shows in the listing.
    with pytest.raises(KernelNotVisible):
        client.get_kernel("alice", "client-e2e")
    assert client.find_own_kernel("alice", "client-e2e") is None


def test_accepted_push_answered_with_503_is_not_repeated(client, emulator):
    emulator.set_faults("SaveKernel=accepted-503*1")
    result = client.push(spec("ambiguous-accepted"))
    assert result.confirmed_by_check and result.version_number == 1
    counts = emulator.call_counts()
    assert counts.get("SaveKernel.accepted") == 1
    assert wait_terminal(client, "alice", "ambiguous-accepted") == "COMPLETE"


def test_dropped_accepted_push_is_not_repeated(client, emulator):
    emulator.set_faults("SaveKernel=accepted-drop*1")
    result = client.push(spec("ambiguous-dropped"))
    assert result.confirmed_by_check
    assert emulator.call_counts().get("SaveKernel.accepted") == 1


def test_refused_push_of_a_new_kernel_is_not_sent_again(client, emulator):
    """A new kernel is unlisted for a while after a push that did go through: a 503 on its
    push is never answered with a second push (a second billed session) by the client."""
    emulator.set_faults("SaveKernel=503*1")
    with pytest.raises(AmbiguousPush, match="not listed yet"):
        client.push(spec("refused-once"))
    counts = emulator.call_counts()
    assert counts.get("SaveKernel") == 1 and counts.get("SaveKernel.accepted") is None


def test_refused_push_of_a_new_version_is_sent_again(client, emulator):
    """An existing kernel's listing shows its version at once: an unchanged version proves
    the 503'd push was not taken, so it is sent again."""
    client.push(spec("refused-version"))
    wait_listed(client, "refused-version")
    assert wait_terminal(client, "alice", "refused-version") == "COMPLETE"
    emulator.set_faults("SaveKernel=503*1")
    result = client.push(spec("refused-version"))
    assert not result.confirmed_by_check and result.version_number == 2
    counts = emulator.call_counts()
    assert counts.get("SaveKernel") == 3 and counts.get("SaveKernel.accepted") == 2


def test_throttling_and_html_pages_are_retried(client, emulator):
    client.push(spec("flaky-status"))
    emulator.set_faults("GetKernelSessionStatus=429:1*2,ListKernelSessionOutput=html*1")
    assert wait_terminal(client, "alice", "flaky-status") == "COMPLETE"
    assert client.list_output("alice", "flaky-status").files


def test_download_resumes_after_drop_and_truncation(client, emulator, tmp_path):
    client.push(spec("resume-download"))
    assert wait_terminal(client, "alice", "resume-download") == "COMPLETE"
    url = {f.name: f.url for f in client.list_output("alice", "resume-download").files}[
        "sub/data.bin"
    ]
    for fault in ("download=drop*1", "download=truncate*1"):
        emulator.set_faults(fault)
        dest = tmp_path / fault.split("=")[1].split("*")[0] / "data.bin"
        got = client.download(url, dest)
        assert got.sha256 == hashlib.sha256(DATA_BIN).hexdigest() and dest.read_bytes() == DATA_BIN


def test_log_stream_reconnects_without_duplicates(client, emulator):
    client.push(spec("stream-drop"))
    wait_visible(client, "stream-drop")
    emulator.set_faults("logs_stream=drop*2")
    live = [entry.data for entry in client.stream_log("alice", "stream-drop")]
    wait_terminal(client, "alice", "stream-drop")
    stored = [entry.data for entry in client.list_output("alice", "stream-drop").log]
    assert live == stored


def test_gpu_capacity_and_quota_refusals_are_typed(emulator_factory, monkeypatch):
    emulator = emulator_factory(gpu_slots=1, weekly_gpu_quota=1)
    for name, value in emulator.env("alice").items():
        monkeypatch.setenv(name, value)
    with KaggleClient.from_env(retry=quick_retry()) as client:
        client.push(spec("gpu-one", SLEEPER, enable_gpu=True))
        with pytest.raises(CapacityRefused) as caught:
            client.push(spec("gpu-two", SLEEPER, enable_gpu=True))
        assert caught.value.limit == 1
        emulator.kill_kernel("alice", "gpu-one")
        wait_terminal(client, "alice", "gpu-one")
        emulator.set_gpu_used("alice", 3600)
        with pytest.raises(QuotaExhausted):
            client.push(spec("gpu-three", SLEEPER, enable_gpu=True))
        quota = client.quota()
        assert (
            quota.total_allowed_s == 3600
            and quota.time_used_s >= 3600
            and quota.refresh_time is not None
        )


def test_bearer_token_is_introspected(emulator, monkeypatch):
    token = emulator.users["bob"]
    with KaggleClient(
        emulator.api_url, Credentials(username=None, token=token), retry=quick_retry()
    ) as client:
        assert client.username == "bob"
        assert client.find_own_kernel("bob", "nothing-here") is None
