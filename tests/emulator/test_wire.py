"""Every response parses with kagglesdk's own classes, in Kaggle's JSON conventions."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import httpx
from kagglesdk.kernels.types.kernels_api_service import (
    ApiGetAcceleratorQuotaStatisticsResponse,
    ApiGetKernelResponse,
    ApiGetKernelSessionStatusResponse,
    ApiListKernelSessionOutputResponse,
    ApiListKernelsResponse,
    ApiSaveKernelResponse,
)
from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus
from kagglesdk.security.types.oauth_service import IntrospectTokenResponse

from tests.support.emulator import DENIED, Rpc

SCRIPT = """
import os, sys
print("to stdout")
print("to stderr", file=sys.stderr)
for i in range(25):
    with open(f"file_{i:02d}.txt", "w") as f:
        f.write(str(i))
os.makedirs("sub", exist_ok=True)
open("sub/nested.bin", "wb").write(b"\\x00\\x01")
"""


def test_save_kernel_response_has_kaggle_fields(alice):
    body = alice.push("wire-save", "print(1)\n")
    assert set(body) >= {"ref", "url", "versionNumber"}
    parsed = ApiSaveKernelResponse.from_dict(body)
    assert parsed.ref == "/code/alice/wire-save"
    assert parsed.url.endswith("/code/alice/wire-save")
    assert parsed.version_number == 1
    assert not parsed.error
    assert alice.push("wire-save", "print(2)\n")["versionNumber"] == 2


def test_status_is_an_enum_name_and_failure_message_camel_case(emu, alice):
    alice.push("wire-status", "import time\ntime.sleep(120)\n")
    alice.wait("wire-status", statuses=("RUNNING",))
    emu.kill_kernel("alice", "wire-status")
    body = alice.wait("wire-status")
    assert body["status"] == "ERROR" and set(body) == {"status", "failureMessage"}
    parsed = ApiGetKernelSessionStatusResponse.from_dict(body)
    assert parsed.status is KernelWorkerStatus.ERROR
    assert "terminated" in parsed.failure_message


def test_queued_status_is_sent_even_though_it_is_the_proto_default(emulator_factory):
    rpc = Rpc(emulator_factory(queue_delay=30), "alice")
    rpc.push("wire-queued", "print(1)\n")
    body = rpc.wait("wire-queued", statuses=("QUEUED",))
    assert body == {"status": "QUEUED"}


def test_output_listing_pages_urls_and_log(alice):
    alice.push("wire-output", SCRIPT)
    assert alice.wait("wire-output")["status"] == "COMPLETE"
    first = alice.output("wire-output")
    parsed = ApiListKernelSessionOutputResponse.from_dict(first)
    assert len(parsed.files) == 20 and parsed.next_page_token
    names = [f.file_name for f in parsed.files]
    second = ApiListKernelSessionOutputResponse.from_dict(
        alice.output("wire-output", pageToken=parsed.next_page_token)
    )
    names += [f.file_name for f in second.files]
    assert not second.next_page_token
    runner = ["__output__.json", "__results__.html", "custom.css"]  # the notebook runner's
    expected = [f"file_{i:02d}.txt" for i in range(25)] + ["sub/nested.bin"] + runner
    assert sorted(names) == sorted(expected)
    nested = next(f for f in second.files + parsed.files if f.file_name == "sub/nested.bin")
    assert httpx.get(nested.url).content == b"\x00\x01"  # signed URL: no auth needed

    log = json.loads(parsed.log)
    assert {"stream_name": "stdout", "data": "to stdout\n"}.items() <= log[0].items() or any(
        e["stream_name"] == "stdout" and e["data"] == "to stdout\n" for e in log
    )
    assert any(e["stream_name"] == "stderr" and e["data"] == "to stderr\n" for e in log)
    assert all(isinstance(e["time"], float | int) and e["time"] >= 0 for e in log)


def test_get_kernel_and_list_kernels(alice, bob):
    alice.push("wire-get", "print(1)\n", isPrivate=False, enableInternet=False)
    alice.wait("wire-get")
    raw = alice.call("GetKernel", {"userName": "alice", "kernelSlug": "wire-get"}).json()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", raw["metadata"]["lastRunTime"])
    got = ApiGetKernelResponse.from_dict(raw)
    assert got.metadata.ref == "alice/wire-get"
    assert got.metadata.author == "alice"
    assert got.metadata.current_version_number == 1
    assert got.metadata.enable_internet is False
    assert got.blob.source == "print(1)\n"
    listed = ApiListKernelsResponse.from_dict(
        alice.call("ListKernels", {"user": "alice", "search": "wire-get"}).json()
    )
    assert [k.ref for k in listed.kernels] == ["alice/wire-get"]
    # a public kernel is visible to another user
    assert bob.call("GetKernel", {"userName": "alice", "kernelSlug": "wire-get"}).status_code == 200


def test_quota_statistics_durations_are_total_seconds(emulator):
    emulator.set_gpu_used("alice", 27 * 3600 + 1.5)
    raw = Rpc(emulator, "alice").call("GetAcceleratorQuotaStatistics").json()
    assert raw["gpuQuota"]["totalTimeAllowed"] == "108000s"  # 30 h, not 30 h mod 1 day
    assert raw["gpuQuota"]["timeUsed"] == "97201.500s"
    parsed = ApiGetAcceleratorQuotaStatisticsResponse.from_dict(raw)
    assert parsed.gpu_quota.time_used == timedelta(hours=27, seconds=1.5)
    refresh = parsed.quota_refresh_time
    assert raw["quotaRefreshTime"].endswith("Z")
    assert refresh.weekday() == 5 and (refresh.hour, refresh.minute) == (0, 0)  # Saturday 00:00
    assert timedelta(0) < refresh - datetime.utcnow() <= timedelta(days=7)


def test_errors_use_kaggle_error_body(emu, alice):
    unauthenticated = httpx.post(f"{emu.api_url}/kernels.KernelsApiService/GetKernel", json={})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["code"] == 401 and unauthenticated.json()["message"]
    missing = alice.call("GetKernelSessionStatus", {"userName": "alice", "kernelSlug": "nope"})
    assert missing.status_code == 403 and missing.json() == DENIED  # Kaggle never says 404
    alice.push("wire-errors", "print(1)\n")
    alice.wait("wire-errors")
    bad_version = alice.call(
        "GetKernel", {"userName": "alice", "kernelSlug": "wire-errors", "versionLabel": "v9"}
    )
    assert bad_version.status_code == 404 and bad_version.json()["code"] == 404
    unknown = alice.call("NoSuchMethod")
    assert unknown.status_code == 404 and unknown.json()["code"] == 404


def test_version_label_selects_a_version(alice):
    alice.push("wire-versions", "print('one')\n")
    alice.wait("wire-versions")
    alice.push("wire-versions", "import time\ntime.sleep(120)\n")
    alice.wait("wire-versions", statuses=("RUNNING",))
    v1 = alice.call(
        "GetKernelSessionStatus",
        {"userName": "alice", "kernelSlug": "wire-versions", "versionLabel": "v1"},
    )
    assert v1.json()["status"] == "COMPLETE"
    assert alice.status("wire-versions")["status"] == "RUNNING"  # no label: the latest
    bare = alice.call(
        "GetKernelSessionStatus",
        {"userName": "alice", "kernelSlug": "wire-versions", "versionLabel": "1"},
    )
    assert bare.status_code == 404  # as Kaggle: the label is v<N>
    alice.call("DeleteKernel", {"userName": "alice", "kernelSlug": "wire-versions"})


def test_introspect_token(emu):
    url = f"{emu.api_url}/security.OAuthService/IntrospectToken"
    good = IntrospectTokenResponse.from_dict(
        httpx.post(url, json={"token": emu.users["bob"]}).json()
    )
    assert good.active and good.username == "bob"
    bad = httpx.post(url, json={"token": "wrong"}).json()
    assert bad == {"active": False}


def test_bearer_token_authenticates(emu):
    response = httpx.post(
        f"{emu.api_url}/kernels.KernelsApiService/GetAcceleratorQuotaStatistics",
        json={},
        headers={"Authorization": f"Bearer {emu.users['alice']}"},
    )
    assert response.status_code == 200
    wrong = httpx.post(
        f"{emu.api_url}/kernels.KernelsApiService/GetAcceleratorQuotaStatistics",
        json={},
        headers={"Authorization": "Bearer not-a-key"},
    )
    assert wrong.status_code == 401
