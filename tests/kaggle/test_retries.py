"""Retries and error mapping of plain (idempotent) calls."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from orchestrator.kaggle import (
    AuthenticationError,
    BadRequest,
    KernelNotVisible,
    NotFoundError,
    RetryPolicy,
    ServiceUnavailable,
    Throttled,
)
from orchestrator.kaggle.retry import parse_retry_after
from tests.support.kaggle_fakes import json_response, rpc_method

RUNNING = {"status": "RUNNING"}


def sequence(*responses):
    """A handler answering with each item in turn (an exception item is raised)."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        item = responses[min(len(calls) - 1, len(responses) - 1)]
        if isinstance(item, Exception):
            raise item
        return item

    handler.calls = calls
    return handler


def test_status_reads_the_enum_name_and_posts_camel_case(make_client):
    handler = sequence(
        json_response({"status": "CANCEL_ACKNOWLEDGED", "failureMessage": "exceeded"})
    )
    client = make_client(handler)
    status = client.status("alice", "run-1", version=3)
    assert (status.status, status.failure_message, status.is_terminal) == (
        "CANCEL_ACKNOWLEDGED",
        "exceeded",
        True,
    )
    request = handler.calls[0]
    assert request.method == "POST"
    assert request.url.path == "/api/v1/kernels.KernelsApiService/GetKernelSessionStatus"
    assert request.read() and b'"userName": "alice"' in request.content.replace(b'":"', b'": "')
    assert b'"versionLabel"' in request.content and b"v3" in request.content


def test_429_with_retry_after_seconds_is_honoured(make_client, sleeps):
    handler = sequence(json_response({}, 429, **{"Retry-After": "7"}), json_response(RUNNING))
    assert make_client(handler).status("alice", "x").status == "RUNNING"
    assert sleeps.waits == [7.0]
    assert len(handler.calls) == 2


def test_429_with_retry_after_http_date_is_honoured(make_client, sleeps):
    when = datetime.now(timezone.utc) + timedelta(seconds=40)
    handler = sequence(
        json_response({}, 429, **{"Retry-After": format_datetime(when, usegmt=True)}),
        json_response(RUNNING),
    )
    make_client(handler).status("alice", "x")
    assert len(sleeps.waits) == 1 and 30 <= sleeps.waits[0] <= 40


def test_parse_retry_after_forms():
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert parse_retry_after("12", now=now) == 12
    assert parse_retry_after("Wed, 01 Jan 2025 00:01:00 GMT", now=now) == 60
    assert parse_retry_after("Tue, 31 Dec 2024 00:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


def test_429_after_all_retries_raises_throttled_with_retry_after(make_client):
    handler = sequence(json_response({}, 429, **{"Retry-After": "3"}))
    with pytest.raises(Throttled) as caught:
        make_client(handler, max_attempts=3).status("alice", "x")
    assert caught.value.retry_after == 3
    assert len(handler.calls) == 3


@pytest.mark.parametrize(
    "failure",
    [
        json_response({"code": 503, "message": "backend down"}, 503),
        httpx.Response(
            502, text="<html><body>Bad gateway</body></html>", headers={"content-type": "text/html"}
        ),
        httpx.Response(200, text="<html>maintenance</html>", headers={"content-type": "text/html"}),
        httpx.ReadError("connection reset by peer"),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("server disconnected"),
    ],
    ids=["503", "502-html", "200-html", "reset", "refused", "timeout", "disconnect"],
)
def test_transient_failures_are_retried_then_succeed(make_client, sleeps, failure):
    handler = sequence(failure, failure, json_response(RUNNING))
    assert make_client(handler).status("alice", "x").status == "RUNNING"
    assert len(handler.calls) == 3
    assert len(sleeps.waits) == 2


def test_persistent_5xx_raises_service_unavailable_after_bounded_tries(make_client):
    handler = sequence(json_response({"message": "nope"}, 500))
    with pytest.raises(ServiceUnavailable):
        make_client(handler, max_attempts=4).status("alice", "x")
    assert len(handler.calls) == 4


def test_total_time_bound_stops_retrying_before_a_long_wait(make_client, sleeps):
    handler = sequence(json_response({}, 429, **{"Retry-After": "100"}))
    client = make_client(handler, max_attempts=10)
    client.retry = RetryPolicy(max_attempts=10, max_total_s=50, max_retry_after_s=600, sleep=sleeps)
    client._rpc.retry = client.retry
    with pytest.raises(Throttled):
        client.status("alice", "x")
    assert len(handler.calls) == 1 and sleeps.waits == []


def test_backoff_has_real_jitter_and_respects_its_cap():
    import tenacity

    policy = RetryPolicy(initial_wait_s=1, max_wait_s=8)
    waits = []
    for attempt in (1, 2, 3, 4, 5, 6):
        state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
        state.attempt_number = attempt
        waits.extend(policy.backoff()(state) for _ in range(50))
    assert all(0 <= w <= 8 for w in waits)
    assert len({round(w, 6) for w in waits}) > 100  # not a fixed schedule
    assert all(0 <= policy.reconnect_wait(3) <= 4 for _ in range(50))


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, AuthenticationError),
        (403, KernelNotVisible),  # on a read of one kernel: absent or not visible yet
        (404, NotFoundError),
        (400, BadRequest),
    ],
)
def test_http_errors_map_to_types_without_retry(make_client, status, error):
    handler = sequence(json_response({"code": status, "message": "no"}, status))
    with pytest.raises(error) as caught:
        make_client(handler).status("alice", "x")
    assert caught.value.status_code == status
    assert len(handler.calls) == 1


@pytest.mark.parametrize(
    ("code", "error"), [(403, KernelNotVisible), (404, NotFoundError), (400, BadRequest)]
)
def test_code_in_a_200_json_body_is_an_error(make_client, code, error):
    handler = sequence(json_response({"code": code, "message": "Kernel not found"}))
    with pytest.raises(error, match="Kernel not found"):
        make_client(handler).status("alice", "x")


def test_code_503_in_a_200_body_is_retried(make_client):
    handler = sequence(json_response({"code": 503, "message": "busy"}), json_response(RUNNING))
    assert make_client(handler).status("alice", "x").status == "RUNNING"


def test_every_request_carries_a_timeout(make_client):
    seen = []

    def handler(request):
        seen.append(request.extensions.get("timeout"))
        return json_response(RUNNING)

    make_client(handler).status("alice", "x")
    assert seen and all(value is not None for value in seen[0].values())


def test_rpc_method_helper_sanity():
    request = httpx.Request("POST", "https://x/api/v1/kernels.KernelsApiService/GetKernel")
    assert rpc_method(request) == "GetKernel"
