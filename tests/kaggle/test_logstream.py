"""The live log: SSE parsing, reconnect with de-duplication, JSON fallback after the session."""

from __future__ import annotations

import json

import httpx
import pytest

from orchestrator.kaggle import NotFoundError, ServiceUnavailable
from tests.support.kaggle_fakes import FailingStream

SSE = {"content-type": "text/event-stream"}


def event(i: int) -> bytes:
    return (
        b"data: "
        + json.dumps({"stream_name": "stdout", "time": i, "data": f"line {i}\n"}).encode()
        + b"\n\n"
    )


def test_sse_entries_arrive_in_order_until_end_of_log(make_client):
    seen = []

    def handler(request):
        seen.append(request)
        body = b": keep-alive\n\n" + event(0) + event(1) + b"data: END_OF_LOG\n\n" + event(99)
        return httpx.Response(200, headers=SSE, content=body)

    entries = list(make_client(handler).stream_log("alice", "run-1"))
    assert [e.data for e in entries] == ["line 0\n", "line 1\n"]
    assert seen[0].method == "GET"
    assert seen[0].url.path == "/api/v1/kernels/logs/stream/alice/run-1"
    assert "text/event-stream" in seen[0].headers["accept"]


def test_reconnect_after_a_drop_skips_replayed_entries(make_client):
    connections = []

    def handler(request):
        connections.append(request)
        if len(connections) == 1:  # three entries, then the connection is reset
            return httpx.Response(
                200,
                headers=SSE,
                stream=FailingStream([event(0), event(1), event(2)], httpx.ReadError("reset")),
            )
        if len(connections) == 2:  # replays from the start, closes cleanly without END_OF_LOG
            return httpx.Response(
                200, headers=SSE, content=event(0) + event(1) + event(2) + event(3)
            )
        return httpx.Response(
            200, headers=SSE, content=b"".join(event(i) for i in range(6)) + b"data: END_OF_LOG\n\n"
        )

    entries = list(make_client(handler).stream_log("alice", "run-1"))
    assert [e.time for e in entries] == [0, 1, 2, 3, 4, 5]
    assert len(connections) == 3


def test_stored_json_log_after_the_session_continues_where_the_stream_stopped(make_client):
    connections = []
    stored = [{"stream_name": "stdout", "time": i, "data": f"line {i}\n"} for i in range(4)]

    def handler(request):
        connections.append(request)
        if len(connections) == 1:
            return httpx.Response(
                200,
                headers=SSE,
                stream=FailingStream([event(0), event(1)], httpx.RemoteProtocolError("gone")),
            )
        return httpx.Response(200, json=stored)

    entries = list(make_client(handler).stream_log("alice", "run-1"))
    assert [e.time for e in entries] == [0, 1, 2, 3]


def test_a_stream_that_never_progresses_gives_up(make_client):
    def handler(request):
        return httpx.Response(200, headers=SSE, stream=FailingStream([], httpx.ReadError("reset")))

    with pytest.raises(ServiceUnavailable):
        list(make_client(handler, max_attempts=3).stream_log("alice", "run-1"))


def test_unknown_kernel_log_is_not_found(make_client):
    handler = lambda request: httpx.Response(404, json={"code": 404, "message": "no such kernel"})  # noqa: E731
    with pytest.raises(NotFoundError):
        list(make_client(handler).stream_log("alice", "nope"))


def test_version_goes_in_the_query(make_client):
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, json=[])

    assert list(make_client(handler).stream_log("alice", "run-1", version=2)) == []
    assert seen[0].url.params["versionLabel"] == "v2"
