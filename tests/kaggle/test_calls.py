"""Output listing across pages, kernel lookup, delete, quota and the API root."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import pytest

from orchestrator.kaggle import DEFAULT_API_URL, BadRequest, KaggleError, resolve_api_url
from tests.support.kaggle_fakes import body_of, json_response, rpc_method

LOG = json.dumps(
    [
        {"stream_name": "stdout", "time": 0.5, "data": "hello\n"},
        {"stream_name": "stderr", "time": 1.25, "data": "warn\n"},
    ]
)


def test_list_output_follows_next_page_token_to_the_end(make_client):
    pages = {
        "": {
            "files": [{"fileName": "a.txt", "url": "https://storage.test/a?sig=1"}],
            "log": LOG,
            "nextPageToken": "p2",
        },
        "p2": {
            "files": [{"fileName": "b/c.bin", "url": "/_out/tok/b/c.bin"}],
            "nextPageToken": "p3",
        },
        "p3": {"files": [{"fileName": "d.zip", "url": "https://storage.test/d?sig=3"}]},
    }
    tokens = []

    def handler(request):
        assert rpc_method(request) == "ListKernelSessionOutput"
        body = body_of(request)
        tokens.append(body.get("pageToken"))
        assert (
            body["userName"] == "alice" and body["kernelSlug"] == "run-1" and body["pageSize"] > 0
        )
        return json_response(pages[body.get("pageToken", "")])

    listing = make_client(handler).list_output("alice", "run-1")
    assert tokens == ["", "p2", "p3"]
    assert [f.name for f in listing.files] == ["a.txt", "b/c.bin", "d.zip"]
    # A relative URL is resolved against the API host.
    assert listing.files[1].url == "https://kaggle.test/_out/tok/b/c.bin"
    assert [(e.stream_name, e.time, e.data) for e in listing.log] == [
        ("stdout", 0.5, "hello\n"),
        ("stderr", 1.25, "warn\n"),
    ]


def test_list_output_stops_on_a_repeated_page_token(make_client):
    handler = lambda request: json_response({"files": [], "nextPageToken": "same"})  # noqa: E731
    with pytest.raises(KaggleError, match="repeated page token"):
        make_client(handler).list_output("alice", "run-1")


def test_list_output_of_a_plain_text_log_keeps_its_lines(make_client):
    handler = lambda request: json_response({"files": [], "log": "line one\nline two\n"})  # noqa: E731
    listing = make_client(handler).list_output("alice", "run-1")
    assert [e.data for e in listing.log] == ["line one", "line two"]


def test_get_kernel_returns_metadata_or_none(make_client):
    def handler(request):
        body = body_of(request)
        if body["kernelSlug"] == "missing":
            return json_response({"code": 404, "message": "not found"}, 404)
        return json_response(
            {
                "metadata": {
                    "ref": "alice/run-1",
                    "slug": "run-1",
                    "author": "alice",
                    "title": "Run one",
                    "currentVersionNumber": 2,
                    "lastRunTime": "2025-03-01T10:00:00.000Z",
                    "enableGpu": True,
                    "kernelDataSources": ["alice/run-0"],
                    "machineShape": "NvidiaTeslaT4",
                },
                "blob": {"source": "print(1)", "language": "python", "kernelType": "script"},
            }
        )

    client = make_client(handler)
    info = client.get_kernel("alice", "run-1")
    assert info.current_version_number == 2 and info.enable_gpu is True
    assert info.last_run_time == datetime(2025, 3, 1, 10, tzinfo=timezone.utc)
    assert info.kernel_sources == ["alice/run-0"] and info.source == "print(1)"
    assert client.get_kernel("alice", "missing") is None


def test_delete_kernel_posts_and_raises_on_an_error_message(make_client):
    seen = []

    def handler(request):
        seen.append((rpc_method(request), body_of(request)))
        if body_of(request)["kernelSlug"] == "locked":
            return json_response({"errorMessage": "cannot delete"})
        return json_response({})

    client = make_client(handler)
    client.delete_kernel("alice", "run-1")
    assert seen == [("DeleteKernel", {"userName": "alice", "kernelSlug": "run-1"})]
    with pytest.raises(BadRequest, match="cannot delete"):
        client.delete_kernel("alice", "locked")


def test_quota_reads_durations_and_refresh_time(make_client):
    def handler(request):
        assert rpc_method(request) == "GetAcceleratorQuotaStatistics"
        return json_response(
            {
                "quotaRefreshTime": "2025-03-08T00:00:00Z",
                "gpuQuota": {"timeUsed": "36000s", "totalTimeAllowed": "108000.5s"},
            }
        )

    quota = make_client(handler).quota()
    assert quota.time_used_s == 36000 and quota.total_allowed_s == 108000.5
    assert quota.remaining_s == 72000.5
    assert quota.refresh_time == datetime(2025, 3, 8, tzinfo=timezone.utc)


def test_api_root_from_argument_env_and_default(monkeypatch):
    monkeypatch.delenv("ORCHESTRATE_KAGGLE_API", raising=False)
    monkeypatch.delenv("KAGGLE_API_ENVIRONMENT", raising=False)
    assert resolve_api_url() == DEFAULT_API_URL == "https://api.kaggle.com/v1"
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    assert resolve_api_url() == "http://localhost/api/v1"
    monkeypatch.setenv("ORCHESTRATE_KAGGLE_API", "http://127.0.0.1:7777/api/v1/")
    assert resolve_api_url() == "http://127.0.0.1:7777/api/v1"
    assert resolve_api_url("http://h:1/api/v1") == "http://h:1/api/v1"


def test_calls_go_to_the_configured_root(make_client):
    urls = []

    def handler(request: httpx.Request):
        urls.append(str(request.url))
        return json_response({"status": "QUEUED"})

    make_client(handler).status("alice", "x")
    assert urls == ["https://kaggle.test/api/v1/kernels.KernelsApiService/GetKernelSessionStatus"]
