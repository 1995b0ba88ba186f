"""One Kaggle RPC over httpx: `POST {api}/{service}/{Method}` with a kagglesdk body, errors typed.

Transient failures (429, 5xx, timeouts, resets, an HTML page where JSON was expected) raise
`Transient`, which callers retry under a `RetryPolicy`; once retries run out, `final_error` turns
it into `Throttled` or `ServiceUnavailable`.
"""

from __future__ import annotations

import logging
from typing import TypeVar

import httpx
from kagglesdk.kaggle_object import KaggleObject

from .errors import (
    AuthenticationError,
    BadRequest,
    KaggleError,
    KernelNotVisible,
    NotFoundError,
    ServiceUnavailable,
    Throttled,
)
from .retry import RetryPolicy, parse_retry_after

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=KaggleObject)

# Connection-level failures worth another try: timeouts, refused/reset connections, a server
# that hung up mid-response.
TRANSPORT_FAILURES = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

# Reads of one kernel: kaggle.com answers 403 for a kernel that does not exist (yet) or is
# another account's private one, so a 403 here says nothing about the credentials.
KERNEL_READS = frozenset(
    {"GetKernel", "GetKernelSessionStatus", "ListKernelSessionOutput", "DeleteKernel", "logs"}
)


class Transient(Exception):
    """A failure that may pass if the same request is sent again."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        may_have_reached_server: bool = True,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after
        # False only when the request certainly never arrived (connection refused).
        self.may_have_reached_server = may_have_reached_server


def final_error(failure: Transient, what: str) -> KaggleError:
    if failure.status_code == 429:
        return Throttled(
            f"{what}: still rate limited by Kaggle after retries", retry_after=failure.retry_after
        )
    return ServiceUnavailable(
        f"{what}: Kaggle unavailable after retries ({failure})", status_code=failure.status_code
    )


def transport_failure(exc: Exception) -> Transient:
    return Transient(
        f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
        may_have_reached_server=not isinstance(exc, httpx.ConnectError),
    )


def _message_of(body: object, fallback: str) -> str:
    if isinstance(body, dict):
        for key in ("message", "error", "errorMessage"):
            if body.get(key):
                return str(body[key])
    return fallback


def error_for_status(status: int, message: str, method: str | None = None) -> Exception:
    """The typed error (or Transient) for an HTTP status or a JSON body's `code`.

    `method` names the call, so that a 403 on a read of one kernel becomes KernelNotVisible.
    """
    if status == 429 or status >= 500:
        return Transient(f"HTTP {status}: {message}", status_code=status)
    if status == 403 and method in KERNEL_READS:
        return KernelNotVisible(
            f"Kaggle denied access to the kernel (HTTP 403: {message}): it does not exist, "
            "is not visible yet after its push, or belongs to another account",
            status_code=status,
        )
    if status in (401, 403):
        return AuthenticationError(
            f"Kaggle refused the credentials (HTTP {status}): {message}", status_code=status
        )
    if status == 404:
        return NotFoundError(f"Not found on Kaggle (HTTP 404): {message}", status_code=status)
    return BadRequest(f"Kaggle rejected the request (HTTP {status}): {message}", status_code=status)


def check_response(
    response: httpx.Response, *, expect_json: bool = True, method: str | None = None
) -> object:
    """Raise for any error the response carries; return its parsed JSON body (or None)."""
    content_type = response.headers.get("content-type", "").lower()
    body: object = None
    if "json" in content_type or (
        expect_json and response.content and not content_type.startswith("text/html")
    ):
        try:
            body = response.json()
        except ValueError:
            body = None
    if response.status_code >= 400:
        failure = error_for_status(
            response.status_code, _message_of(body, response.reason_phrase), method
        )
        if isinstance(failure, Transient):
            failure.retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise failure
    if isinstance(body, dict) and isinstance(body.get("code"), int) and body["code"] >= 400:
        failure = error_for_status(body["code"], _message_of(body, "error"), method)
        if isinstance(failure, Transient):
            failure.retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise failure
    if expect_json and body is None:
        # A proxy's or maintenance page's HTML, or a cut-off body: not an answer, try again.
        kind = "an HTML page" if content_type.startswith("text/html") else "a non-JSON body"
        raise Transient(
            f"expected JSON, got {kind} (HTTP {response.status_code})",
            status_code=response.status_code,
        )
    return body


class RpcChannel:
    """Sends kagglesdk request objects to `{api}/{service}/{Method}` and parses the replies."""

    def __init__(self, http: httpx.Client, api_url: str, retry: RetryPolicy) -> None:
        self.http = http
        self.api_url = api_url.rstrip("/")
        self.retry = retry

    def url(self, service: str, method: str) -> str:
        return f"{self.api_url}/{service}/{method}"

    def call_once(
        self, service: str, method: str, request: KaggleObject, response_type: type[T]
    ) -> T:
        """One attempt, no retry. Raises Transient for anything worth repeating."""
        body = request.__class__.to_dict(request)
        try:
            response = self.http.post(self.url(service, method), json=body)
        except TRANSPORT_FAILURES as exc:
            raise transport_failure(exc) from None
        try:
            parsed = check_response(response, method=method)
        except KaggleError as exc:
            raise type(exc)(f"{method}: {exc}", status_code=exc.status_code) from None
        return response_type.from_dict(parsed if isinstance(parsed, dict) else {})

    def call(self, service: str, method: str, request: KaggleObject, response_type: type[T]) -> T:
        """Call with retries on transient failures; only for idempotent methods."""
        try:
            for attempt in self.retry.retrying(Transient):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        logger.info(
                            "Retrying %s (attempt %d)", method, attempt.retry_state.attempt_number
                        )
                    return self.call_once(service, method, request, response_type)
        except Transient as exc:
            raise final_error(exc, method) from None
        raise AssertionError("unreachable")
