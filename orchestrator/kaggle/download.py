"""Resumable, constant-memory download of one output file with its sha256 computed while writing.

The hashing runs on a helper thread fed through a bounded queue (sha256 releases the GIL), so
it overlaps the network reads and file writes instead of adding to them.

Bytes go to `dest.part`; a leftover `.part` (or a connection that drops mid-body) is continued
with `Range: bytes=N-` after re-hashing the bytes already there. The finished file is renamed into
place atomically, so `dest` either does not exist or is complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from .errors import AuthenticationError, IncompleteDownload, NotFoundError
from .models import DownloadResult
from .retry import RetryPolicy
from .rpc import TRANSPORT_FAILURES, Transient, check_response, final_error, transport_failure

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
ProgressCallback = Callable[[int, int | None], None]

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _hash_prefix(path: Path) -> tuple[hashlib._Hash, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return digest, size


HASH_QUEUE_CHUNKS = 64  # at most this many received chunks wait for the hashing thread


class _BackgroundHash:
    """Feeds chunks to `digest.update` on a helper thread; leaving the block waits until
    every chunk given is hashed (also when the block raises), so the digest then matches the
    bytes written."""

    def __init__(self, digest) -> None:
        self._digest = digest
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=HASH_QUEUE_CHUNKS)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="download-sha256", daemon=True)

    def _run(self) -> None:
        update, get = self._digest.update, self._chunks.get
        while (chunk := get()) is not None:
            if self._error is None:
                try:
                    update(chunk)
                except BaseException as error:  # noqa: BLE001 - re-raised in the caller
                    self._error = error

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def __enter__(self) -> _BackgroundHash:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._chunks.put(None)
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error


class _Progress:
    """The .part file's hash and length so far, kept in step with what is on disk."""

    def __init__(self, part: Path) -> None:
        self.part = part
        if part.exists():
            self.digest, self.size = _hash_prefix(part)
        else:
            self.digest, self.size = hashlib.sha256(), 0
        # What the bytes on disk were cut from (total size, ETag or Last-Modified), once a
        # response told us: a resumed answer must describe the same file.
        self.total: int | None = None
        self.validator: str | None = None

    def restart(self) -> None:
        self.part.unlink(missing_ok=True)
        self.digest, self.size = hashlib.sha256(), 0
        self.total = self.validator = None


def _total_size(response: httpx.Response, offset: int) -> int | None:
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if match and match.group(3) != "*":
            return int(match.group(3))
    length = response.headers.get("content-length")
    if length is not None and response.headers.get("content-encoding", "identity") == "identity":
        return int(length) + (offset if response.status_code == 206 else 0)
    return None


def download_file(
    http: httpx.Client,
    url: str,
    dest: Path,
    *,
    retry: RetryPolicy,
    expected_size: int | None = None,
    progress: ProgressCallback | None = None,
) -> DownloadResult:
    """Fetch `url` (no auth: signed URLs may live on another host) into `dest`; see the module doc."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    state = _Progress(part_path(dest))
    if expected_size is not None and state.size > expected_size:
        state.restart()
    total: int | None = expected_size
    failures_without_progress = 0
    last_failure: Transient | None = None
    while True:
        size_before = state.size
        try:
            total = _fetch_into(http, url, state, total, progress) or total
            break
        except Transient as failure:
            last_failure = failure
        failures_without_progress = 0 if state.size > size_before else failures_without_progress + 1
        if failures_without_progress >= retry.max_attempts:
            raise final_error(last_failure, f"download of {dest.name}")
        logger.info(
            "Download of %s interrupted at %d bytes (%s); resuming",
            dest.name,
            state.size,
            last_failure,
        )
        retry.sleep(retry.reconnect_wait(failures_without_progress, last_failure.retry_after))

    for wanted, what in ((total, "the server announced"), (expected_size, "were expected")):
        if wanted is not None and state.size != wanted:
            raise IncompleteDownload(
                f"{dest.name}: got {state.size} bytes but {wanted} {what}; the partial file stays at {state.part}"
            )
    if not state.part.exists():  # an empty file
        state.part.touch()
    os.replace(state.part, dest)
    return DownloadResult(path=dest, size=state.size, sha256=state.digest.hexdigest())


def _fetch_into(
    http: httpx.Client,
    url: str,
    state: _Progress,
    total: int | None,
    progress: ProgressCallback | None,
) -> int | None:
    """One GET from the current offset to the end; returns the total size if the server told it."""
    headers = {"Accept-Encoding": "identity"}
    if state.size:
        headers["Range"] = f"bytes={state.size}-"
        if state.validator:
            headers["If-Range"] = state.validator  # changed since? then the server sends it all
    try:
        with http.stream("GET", url, headers=headers) as response:
            if response.status_code == 416:
                match = re.match(r"bytes\s+\*/(\d+)", response.headers.get("content-range", ""))
                if match and int(match.group(1)) == state.size:
                    return state.size  # the .part already holds everything
                state.restart()
                raise Transient(
                    "range not satisfiable; restarting from zero", status_code=416, retry_after=0
                )
            if response.status_code >= 400:
                response.read()
                try:
                    check_response(response, expect_json=False)
                except (AuthenticationError, NotFoundError) as exc:
                    raise type(exc)(
                        f"output file refused (HTTP {response.status_code}); its signed URL may have "
                        "expired: list the output again",
                        status_code=response.status_code,
                    ) from None
            if state.size and response.status_code != 206:
                logger.info("Server ignored the Range request; downloading from zero")
                state.restart()
            elif response.status_code == 206:
                match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
                if not match or int(match.group(1)) != state.size:
                    state.restart()
                    raise Transient(
                        "server answered a different byte range; restarting", retry_after=0
                    )
            announced = _total_size(response, state.size)
            if state.size and state.total is not None and announced not in (None, state.total):
                # The bytes on disk came from a different answer (an error body, another file).
                state.restart()
                raise Transient(
                    "resumed answer describes a different file; restarting", retry_after=0
                )
            total = announced or total
            state.total = announced or state.total
            state.validator = (
                response.headers.get("etag")
                or response.headers.get("last-modified")
                or state.validator
            )
            # Chunks are taken as they arrive (none is lost to a half-filled buffer when the
            # connection drops) and written through a 1 MiB buffer.
            with (
                state.part.open("ab", buffering=CHUNK_SIZE) as handle,
                _BackgroundHash(state.digest) as hasher,
            ):
                try:
                    for chunk in response.iter_bytes():
                        handle.write(chunk)
                        hasher.update(chunk)
                        state.size += len(chunk)
                        if progress is not None:
                            progress(state.size, total)
                finally:
                    handle.flush()
                    os.fsync(handle.fileno())
    except TRANSPORT_FAILURES as exc:
        raise transport_failure(exc) from None
    if total is not None and state.size < total:
        raise Transient(f"connection closed at {state.size} of {total} bytes")
    return total
