"""Each fault kind, observed with raw httpx; faults target methods and are countable."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from orchestrator.emulator.faults import FaultBook, parse_rule, parse_spec
from orchestrator.kaggle.rpc import TRANSPORT_FAILURES
from tests.support.emulator import Rpc, user_files

PAYLOAD = bytes(range(256)) * 64  # 16 KiB

# A dropped connection reaches httpx as RemoteProtocolError or ReadError depending on when the
# socket closes relative to the read (a race): the client treats the whole transport family
# alike, so the tests accept exactly that family.


@pytest.fixture
def finished(alice):
    """A completed kernel with one 16 KiB output file; returns its signed URL."""
    alice.push("fault-target", "open('blob.bin', 'wb').write(bytes(range(256)) * 64)\n")
    assert alice.wait("fault-target")["status"] == "COMPLETE"
    return user_files(alice.output("fault-target"))[0]["url"]


def test_counted_503_hits_only_the_targeted_method(emu, alice, finished):
    before = emu.call_counts()["ListKernelSessionOutput"]
    emu.set_faults("ListKernelSessionOutput=503*2")
    for _ in range(2):
        response = alice.call(
            "ListKernelSessionOutput", {"userName": "alice", "kernelSlug": "fault-target"}
        )
        assert response.status_code == 503
        assert response.json()["code"] == 503
    assert alice.status("fault-target")["status"] == "COMPLETE"  # other methods unaffected
    assert alice.output("fault-target")["files"]  # the third call succeeds
    assert emu.call_counts()["ListKernelSessionOutput"] - before == 3  # two faulted, one good


def test_429_with_retry_after(emu, alice):
    emu.set_faults("*=429:7*1")
    response = alice.call("GetAcceleratorQuotaStatistics")
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert alice.call("GetAcceleratorQuotaStatistics").status_code == 200


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors(emu, alice, status):
    emu.set_faults(f"GetAcceleratorQuotaStatistics={status}*1")
    assert alice.call("GetAcceleratorQuotaStatistics").status_code == status


def test_html_error_page(emu, alice):
    emu.set_faults("GetKernelSessionStatus=html*1")
    response = alice.call("GetKernelSessionStatus", {"userName": "alice", "kernelSlug": "x"})
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.lstrip().startswith("<!DOCTYPE html>")


def test_connection_dropped_mid_response(emu, alice):
    emu.set_faults("GetKernel=drop*1")
    with pytest.raises(TRANSPORT_FAILURES):
        alice.call("GetKernel", {"userName": "alice", "kernelSlug": "x"})
    assert alice.call("GetKernel", {"userName": "alice", "kernelSlug": "x"}).status_code == 403


def test_truncated_download_then_range_resume(emu, finished):
    emu.set_faults("download=truncate*1")
    received = bytearray()
    with pytest.raises(TRANSPORT_FAILURES), httpx.stream("GET", finished) as response:
        assert int(response.headers["content-length"]) == len(PAYLOAD)
        for chunk in response.iter_bytes():
            received += chunk
    assert 0 < len(received) < len(PAYLOAD)
    rest = httpx.get(finished, headers={"Range": f"bytes={len(received)}-"})
    assert rest.status_code == 206
    assert bytes(received) + rest.content == PAYLOAD


def test_corrupted_download_has_right_length_wrong_hash(emu, finished):
    emu.set_faults("download=corrupt*1")
    bad = httpx.get(finished).content
    assert len(bad) == len(PAYLOAD) and bad != PAYLOAD
    good = httpx.get(finished).content
    assert hashlib.sha256(good).digest() == hashlib.sha256(PAYLOAD).digest()


def test_accepted_push_answered_with_5xx(emu, alice):
    before = emu.call_counts()
    emu.set_faults("SaveKernel=accepted-503*1")
    body = {
        "slug": "alice/ambiguous",
        "text": "print('ran anyway')\n",
        "language": "python",
        "kernelType": "script",
    }
    response = alice.call("SaveKernel", body)
    assert response.status_code == 503
    assert alice.wait("ambiguous")["status"] == "COMPLETE"  # the push did happen
    got = alice.call("GetKernel", {"userName": "alice", "kernelSlug": "ambiguous"}).json()
    assert got["metadata"]["currentVersionNumber"] == 1
    counts = emu.call_counts()
    assert counts["SaveKernel"] - before.get("SaveKernel", 0) == 1
    assert counts["SaveKernel.accepted"] - before.get("SaveKernel.accepted", 0) == 1


def test_accepted_push_then_dropped_connection(emu, alice):
    emu.set_faults("SaveKernel=accepted-drop*1")
    body = {
        "slug": "alice/ambiguous-drop",
        "text": "print(1)\n",
        "language": "python",
        "kernelType": "script",
    }
    with pytest.raises(TRANSPORT_FAILURES):
        alice.call("SaveKernel", body)
    assert alice.wait("ambiguous-drop")["status"] == "COMPLETE"


def test_probability_faults_are_reproducible_with_a_seed(emu, alice):
    def outcomes() -> list[int]:
        emu.set_faults("GetAcceleratorQuotaStatistics=503@0.5,seed=42")
        return [alice.call("GetAcceleratorQuotaStatistics").status_code for _ in range(20)]

    first, second = outcomes(), outcomes()
    assert first == second
    assert 200 in first and 503 in first


def test_faults_from_the_command_line(emulator_factory):
    emulator = emulator_factory(faults="GetAcceleratorQuotaStatistics=500*1")
    rpc = Rpc(emulator)
    assert rpc.call("GetAcceleratorQuotaStatistics").status_code == 500
    assert rpc.call("GetAcceleratorQuotaStatistics").status_code == 200


def test_kill_kernel_fault_ends_error(emu, alice):
    alice.push("fault-kill", "import time\ntime.sleep(120)\n")
    alice.wait("fault-kill", statuses=("RUNNING",))
    emu.kill_kernel("alice", "fault-kill")
    assert alice.wait("fault-kill")["status"] == "ERROR"


def test_clear_faults(emu, alice):
    emu.set_faults("*=503")
    assert alice.call("GetAcceleratorQuotaStatistics").status_code == 503
    emu.clear_faults()
    assert alice.call("GetAcceleratorQuotaStatistics").status_code == 200


def test_spec_parsing():
    rule = parse_rule("ListKernelSessionOutput=503*2")
    assert (rule.method, rule.kind, rule.status, rule.count) == (
        "ListKernelSessionOutput",
        "status",
        503,
        2,
    )
    rule = parse_rule("*=429:5@0.1")
    assert (rule.status, rule.retry_after, rule.probability, rule.count) == (429, 5.0, 0.1, None)
    rule = parse_rule("SaveKernel=accepted-502")
    assert rule.after_handling and rule.status == 502
    assert parse_rule("GetKernel=html:500").status == 500
    rules, seed = parse_spec("download=truncate*1, download=corrupt, seed=3")
    assert [r.kind for r in rules] == ["truncate", "corrupt"] and seed == 3
    with pytest.raises(ValueError, match="unknown fault"):
        parse_rule("GetKernel=explode")
    with pytest.raises(ValueError, match="METHOD=FAULT"):
        parse_rule("GetKernel")


def test_fault_book_counts_down():
    book = FaultBook([parse_rule("GetKernel=503*2")])
    assert [book.pick("GetKernel") is not None for _ in range(3)] == [True, True, False]
    assert book.pick("SaveKernel") is None


def test_kill_planned_before_the_push_hits_at_the_chosen_session_time(emu, alice):
    emu.kill_kernel("alice", "fault-planned", at_session_s=2.0)
    script = (
        "import time\nprint('up', flush=True)\ntime.sleep(0.2)\n"
        "open('early.txt', 'w').write('x')\ntime.sleep(120)\n"
    )
    alice.push("fault-planned", script)
    status = alice.wait("fault-planned")
    assert status["status"] == "ERROR"
    assert {f["fileName"] for f in user_files(alice.output("fault-planned"))} == {"early.txt"}


def test_kill_planned_into_a_running_session_as_timeout(emu, alice):
    alice.push("fault-planned-timeout", "import time\nprint('up', flush=True)\ntime.sleep(120)\n")
    alice.wait("fault-planned-timeout", statuses=("RUNNING",))
    emu.kill_kernel("alice", "fault-planned-timeout", as_timeout=True, at_session_s=0.5)
    assert alice.wait("fault-planned-timeout")["status"] == "CANCEL_ACKNOWLEDGED"
