"""The live log of a kernel session: `GET {api}/kernels/logs/stream/{owner}/{slug}`.

While the session runs the server sends Server-Sent Events, one `data: {json}` line per log entry
and `data: END_OF_LOG` at the end; once the session is over it sends the stored log as a JSON
array of the same entries. A reconnect replays from the start, so entries already handed out are
skipped by position, as the official CLI does.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import httpx

from .models import LogEntry
from .retry import RetryPolicy
from .rpc import TRANSPORT_FAILURES, Transient, check_response, final_error, transport_failure

logger = logging.getLogger(__name__)

END_OF_LOG = "END_OF_LOG"
STREAM_HEADERS = {"Accept": "text/event-stream, */*"}


@contextmanager
def open_log(http: httpx.Client, url: str, **options) -> Iterator[httpx.Response]:
    """One GET of the log; an error answer raises as any other call's does."""
    with http.stream("GET", url, headers=STREAM_HEADERS, **options) as response:
        if response.status_code >= 400:
            response.read()
            check_response(response, expect_json=False, method="logs")
        yield response


def is_event_stream(response: httpx.Response) -> bool:
    """SSE while the session runs; the stored log (a JSON array) once it is over."""
    return response.headers.get("content-type", "").lower().startswith("text/event-stream")


def log_entry(raw: object) -> LogEntry:
    """One entry from its JSON shape `{stream_name, time, data}` (or a bare line)."""
    if not isinstance(raw, dict):
        return LogEntry(stream_name="stdout", time=None, data=str(raw))
    time = raw.get("time")
    try:
        time = float(time) if time is not None else None
    except (TypeError, ValueError):
        time = None
    return LogEntry(
        stream_name=str(raw.get("stream_name") or "stdout"),
        time=time,
        data=str(raw.get("data") or ""),
    )


def parse_log_blob(text: str | None) -> list[LogEntry]:
    """A stored log (a JSON array of entries); anything else is taken line by line."""
    if not text:
        return []
    try:
        payload = json.loads(text)
    except ValueError:
        return [
            LogEntry(stream_name="stdout", time=None, data=line)
            for line in text.splitlines()
            if line
        ]
    items = payload if isinstance(payload, list) else [payload]
    return [log_entry(item) for item in items]


def iter_sse_entries(lines: Iterable[str]) -> Iterator[LogEntry | None]:
    """Entries from SSE lines; yields None once for END_OF_LOG and stops."""
    for line in lines:
        if not line.startswith("data:"):
            continue  # blank separators, comments (keep-alives), event/id fields
        payload = line[len("data:") :].strip()
        if payload == END_OF_LOG:
            yield None
            return
        try:
            yield log_entry(json.loads(payload))
        except ValueError:
            yield LogEntry(stream_name="stdout", time=None, data=payload)


def stream_log(
    http: httpx.Client, url: str, retry: RetryPolicy, *, version_label: str | None = None
) -> Iterator[LogEntry]:
    """Every log entry exactly once, reconnecting on drops until END_OF_LOG or the stored log."""
    delivered = 0
    failures_without_progress = 0
    params = {"versionLabel": version_label} if version_label else None
    while True:
        delivered_before = delivered
        connected = False
        try:
            with open_log(http, url, params=params) as response:
                connected = True
                if is_event_stream(response):
                    for position, entry in enumerate(iter_sse_entries(response.iter_lines())):
                        if entry is None:
                            return
                        if position >= delivered:  # the server replays from the start
                            delivered = position + 1
                            yield entry
                    raise Transient("log stream closed before END_OF_LOG")
                response.read()
                for entry in parse_log_blob(response.text)[delivered:]:
                    delivered += 1
                    yield entry
                return
        except TRANSPORT_FAILURES as exc:
            if connected and isinstance(exc, httpx.ReadTimeout):
                # A healthy stream of a kernel that printed nothing for a while: follow on, no strike.
                logger.debug("Log stream idle past the read timeout; reconnecting")
                continue
            failure = transport_failure(exc)
        except Transient as exc:
            failure = exc
        failures_without_progress = (
            0 if delivered > delivered_before else failures_without_progress + 1
        )
        if failures_without_progress >= retry.max_attempts:
            raise final_error(failure, "log stream")
        if failures_without_progress > 1:
            logger.info("Log stream connection lost (%s); reconnecting", failure)
        retry.sleep(retry.reconnect_wait(failures_without_progress, failure.retry_after))


def read_log_so_far(
    http: httpx.Client,
    url: str,
    *,
    quiet_s: float = 1.0,
    max_s: float = 3.0,
    clock: Callable[[], float] = time.monotonic,
) -> list[LogEntry]:
    """The log a session has written so far, from one connection: the stream replays it from
    the start in a burst, so reading stops once it goes quiet for `quiet_s`, after `max_s`
    (a chatty session is never quiet), or at END_OF_LOG. No retries: the caller asks later.
    Raises KaggleError for an error answer or a failed connection."""
    timeout = httpx.Timeout(10.0, read=quiet_s)
    deadline = clock() + max_s
    entries: list[LogEntry] = []
    opened = False
    try:
        with open_log(http, url, timeout=timeout) as response:
            if not is_event_stream(response):
                response.read()
                return parse_log_blob(response.text)
            opened = True

            def lines() -> Iterator[str]:
                for line in response.iter_lines():
                    yield line
                    if clock() > deadline:
                        return

            for entry in iter_sse_entries(lines()):
                if entry is None:
                    break
                entries.append(entry)
    except httpx.ReadTimeout as exc:
        if not opened:  # no stream within quiet_s: that is no log, not a quiet one
            raise final_error(transport_failure(exc), "log read") from None
        # Quiet: everything written so far has arrived.
    except TRANSPORT_FAILURES as exc:
        raise final_error(transport_failure(exc), "log read") from None
    except Transient as exc:
        raise final_error(exc, "log read") from None
    return entries
