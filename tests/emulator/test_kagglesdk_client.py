"""kagglesdk's own KaggleClient talks to the emulator.

With KAGGLE_API_ENVIRONMENT=TEST the SDK calls http://localhost:7777/api/v1/...; a test
cannot count on owning port 7777, so HTTP_PROXY maps that address to the emulator's port
(the emulator accepts proxy-style request targets). `serve --port 7777` needs no proxy.
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest
import requests
from kagglesdk import KaggleClient
from kagglesdk.kernels.types.kernels_api_service import (
    ApiGetAcceleratorQuotaStatisticsRequest,
    ApiGetKernelSessionStatusRequest,
    ApiListKernelSessionOutputRequest,
    ApiSaveKernelRequest,
)
from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus


@pytest.fixture
def sdk(emu, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("HTTP_PROXY", emu.base_url)
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(emu.root))  # no ~/.kaggle/access_token of the host
    with KaggleClient(username="alice", password=emu.users["alice"]) as client:
        yield client.kernels.kernels_api_client


def test_sdk_push_status_and_output(sdk, emu):
    request = ApiSaveKernelRequest()
    request.slug = "alice/sdk-roundtrip"
    request.new_title = "Sdk Roundtrip"
    request.text = "open('answer.txt', 'w').write('42')\nprint('done')\n"
    request.language = "python"
    request.kernel_type = "script"
    request.is_private = True
    saved = sdk.save_kernel(request)
    assert saved.version_number >= 1 and not saved.error

    status_request = ApiGetKernelSessionStatusRequest()
    status_request.user_name, status_request.kernel_slug = "alice", "sdk-roundtrip"
    deadline = datetime.now().timestamp() + 60
    status = None
    while status is None or status.status not in (
        KernelWorkerStatus.COMPLETE,
        KernelWorkerStatus.ERROR,
    ):
        assert datetime.now().timestamp() < deadline
        try:
            status = sdk.get_kernel_session_status(status_request)
        except requests.HTTPError as exc:  # denied during the read-after-write lag
            assert exc.response.status_code == 403
        time.sleep(0.05)
    assert status.status is KernelWorkerStatus.COMPLETE

    output_request = ApiListKernelSessionOutputRequest()
    output_request.user_name, output_request.kernel_slug = "alice", "sdk-roundtrip"
    output = sdk.list_kernel_session_output(output_request)
    names = [f.file_name for f in output.files]
    assert names == sorted(["answer.txt", "__output__.json", "__results__.html", "custom.css"])
    assert '"data": "done\\n"' in output.log

    quota = sdk.get_accelerator_quota_statistics(ApiGetAcceleratorQuotaStatisticsRequest())
    assert quota.gpu_quota.total_time_allowed.total_seconds() == 30 * 3600


def test_sdk_raises_for_error_bodies(sdk):
    request = ApiGetKernelSessionStatusRequest()
    request.user_name, request.kernel_slug = "alice", "does-not-exist"
    with pytest.raises(requests.HTTPError) as raised:
        sdk.get_kernel_session_status(request)
    assert raised.value.response.status_code == 403
    assert str(raised.value) == "Permission 'kernels.get' was denied"
