"""The stall ALERT: a running segment whose training step has not moved for N progress checks.

A hung session (a deadlocked env, a stuck data loader) stays RUNNING and burns GPU quota until
Kaggle's 12 h kill, and its status never says so. From the first step that sees a segment
RUNNING, a chain step reads its log so far at most once per `[chain] stall_check_s` and takes
the step of the last `@@orchestrate` progress event (none yet: no progress either). After
`[chain] stall_polls` checks in a row without a move it raises one ALERT, and another only
after the step has moved again. An unreadable log is skipped, never counted.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from kernel_template.layout import parse_event
from orchestrator.chain import machine


class ProgressWatch(BaseModel):
    """What the checks of one run have seen (kept in its ledger record as `progress_watch`)."""

    step: int | None = None  # the last progress event's step; None before the first one
    total: int | None = None
    checked_at: str | None = None
    changed_at: str | None = None  # when the step last moved (or the first check)
    still: int = 0  # checks in a row that found the step where the previous one left it
    alerted: bool = False


def due(watch: ProgressWatch, now: datetime, every_s: float) -> bool:
    last = machine.parse_time(watch.checked_at)
    return last is None or (now - last).total_seconds() >= every_s


def last_progress(entries) -> dict | None:
    """The last progress event in log entries (objects with `.data`)."""
    for entry in reversed(entries):
        for line in reversed(entry.data.splitlines()):
            event = parse_event(line)
            if event is not None and event.get("event") == "progress":
                return event
    return None


def observe(watch: ProgressWatch, progress: dict | None, now: datetime) -> ProgressWatch:
    """The watch after one check that found `progress` (the last progress event, if any)."""
    step = progress.get("step") if progress else None
    total = progress.get("total") if progress else watch.total
    stamp = machine.iso(now)
    if watch.checked_at is None or step != watch.step:
        return ProgressWatch(step=step, total=total, checked_at=stamp, changed_at=stamp)
    return watch.model_copy(update={"checked_at": stamp, "still": watch.still + 1})


def stall_message(ref: str, watch: ProgressWatch, now: datetime) -> str:
    since = machine.parse_time(watch.changed_at) or now
    minutes = (now - since).total_seconds() / 60
    where = (
        f"still at step {watch.step} of {watch.total}"
        if watch.step is not None
        else "no training step reported yet"
    )
    return (
        f"{ref} is RUNNING but made no progress in {watch.still} checks over {minutes:.0f} min "
        f"({where}): it may be hung, and a hung session burns quota until Kaggle's 12 h limit; "
        f"look at its log with `orchestrate watch {ref}`"
    )


def check(client, ledger, run, *, polls: int, every_s: float, now: datetime) -> str | None:
    """One progress check of a RUNNING run, if due; the ALERT text when it is now stalled.
    An unreadable log is no evidence either way: the check is skipped, not counted."""
    from orchestrator.kaggle.errors import KaggleError

    if polls <= 0:
        return None
    watch = ProgressWatch.model_validate(getattr(run, "progress_watch", None) or {})
    if watch.checked_at is None:
        # First seen RUNNING: the clock starts here, and the first log read comes one
        # interval later (a segment shorter than that is never read at all).
        stamp = machine.iso(now)
        ledger.update(run.slug, progress_watch={"checked_at": stamp, "changed_at": stamp})
        return None
    if not due(watch, now, every_s):
        return None
    try:
        entries = client.log_so_far(run.owner, run.slug)
    except KaggleError:
        return None
    watch = observe(watch, last_progress(entries), now)
    alert = None
    if watch.still >= polls and not watch.alerted:
        alert = stall_message(run.ref, watch, now)
        watch = watch.model_copy(update={"alerted": True})
    ledger.update(run.slug, progress_watch=watch.model_dump())
    return alert
