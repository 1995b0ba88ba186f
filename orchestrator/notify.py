"""`[notify]`: post chain events (segment done, chain done, chain failed, each ALERT) to a webhook.

Three payload shapes: Slack-compatible JSON (`{"text": ...}`, also Mattermost and Rocket.Chat),
Discord JSON (`{"content": ...}`) and ntfy (plain text body, title and priority in headers).

Posting must never cost a chain anything: `Notifier.send` retries 429/5xx/network failures
within one bounded budget per call, never raises, and returns what was not delivered so the
caller can note it. Every body passes through `redact` (the Kaggle credentials' redaction)
before it leaves, and failure descriptions name the webhook's host only: a webhook URL is a
secret of its own (its path is the token).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

FORMATS = ("slack", "discord", "ntfy")
EVENT_KINDS = ("segment_done", "chain_done", "chain_failed", "alert")
URL_ENV = "ORCHESTRATE_NOTIFY_URL"
DEFAULT_BUDGET_S = 15.0
REQUEST_TIMEOUT_S = 5.0
MAX_ATTEMPTS = 4
# Service limits: Discord refuses content over 2000 characters, ntfy truncates over 4096 bytes.
MAX_TEXT = {"slack": 3000, "discord": 2000, "ntfy": 4000}
# Hosts whose URL says the format, for `format` left unset.
KNOWN_HOSTS = {
    "hooks.slack.com": "slack",
    "discord.com": "discord",
    "discordapp.com": "discord",
    "ptb.discord.com": "discord",
    "canary.discord.com": "discord",
    "ntfy.sh": "ntfy",
}


def check_webhook_url(url: str) -> str:
    """The URL if it can take a POST (http or https with a host); ValueError otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"webhook URL must start with https:// (or http://) and name a host, e.g. "
            f"'https://ntfy.sh/my-topic'; got {webhook_host(url)!r}"
        )
    return url.strip()


def webhook_format(url: str, declared: str | None = None) -> str:
    """The payload format: `declared`, else the one the URL's host implies; ValueError if neither."""
    if declared:
        return declared
    host = (urlsplit(url).hostname or "").lower()
    if host in KNOWN_HOSTS:
        return KNOWN_HOSTS[host]
    if host.startswith("ntfy."):
        return "ntfy"
    raise ValueError(
        f"cannot tell the payload format from the host {host or url!r}; set format = "
        '"slack", "discord" or "ntfy" in [notify]'
    )


def webhook_host(url: str) -> str:
    """What a message may say about a webhook: scheme and host, never the path (the token)."""
    parts = urlsplit(url.strip())
    if parts.hostname:
        return f"{parts.scheme}://{parts.hostname}"
    return "(not a URL)"


@dataclass(frozen=True)
class NotifyEvent:
    kind: str  # one of EVENT_KINDS, or "test" (`chain notify-test`, never filtered out)
    chain: str
    text: str

    @property
    def title(self) -> str:
        what = {
            "segment_done": "segment done",
            "chain_done": "chain done",
            "chain_failed": "chain FAILED",
            "alert": "ALERT",
            "test": "test",
        }[self.kind]
        return f"orchestrate: {self.chain}: {what}"


def render(fmt: str, event: NotifyEvent) -> tuple[bytes, dict[str, str]]:
    """The request body and headers of one event in a payload format."""
    import json

    text = event.text
    limit = MAX_TEXT[fmt]
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if fmt == "slack":
        # Slack reads &, < and > as markup (links, mentions): escape them as its docs say.
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        body = {"text": escaped}
    elif fmt == "discord":
        # No pings: a message quoting "@everyone" from a log must not wake a whole server.
        body = {"content": text, "username": "orchestrate", "allowed_mentions": {"parse": []}}
    else:
        urgent = event.kind in ("alert", "chain_failed")
        headers = {
            "Content-Type": "text/plain; charset=utf-8",
            # Header values travel as latin-1: chain names are ASCII slugs, the rest is ours.
            "Title": event.title.encode("ascii", "replace").decode(),
            "Priority": "high" if urgent else "default",
            "Tags": "warning" if urgent else "white_check_mark",
        }
        return text.encode("utf-8"), headers
    return json.dumps(body).encode("utf-8"), {"Content-Type": "application/json"}


class _Retryable(Exception):
    def __init__(self, why: str, retry_after: float | None = None) -> None:
        super().__init__(why)
        self.retry_after = retry_after


class _Refused(Exception):
    """A 4xx other than 429: asking again will not help."""


@dataclass
class Notifier:
    """Posts events to one webhook; with no URL, a no-op."""

    url: str | None = field(default=None, repr=False)  # its path is a token: never shown
    fmt: str = "slack"
    events: tuple[str, ...] = EVENT_KINDS
    budget_s: float = DEFAULT_BUDGET_S
    redact: Callable[[str], str] = lambda text: text
    transport: object | None = None  # an httpx transport, for unit tests
    sleep: Callable[[float], None] = time.sleep

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def wanted(self, events: Iterable[NotifyEvent]) -> list[NotifyEvent]:
        if not self.enabled:
            return []
        return [e for e in events if e.kind in self.events or e.kind == "test"]

    def send(self, events: Iterable[NotifyEvent]) -> list[str]:
        """Post each wanted event, retrying within one budget; never raises. Returns one line
        per event not delivered (with the webhook's host, never its URL)."""
        wanted = self.wanted(events)
        if not wanted:
            return []
        failures: list[str] = []
        deadline = time.monotonic() + self.budget_s
        try:
            import httpx

            with httpx.Client(transport=self.transport, follow_redirects=True) as http:
                for event in wanted:
                    why = self._post(http, event, deadline)
                    if why is not None:
                        failures.append(
                            f"{event.kind} notification to {webhook_host(self.url)} not delivered: {why}"
                        )
        except Exception as error:  # a notification must never break a step
            failures.append(
                f"notifications to {webhook_host(self.url)} not delivered: "
                f"{type(error).__name__}: {self._scrub(str(error))}"
            )
        return failures

    def _post(self, http, event: NotifyEvent, deadline: float) -> str | None:
        """None when delivered, else why not."""
        import httpx
        import tenacity

        body, headers = render(self.fmt, event)
        body = self.redact(body.decode("utf-8")).encode("utf-8")
        headers = {k: self.redact(v) for k, v in headers.items()}

        def attempt() -> None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Retryable("no time left in this step's notification budget")
            try:
                response = http.post(
                    self.url, content=body, headers=headers, timeout=min(REQUEST_TIMEOUT_S, left)
                )
            except httpx.HTTPError as error:
                raise _Retryable(f"{type(error).__name__}: {self._scrub(str(error))}") from None
            if response.status_code == 429 or response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code}", _retry_after(response))
            if response.status_code >= 400:
                raise _Refused(f"HTTP {response.status_code} (check [notify] url)")

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            hint = getattr(error, "retry_after", None)
            backoff = min(0.5 * 2 ** (state.attempt_number - 1), 4.0)
            pause = min(hint, 10.0) if hint is not None else backoff
            return max(0.0, min(pause, deadline - time.monotonic()))

        try:
            for try_ in tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(_Retryable),
                stop=tenacity.stop_after_attempt(MAX_ATTEMPTS),
                wait=wait,
                sleep=self.sleep,
                reraise=True,
            ):
                with try_:
                    attempt()
        except (_Retryable, _Refused) as error:
            return str(error)
        return None

    def _scrub(self, text: str) -> str:
        text = self.redact(text)
        return text.replace(self.url, webhook_host(self.url)) if self.url else text


def _retry_after(response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


def notifier_for(settings, *, redact: Callable[[str], str] | None = None) -> Notifier:
    """The Notifier `[notify]` (or ORCHESTRATE_NOTIFY_URL) describes; UserError for a bad one."""
    from orchestrator.errors import UserError

    section = settings.notify
    url = os.environ.get(URL_ENV) or section.url
    if not url:
        return Notifier()
    source = URL_ENV if os.environ.get(URL_ENV) else "[notify] url"
    try:
        url = check_webhook_url(url)
        fmt = webhook_format(url, section.format)
    except ValueError as error:
        raise UserError(f"{source}: {error}") from None
    return Notifier(
        url=url,
        fmt=fmt,
        events=tuple(section.events),
        budget_s=section.budget_s,
        redact=redact or (lambda text: text),
    )
