"""Fakes for the Kaggle client's unit tests: httpx.MockTransport handlers and their helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

from orchestrator.kaggle import Credentials, KaggleClient, RetryPolicy

API = "https://kaggle.test/api/v1"
SECRET_KEY = "k3y-5ecret-0123456789abcdef"


class SleepRecorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def json_response(body: object, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def rpc_method(request: httpx.Request) -> str:
    return request.url.path.rsplit("/", 1)[-1]


def body_of(request: httpx.Request) -> dict:
    return json.loads(request.content or b"{}")


class FailingStream(httpx.SyncByteStream):
    """A response body that sends some bytes and then breaks like a reset connection."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks = chunks
        self.error = error

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.error is not None:
            raise self.error


def mock_client(handler) -> KaggleClient:
    """alice's KaggleClient whose every request `handler(request)` answers (tiny retry waits)."""
    return KaggleClient(
        "http://kaggle.test/api/v1",
        Credentials(username="alice", key="k" * 32, source="test"),
        retry=RetryPolicy.fast(),
        transport=httpx.MockTransport(handler),
    )
