"""ASGI middleware: counts calls, injects faults, and accepts proxy-style request targets.

The official CLI can only reach `http://localhost` (KAGGLE_API_ENVIRONMENT=LOCALHOST);
pointing its HTTP_PROXY at us makes it send absolute-form targets
(`POST http://localhost/api/v1/...`), which we reduce to their path here.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from urllib.parse import urlsplit

from starlette.requests import Request

from orchestrator.emulator.api import RPC_METHODS
from orchestrator.emulator.auth import authenticate
from orchestrator.emulator.datasets import BLOB_METHODS, DATASET_METHODS
from orchestrator.emulator.faults import FaultBook, FaultRule

RPC_PREFIXES = (
    "/api/v1/kernels.KernelsApiService/",
    "/api/v1/security.OAuthService/",
    "/api/v1/datasets.DatasetApiService/",
    "/api/v1/blobs.BlobApiService/",
)

HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Error %d</title></head><body>"
    b"<h1>Error %d</h1><p>The server encountered a temporary error. Please try again.</p>"
    b"</body></html>"
)


class DropConnection(Exception):
    """Raised mid-response so uvicorn closes the socket with the body incomplete."""


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DropConnection))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


def method_name(path: str) -> str | None:
    """The name faults and call counts use for a request path."""
    for prefix in RPC_PREFIXES:
        if path.startswith(prefix):
            return path.removeprefix(prefix)
    if path.startswith("/api/v1/kernels/logs/stream/"):
        return "logs_stream"
    if path.startswith("/_out/"):
        return "download"
    if path.startswith("/_upload/"):
        return "upload"
    return None


async def _discard(message) -> None:
    pass


def parse_rate_limit(text: str) -> tuple[int, float]:
    """`N/S` (N calls per S seconds) -> (N, S); `off` or `0` -> (0, 0): no limit."""
    if text.strip().lower() in ("off", "0", "none", ""):
        return 0, 0.0
    calls, sep, window = text.partition("/")
    try:
        parsed = (int(calls), float(window))
    except ValueError:
        parsed = None
    if not sep or parsed is None or parsed[0] < 0 or parsed[1] <= 0:
        raise ValueError(f"bad rate limit {text!r}: write N/S (N calls per S seconds), or off")
    return parsed


class RateLimiter:
    """Per user, a sliding window: at most `calls` accepted calls in any `window_s` seconds."""

    def __init__(self, calls: int, window_s: float):
        self.calls = calls
        self.window_s = window_s
        self._lock = threading.Lock()
        self._seen: dict[str, deque[float]] = {}

    @property
    def enabled(self) -> bool:
        return self.calls > 0

    def hit(self, user: str, now: float | None = None) -> int | None:
        """Record a call; None if allowed, else whole seconds until a slot frees."""
        now = time.monotonic() if now is None else now
        with self._lock:
            seen = self._seen.setdefault(user, deque())
            while seen and seen[0] <= now - self.window_s:
                seen.popleft()
            if len(seen) >= self.calls:
                return max(1, math.ceil(seen[0] + self.window_s - now))
            seen.append(now)
            return None


def rate_limited(method: str) -> bool:
    """The RPC methods and the live log (not downloads, not the token check)."""
    return (
        method == "logs_stream"
        or method in RPC_METHODS
        or method in DATASET_METHODS
        or method in BLOB_METHODS
    )


class EmulatorMiddleware:
    def __init__(
        self,
        app,
        faults: FaultBook,
        users: dict[str, str] | None = None,
        limiter: RateLimiter | None = None,
    ):
        self.app = app
        self.faults = faults
        self.users = users or {}
        self.limiter = limiter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"].startswith(("http://", "https://")):
            target = urlsplit(scope["path"])
            scope = dict(scope, path=target.path or "/", raw_path=(target.path or "/").encode())
        method = method_name(scope["path"])
        if method is None:
            return await self.app(scope, receive, send)
        self.faults.count(method)
        if self.limiter is not None and self.limiter.enabled and rate_limited(method):
            user = authenticate(Request(scope), self.users)
            wait = self.limiter.hit(user) if user is not None else None
            if wait is not None:
                return await self._too_many(send, wait)
        rule = self.faults.pick(method)
        if rule is None:
            return await self.app(scope, receive, send)
        if rule.after_handling:
            await self.app(scope, receive, _discard)
            return await _send_fault(rule, send)
        if rule.kind in ("truncate", "corrupt"):
            return await self.app(scope, receive, _damaging_send(rule, send))
        return await _send_fault(rule, send)

    async def _too_many(self, send, wait: int) -> None:
        limiter = self.limiter
        message = (
            f"Too many requests: at most {limiter.calls} calls per {limiter.window_s:g} seconds; "
            f"retry in {wait} s."
        )
        body = json.dumps({"code": 429, "message": message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(wait).encode()),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _send_fault(rule: FaultRule, send) -> None:
    if rule.kind == "drop":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"', "more_body": True})
        raise DropConnection
    if rule.kind == "html":
        body = HTML_PAGE % (rule.status, rule.status)
        content_type = b"text/html; charset=utf-8"
    else:
        message = "Too many requests" if rule.status == 429 else "Service temporarily unavailable"
        body = b'{"code": %d, "message": "%s (emulated fault)"}' % (rule.status, message.encode())
        content_type = b"application/json"
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if rule.retry_after is not None:
        headers.append((b"retry-after", b"%g" % rule.retry_after))
    await send({"type": "http.response.start", "status": rule.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _damaging_send(rule: FaultRule, send):
    """Buffers the body, then sends half of it (truncate) or all of it with bytes flipped."""
    state: dict = {"start": None, "body": bytearray()}

    async def damaged(message):
        if message["type"] == "http.response.start":
            state["start"] = message
            return
        state["body"] += message.get("body", b"")
        if message.get("more_body"):
            return
        body = state["body"]
        await send(state["start"])
        if rule.kind == "truncate" and body:
            await send(
                {
                    "type": "http.response.body",
                    "body": bytes(body[: len(body) // 2]),
                    "more_body": True,
                }
            )
            raise DropConnection
        for i in range(len(body) // 2, min(len(body), len(body) // 2 + 16)):
            body[i] ^= 0xFF
        await send({"type": "http.response.body", "body": bytes(body)})

    return damaged
