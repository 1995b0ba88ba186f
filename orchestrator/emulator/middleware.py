"""ASGI middleware: counts calls, injects faults, and accepts proxy-style request targets.

The official CLI can only reach `http://localhost` (KAGGLE_API_ENVIRONMENT=LOCALHOST);
pointing its HTTP_PROXY at us makes it send absolute-form targets
(`POST http://localhost/api/v1/...`), which we reduce to their path here.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from orchestrator.emulator.faults import FaultBook, FaultRule

RPC_PREFIXES = ("/api/v1/kernels.KernelsApiService/", "/api/v1/security.OAuthService/")

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
    return None


async def _discard(message) -> None:
    pass


class EmulatorMiddleware:
    def __init__(self, app, faults: FaultBook):
        self.app = app
        self.faults = faults

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
        rule = self.faults.pick(method)
        if rule is None:
            return await self.app(scope, receive, send)
        if rule.after_handling:
            await self.app(scope, receive, _discard)
            return await _send_fault(rule, send)
        if rule.kind in ("truncate", "corrupt"):
            return await self.app(scope, receive, _damaging_send(rule, send))
        return await _send_fault(rule, send)


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
