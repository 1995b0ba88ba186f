"""A local HTTP receiver standing in for Slack, Discord or ntfy: records every POST it gets."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """`fail_first` requests are answered 503 (a webhook having a bad moment); later ones 200."""

    fail_first: int = 0
    requests: list[Received] = field(default_factory=list)
    failed: int = 0

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    if receiver.failed < receiver.fail_first:
                        receiver.failed += 1
                        status = 503
                    else:
                        receiver.requests.append(Received(self.path, dict(self.headers), body))
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hooks/T000/B000/s3cr3t-webhook-token") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def bodies(self) -> list[str]:
        with self.lock:
            return [r.text for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
