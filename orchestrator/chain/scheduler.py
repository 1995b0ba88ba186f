"""`chain run` and `sweep`: call `step` in a loop, round-robin across chains, until all end.

Every decision stays in `step` (and so in the ledger): this loop only chooses when to ask
again. A single chain is followed live with `orchestrator.watch.follow` while a segment runs
(the display carries on from segment to segment); several chains are polled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

from rich.console import Console

from orchestrator.chain.states import StepResult
from orchestrator.chain.step import ChainStepper
from orchestrator.errors import ExitCode, OrchestrateError

DEFAULT_POLL_INTERVAL_S = 30.0
MIN_SLEEP_S = 0.2


def seconds_until(until: datetime | None, now: datetime | None = None) -> float | None:
    if until is None:
        return None
    return (until - (now or datetime.now(timezone.utc))).total_seconds()


def run_chains(
    stepper: ChainStepper,
    names: list[str],
    *,
    poll_interval: float = DEFAULT_POLL_INTERVAL_S,
    follow: bool = True,
    console: Console | None = None,
    on_result: Callable[[StepResult], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_wall_s: float | None = None,
) -> dict[str, StepResult]:
    """Step every chain until each is done, failed or cancelled; returns their last results."""
    console = console or Console(stderr=True)
    last: dict[str, StepResult] = {}
    pending = list(dict.fromkeys(names))
    started = time.monotonic()
    while pending:
        waits: list[float] = []
        for name in list(pending):
            result = stepper.step(name)
            last[name] = result
            if on_result is not None:
                on_result(result)
            if result.finished:
                pending.remove(name)
                continue
            if result.outcome == "advanced" or (
                result.outcome == "running" and follow and len(pending) == 1
            ):
                if follow and len(pending) == 1 and result.running:
                    _follow(stepper, result.running, console, poll_interval)
                waits.append(0.0)
            else:
                left = seconds_until(result.until)
                waits.append(poll_interval if left is None else min(max(left, 0.0), poll_interval))
        if not pending:
            break
        if max_wall_s is not None and time.monotonic() - started > max_wall_s:
            break
        pause = min(waits) if waits else poll_interval
        if pause > 0:
            sleep(max(pause, MIN_SLEEP_S))
    return last


def _follow(stepper: ChainStepper, ref: str, console: Console, poll_interval: float) -> None:
    """Show the running segment's live log and progress until it ends (best effort)."""
    from orchestrator.kaggle.errors import KaggleError

    owner, _, slug = ref.partition("/")
    try:
        from orchestrator.watch import follow
    except ImportError:  # results side not installed: plain polling it is
        return
    from orchestrator.watch import denial_grace_for

    try:
        follow(
            stepper.client,
            owner,
            slug,
            console=console,
            poll_s=max(poll_interval, 0.5),
            denial_grace_s=denial_grace_for(stepper.ledger.get(slug)),
        )
    except (KaggleError, OrchestrateError, OSError) as error:
        console.print(f"(live log unavailable: {error}; polling instead)", markup=False)


def exit_code(results: dict[str, StepResult]) -> int:
    """Worst outcome wins: failed (1) over infrastructure (3) over fine (0)."""
    codes = [r.exit_code for r in results.values()]
    if ExitCode.RUN_FAILED in codes:
        return int(ExitCode.RUN_FAILED)
    return max(codes, default=0)
