"""Retry policy for Kaggle calls: exponential backoff with full jitter, bounded in tries and time."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import tenacity


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry transient failures (429, 5xx, timeouts, resets, HTML error pages).

    `max_attempts` counts the first try. `max_total_s` bounds the whole call including waits; a
    wait that would cross it is not started. `Retry-After` is honoured up to `max_retry_after_s`.
    """

    max_attempts: int = 6
    max_total_s: float = 180.0
    initial_wait_s: float = 1.0
    max_wait_s: float = 30.0
    max_retry_after_s: float = 120.0
    # After an ambiguous push of a new kernel: how long to look for it in the account's
    # listing (Kaggle lists a new kernel seconds to minutes after its push).
    listing_check_s: float = 30.0
    listing_poll_s: float = 2.0
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def fast(cls, max_attempts: int = 4) -> RetryPolicy:
        """Tiny waits, for tests."""
        return cls(
            max_attempts=max_attempts,
            max_total_s=10.0,
            initial_wait_s=0.001,
            max_wait_s=0.01,
            max_retry_after_s=0.05,
            listing_check_s=0.2,
            listing_poll_s=0.05,
        )

    def reconnect_wait(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait before reconnect number `failures` (>= 1) of a stream, with full jitter."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        return random.uniform(0.0, min(self.initial_wait_s * 2 ** (failures - 1), self.max_wait_s))

    def backoff(self) -> tenacity.wait.wait_base:
        # Full jitter: a uniformly random wait in [0, min(max, initial * 2**n)].
        return tenacity.wait_random_exponential(multiplier=self.initial_wait_s, max=self.max_wait_s)

    def wait_for(self, retry_state: tenacity.RetryCallState) -> float:
        """Server's Retry-After when it gave one (capped), else jittered exponential backoff."""
        outcome = retry_state.outcome
        hint = (
            getattr(outcome.exception(), "retry_after", None)
            if outcome and outcome.failed
            else None
        )
        if hint is not None:
            return min(max(hint, 0.0), self.max_retry_after_s)
        return self.backoff()(retry_state)

    def retrying(
        self, retry_on: type[BaseException] | tuple[type[BaseException], ...]
    ) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(retry_on),
            stop=tenacity.stop_after_attempt(self.max_attempts)
            | tenacity.stop_before_delay(self.max_total_s),
            wait=self.wait_for,
            sleep=self.sleep,
            reraise=True,
        )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date; None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max((when - now).total_seconds(), 0.0)
