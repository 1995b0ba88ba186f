"""Output download: streamed to .part, sha256 on the fly, Range resume, atomic rename, no auth."""

from __future__ import annotations

import hashlib
import os
import re

import httpx
import pytest

from orchestrator.kaggle import IncompleteDownload, ServiceUnavailable
from tests.support.kaggle_fakes import FailingStream

DATA = os.urandom(3 * (1 << 20) + 12345)  # a bit over three 1 MiB chunks
URL = "https://storage.test/out/model.zip?sig=abc"


class Storage:
    """Serves DATA honouring Range; can cut the body after `drop_after` bytes on chosen requests."""

    def __init__(
        self,
        data: bytes = DATA,
        *,
        drop_after: dict[int, int] | None = None,
        honour_range: bool = True,
    ) -> None:
        self.data = data
        self.drop_after = drop_after or {}
        self.honour_range = honour_range
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        number = len(self.requests)
        start = 0
        match = re.match(r"bytes=(\d+)-$", request.headers.get("range", ""))
        if match and self.honour_range:
            start = int(match.group(1))
            if start >= len(self.data):
                return httpx.Response(416, headers={"content-range": f"bytes */{len(self.data)}"})
        body = self.data[start:]
        headers = {"content-length": str(len(body)), "content-type": "application/octet-stream"}
        status = 200
        if start:
            status = 206
            headers["content-range"] = f"bytes {start}-{len(self.data) - 1}/{len(self.data)}"
        if number in self.drop_after:
            cut = self.drop_after[number]
            return httpx.Response(
                status,
                headers=headers,
                stream=FailingStream([body[:cut]], httpx.ReadError("reset")),
            )
        return httpx.Response(status, headers=headers, content=body)


def test_download_streams_hashes_and_renames(make_client, tmp_path):
    storage = Storage()
    progress = []
    result = make_client(storage).download(
        URL,
        tmp_path / "out" / "model.zip",
        progress=lambda done, total: progress.append((done, total)),
    )
    assert result.path.read_bytes() == DATA
    assert result.size == len(DATA) and result.sha256 == hashlib.sha256(DATA).hexdigest()
    assert not (tmp_path / "out" / "model.zip.part").exists()
    assert progress[-1] == (len(DATA), len(DATA))
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


def test_signed_urls_get_no_credentials(make_client, tmp_path):
    storage = Storage()
    make_client(storage).download(URL, tmp_path / "f")
    assert "authorization" not in storage.requests[0].headers


def test_a_dropped_connection_resumes_with_range(make_client, tmp_path):
    storage = Storage(drop_after={1: 1_500_000, 2: 700_000})
    result = make_client(storage).download(URL, tmp_path / "f")
    assert (
        result.sha256 == hashlib.sha256(DATA).hexdigest() and (tmp_path / "f").read_bytes() == DATA
    )
    ranges = [r.headers.get("range") for r in storage.requests]
    assert ranges == [None, "bytes=1500000-", "bytes=2200000-"]


def test_a_leftover_part_file_is_rehashed_and_continued(make_client, tmp_path):
    (tmp_path / "f.part").write_bytes(DATA[:2_000_000])
    storage = Storage()
    result = make_client(storage).download(URL, tmp_path / "f", expected_size=len(DATA))
    assert storage.requests[0].headers["range"] == "bytes=2000000-"
    assert result.sha256 == hashlib.sha256(DATA).hexdigest()


def test_a_complete_part_file_is_accepted_on_416(make_client, tmp_path):
    (tmp_path / "f.part").write_bytes(DATA)
    result = make_client(Storage()).download(URL, tmp_path / "f")
    assert result.size == len(DATA) and (tmp_path / "f").read_bytes() == DATA


def test_a_server_that_ignores_range_restarts_from_zero(make_client, tmp_path):
    (tmp_path / "f.part").write_bytes(b"stale bytes that are not the file")
    storage = Storage(honour_range=False)
    result = make_client(storage).download(URL, tmp_path / "f")
    assert result.sha256 == hashlib.sha256(DATA).hexdigest()


def test_a_part_longer_than_expected_starts_over(make_client, tmp_path):
    (tmp_path / "f.part").write_bytes(DATA + b"junk")
    result = make_client(Storage()).download(URL, tmp_path / "f", expected_size=len(DATA))
    assert result.sha256 == hashlib.sha256(DATA).hexdigest()


def test_size_mismatch_with_the_expected_size_is_an_error(make_client, tmp_path):
    with pytest.raises(IncompleteDownload, match="expected"):
        make_client(Storage()).download(URL, tmp_path / "f", expected_size=len(DATA) + 1)
    assert not (tmp_path / "f").exists() and (tmp_path / "f.part").exists()


def test_endless_drops_without_progress_give_up(make_client, tmp_path):
    storage = Storage(drop_after={i: 0 for i in range(1, 20)})
    with pytest.raises(ServiceUnavailable):
        make_client(storage, max_attempts=3).download(URL, tmp_path / "f")
    assert len(storage.requests) == 3


def test_5xx_on_download_is_retried(make_client, tmp_path):
    answers = [httpx.Response(503, text="busy"), None]
    storage = Storage()

    def handler(request):
        answer = answers.pop(0) if answers else None
        return answer if answer is not None else storage(request)

    result = make_client(handler).download(URL, tmp_path / "f")
    assert result.size == len(DATA)


def test_empty_file(make_client, tmp_path):
    result = make_client(Storage(b"")).download(URL, tmp_path / "empty")
    assert result.size == 0 and (tmp_path / "empty").read_bytes() == b""
    assert result.sha256 == hashlib.sha256(b"").hexdigest()


def test_a_resume_that_describes_another_file_restarts(make_client, tmp_path):
    """A first answer that was not the file (garbage, then a drop) must not stay as the prefix."""
    storage = Storage()
    answers = [
        httpx.Response(
            200,
            headers={"content-length": "4096", "etag": '"garbage"'},
            stream=FailingStream([b'{"'], httpx.ReadError("reset")),
        )
    ]

    def handler(request):
        return answers.pop(0) if answers else storage(request)

    result = make_client(handler).download(URL, tmp_path / "f")
    assert (
        result.sha256 == hashlib.sha256(DATA).hexdigest() and (tmp_path / "f").read_bytes() == DATA
    )
    assert storage.requests[0].headers["if-range"] == '"garbage"'
