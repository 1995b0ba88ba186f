"""The session's time budget: when to stop training so the outputs still get written.

deadline = session start + session limit - margin, where the margin is what the
session has *measured* the end to cost (final checkpoint, evaluation, finalisation),
times a safety factor, plus a floor (`RunConfig.margin_floor_s`: `min_margin_s`, by default
a 48th of the session, 15 minutes of 12 h, since Kaggle SIGKILLs at the limit). Speed is tracked as an EMA of seconds per step, and
the trainer asks for chunk sizes: chunks shrink as the deadline nears, so a slow-down
means fewer steps this session, never a hard kill. SIGTERM/SIGINT set a flag that the
trainer checks between chunks (and, when time is really out, inside a chunk).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class CostEstimate:
    """One recurring cost (checkpoint, evaluation, ...): running max and EMA in seconds."""

    max_s: float = 0.0
    ema_s: float = 0.0
    count: int = 0

    def record(self, seconds: float, alpha: float = 0.3) -> None:
        self.max_s = max(self.max_s, seconds)
        self.ema_s = seconds if self.count == 0 else alpha * seconds + (1 - alpha) * self.ema_s
        self.count += 1

    @property
    def planning_s(self) -> float:
        """Plan for the worst seen: a single slow save should not eat into the platform's kill."""
        return max(self.max_s, self.ema_s)


# Costs paid once at the end of a session, and how each is learnt.
END_COSTS = ("checkpoint", "evaluation", "finalize")


class SessionBudget:
    def __init__(
        self,
        *,
        session_start: float,
        session_limit_s: float,
        min_margin_s: float,
        safety_factor: float = 1.5,
        max_chunk_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.session_start = session_start
        self.session_limit_s = session_limit_s
        self.min_margin_s = min_margin_s
        self.safety_factor = safety_factor
        self.max_chunk_s = max_chunk_s
        self.clock = clock
        self.costs: dict[str, CostEstimate] = {name: CostEstimate() for name in END_COSTS}
        # Seconds the final evaluation+finalisation is expected to take before any is measured.
        self.guesses: dict[str, float] = {"checkpoint": 0.05, "evaluation": 1.0, "finalize": 1.0}
        self.seconds_per_step: float | None = None
        self._speed_alpha = 0.2

    # -- measurements -------------------------------------------------------------
    def record_cost(self, name: str, seconds: float) -> None:
        self.costs.setdefault(name, CostEstimate()).record(seconds)

    def guess_cost(self, name: str, seconds: float) -> None:
        """A prior (e.g. from the parent session or the checkpoint size), used until measured."""
        self.guesses[name] = max(self.guesses.get(name, 0.0), seconds)

    def record_steps(self, steps: int, seconds: float) -> None:
        if steps <= 0 or seconds <= 0:
            return
        observed = seconds / steps
        if self.seconds_per_step is None:
            self.seconds_per_step = observed
        else:
            # Slowing down must register fast (it threatens the deadline); speeding up can be slow.
            alpha = 0.6 if observed > self.seconds_per_step else self._speed_alpha
            self.seconds_per_step = alpha * observed + (1 - alpha) * self.seconds_per_step

    # -- planning -----------------------------------------------------------------
    def end_cost_s(self) -> float:
        total = 0.0
        for name in END_COSTS:
            estimate = self.costs.get(name)
            measured = estimate.planning_s if estimate and estimate.count else 0.0
            total += max(measured, self.guesses.get(name, 0.0))
        return total

    def margin_s(self) -> float:
        return self.min_margin_s + self.safety_factor * self.end_cost_s()

    @property
    def platform_deadline(self) -> float:
        return self.session_start + self.session_limit_s

    def stop_time(self) -> float:
        """Epoch seconds by which training must have stopped."""
        return self.platform_deadline - self.margin_s()

    def training_seconds_left(self) -> float:
        return self.stop_time() - self.clock()

    def session_seconds_left(self) -> float:
        return self.platform_deadline - self.clock()

    def affordable_steps(self) -> int | None:
        """Steps that still fit before the stop time, or None before the speed is known."""
        left = self.training_seconds_left()
        if left <= 0:
            return 0
        if self.seconds_per_step is None:
            return None
        return int(left / self.seconds_per_step)

    def plan_chunk(self, wanted: int, first_chunk_steps: int = 64) -> int:
        """How many of `wanted` steps to run before the next check (0 = stop now).

        A chunk lasts at most `max_chunk_s`, so signals and slow-downs are noticed quickly,
        and never longer than the time left.
        """
        if wanted <= 0:
            return 0
        affordable = self.affordable_steps()
        if affordable is None:  # speed unknown: a small probe chunk measures it
            return min(wanted, first_chunk_steps) if self.training_seconds_left() > 0 else 0
        per_chunk = max(1, math.floor(self.max_chunk_s / max(self.seconds_per_step or 0.0, 1e-9)))
        return max(0, min(wanted, affordable, per_chunk))

    def out_of_time(self) -> bool:
        return self.training_seconds_left() <= 0

    # -- persistence (estimates carry over to the next session as priors) ----------
    def state_dict(self) -> dict[str, Any]:
        return {
            "seconds_per_step": self.seconds_per_step,
            "costs": {name: vars(cost).copy() for name, cost in self.costs.items()},
        }

    def load_priors(self, state: dict[str, Any]) -> None:
        """Take the parent's measured end costs as guesses; speed is re-measured (the GPU may differ)."""
        for name, cost in (state.get("costs") or {}).items():
            if cost.get("count"):
                self.guess_cost(name, max(cost.get("max_s", 0.0), cost.get("ema_s", 0.0)))


class StopSignals:
    """SIGTERM and SIGINT both ask for the same graceful stop; a flag, nothing more."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self.received_at: float | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            self.received_at = time.time()

    @property
    def requested(self) -> bool:
        return self.received is not None
