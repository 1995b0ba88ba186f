"""The chain's decisions as pure functions of ledger state (and, for gates, observed limits).

`next_action(chain, runs, now)` looks at the chain record and its run records and names the
one thing to do next; `orchestrator.chain.step` carries it out and writes the ledger, then
asks again. Nothing here talks to Kaggle, so every branch is unit-testable.

Segments are numbered from 1 (`segment_index` 0 means "not a chain"). Segment k's kernel is
`<chain>-s<k>`; attempt n > 0 of it is `<chain>-s<k>-r<n>`, so a slug is never pushed twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from kernel_template.layout import SessionSummary
from orchestrator.chain.states import ChainState, iso
from orchestrator.ledger import ChainRecord, RunRecord, StartPoint

ACTIVE_STATES = ("pushed", "running")
# Push refusals that mean "not now" (a full slot, a spent quota, rate limiting): the slug was
# not spent, so the next push reuses it, and they never count as failed attempts.
WAIT_REFUSALS = ("capacity", "quota", "throttled")
# A run that never trained past its parent's checkpoint; these count against max_retries.
NO_PROGRESS = "no_progress"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def segment_slug(chain: str, segment: int, attempt: int = 0) -> str:
    return f"{chain}-s{segment}" if attempt == 0 else f"{chain}-s{segment}-r{attempt}"


# -- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Idle:
    """The chain is not active (done, failed or cancelled): nothing to do."""

    reason: str


@dataclass(frozen=True)
class Finish:
    state: ChainState  # DONE or FAILED
    reason: str


@dataclass(frozen=True)
class ResolveIntent:
    """A push was written down but not confirmed: ask Kaggle (GetKernel) before anything else."""

    run: RunRecord


@dataclass(frozen=True)
class Poll:
    run: RunRecord


@dataclass(frozen=True)
class Pull:
    run: RunRecord


@dataclass(frozen=True)
class Push:
    segment: int
    attempt: int
    slug: str
    segment_timesteps: int
    start: StartPoint | None

    @property
    def kernel_sources(self) -> list[str]:
        return [self.start.ref] if self.start and self.start.kind == "kernel" else []

    @property
    def dataset_sources(self) -> list[str]:
        return [self.start.ref] if self.start and self.start.kind == "dataset" else []


@dataclass(frozen=True)
class Wait:
    reason: str
    until: datetime | None = None


Action = Idle | Finish | ResolveIntent | Poll | Pull | Push | Wait


# -- reading the runs ------------------------------------------------------------------------


def latest_run(runs: list[RunRecord]) -> RunRecord | None:
    """The run pushed (or about to be) last: highest segment, then highest attempt."""
    return max(runs, key=lambda r: (r.segment or 0, r.attempt), default=None)


def start_point(
    runs: list[RunRecord], before: RunRecord | None = None, start: StartPoint | None = None
) -> StartPoint | None:
    """Where the next segment starts: the pulled run with the furthest verified checkpoint
    (optionally: pulled before `before`). A chain's `start_from` counts as a checkpoint it
    holds, and wins a tie (the user named it)."""
    best = start
    for run in sorted(runs, key=lambda r: (r.segment or 0, r.attempt)):
        if before is not None and run.slug == before.slug:
            break
        if run.state != "pulled" or run.checkpoint is None:
            continue
        if best is None or run.checkpoint.step > best.step:  # ties: the original holder
            best = StartPoint(owner=run.owner, slug=run.slug, checkpoint=run.checkpoint)
    return best


def made_progress(runs: list[RunRecord], run: RunRecord, start: StartPoint | None = None) -> bool:
    """Whether a pulled run left a checkpoint further than the chain had before it."""
    if run.checkpoint is None:
        return False
    previous = start_point(runs, before=run, start=start)
    return run.checkpoint.step > (previous.step if previous else 0)


def ended_early(chain: ChainRecord, run: RunRecord) -> bool:
    """The run's loop ended the training on purpose (`Session.stop_early`). It ends the
    total it was aiming at: after `chain extend` raised the total, the chain trains on."""
    summary = run.summary
    return (
        summary is not None
        and summary.stopped_early
        and summary.total_timesteps >= chain.total_timesteps
    )


def early_end(chain: ChainRecord, runs: list[RunRecord]) -> RunRecord | None:
    """The pulled run whose loop ended the chain early, if the latest one did."""
    latest = latest_run(runs)
    if latest is not None and latest.state == "pulled" and ended_early(chain, latest):
        return latest
    return None


def training_done(chain: ChainRecord, run: RunRecord) -> bool:
    if ended_early(chain, run):
        return True
    if run.summary is not None:
        reached = run.summary.timesteps_end
    else:
        reached = run.checkpoint.step if run.checkpoint else None
    return reached is not None and reached >= chain.total_timesteps


def is_failed_push(run: RunRecord) -> bool:
    """A push Kaggle refused (or that never reached it), other than a "not now"."""
    return run.state == "failed_push" and run.refusal not in WAIT_REFUSALS


def failed_attempts(
    runs: list[RunRecord],
    segment: int,
    start: StartPoint | None = None,
    forgiven: list[str] | tuple[str, ...] = (),
) -> int:
    """Attempts at a segment that came to nothing: sessions that left no new checkpoint, and
    refused pushes (so a chain whose pushes are refused every time ends after max_retries).
    Runs `chain resume` forgave do not count."""
    return sum(
        1
        for r in runs
        if r.segment == segment
        and r.slug not in forgiven
        and ((r.state == "pulled" and not made_progress(runs, r, start)) or is_failed_push(r))
    )


def segment_size(chain: ChainRecord, segment: int, done_steps: int) -> int:
    """Planned timesteps of a segment; past the plan, the largest planned size (or what is left)."""
    remaining = max(chain.total_timesteps - done_steps, 1)
    if segment <= len(chain.segments):
        return min(chain.segments[segment - 1], chain.total_timesteps)
    return min(max(chain.segments), remaining)


def max_segments(chain: ChainRecord) -> int:
    """Bound on segments (each one made progress): the plan, and up to 3x more for segments
    cut short by the session limit, so a badly sized plan cannot burn the quota forever."""
    return 4 * len(chain.segments) + 4


# -- the decision ----------------------------------------------------------------------------


def next_action(chain: ChainRecord, runs: list[RunRecord], now: datetime) -> Action:
    if chain.state.finished:
        return Idle(f"chain {chain.name} is {chain.state}")

    latest = latest_run(runs)
    if latest is not None:
        if latest.state == "intent":
            return ResolveIntent(latest)
        if latest.state in ACTIVE_STATES:
            return Poll(latest)
        if latest.state == "terminal":
            return Pull(latest)
        if latest.state == "pulled" and training_done(chain, latest):
            return Finish(ChainState.DONE, done_reason(chain, latest))
        if latest.state == "pulled" and latest.early_error:
            # Deterministic (a bad hyperparameter, a broken env): a retry burns a session on it.
            return Finish(ChainState.FAILED, early_failure_reason(latest))

    until = parse_time(chain.wait_until)
    if until is not None and now < until:
        return Wait(chain.waiting_reason or "waiting", until)

    start = chain.start_from
    begin = start_point(runs, start=start)
    done_steps = begin.step if begin else 0
    if latest is None:
        segment, attempt = 1, 0
    elif latest.state == "failed_push" and latest.refusal in WAIT_REFUSALS:
        # Refused for now (and the wait is over): the slug was not spent, push it again.
        segment, attempt = latest.segment or 1, latest.attempt
    elif made_progress(runs, latest, start):
        segment, attempt = (latest.segment or 0) + 1, 0
    else:
        segment = latest.segment or 1
        failures = failed_attempts(runs, segment, start, chain.forgiven_runs)
        if failures > chain.max_retries:
            if latest.state == "failed_push":
                why = f"Kaggle refused the push: {latest.failure_message or 'no reason given'}"
            else:
                why = latest.failure_message or (
                    f"ended {latest.kernel_status} without a new checkpoint"
                )
            return Finish(
                ChainState.FAILED,
                f"segment {segment} failed {failures} times without progress; last: {latest.slug} {why}",
            )
        attempt = latest.attempt + 1

    if segment > max_segments(chain):
        return Finish(
            ChainState.FAILED,
            f"{segment - 1} segments ran but only {done_steps} of {chain.total_timesteps} timesteps "
            "are done; plan shorter segments (e.g. orchestrate plan) and start a new chain",
        )
    return Push(
        segment=segment,
        attempt=attempt,
        slug=segment_slug(chain.name, segment, attempt),
        segment_timesteps=segment_size(chain, segment, done_steps),
        start=begin,
    )


def done_reason(chain: ChainRecord, run: RunRecord) -> str:
    if ended_early(chain, run):
        return early_end_line(run, of_total=chain.total_timesteps)
    return f"{chain.total_timesteps} timesteps reached by {run.slug}"


def early_end_line(run: RunRecord, of_total: int | None = None) -> str:
    """How a run that ended the chain early says so: where, and the loop's reason."""
    where = f"step {run.summary.timesteps_end}" + (f" of {of_total}" if of_total else "")
    return f"ended early by {run.slug} at {where}: {run.summary.reason}"


def early_failure_reason(run: RunRecord) -> str:
    return (
        f"segment {run.segment} ({run.slug}) failed before its first training step: "
        f"{run.early_error}; not retried, it would fail the same way. Fix the cause "
        "(`orchestrate preflight` builds the model and trains a few steps locally), then "
        "start a new chain"
    )


# -- the environment a chain must keep ------------------------------------------------------

# What pickled checkpoints depend on; a session summary's `versions` names them.
PINNED_VERSION_KEYS = ("python", "numpy", "torch", "stable_baselines3", "docker_image")


def pinned_versions(versions: dict | None) -> dict[str, str]:
    return {key: str(versions[key]) for key in PINNED_VERSION_KEYS if (versions or {}).get(key)}


def version_drift(reference: dict | None, versions: dict | None) -> list[str]:
    """`name: before -> now` for each pinned version a segment changed; [] when either side
    reported nothing (a session killed before its summary) or nothing changed."""
    before, now = pinned_versions(reference), pinned_versions(versions)
    if not before or not now:
        return []
    return [
        f"{key}: {before.get(key, '(none)')} -> {now.get(key, '(none)')}"
        for key in PINNED_VERSION_KEYS
        if before.get(key) != now.get(key)
    ]


# -- gates before a push ---------------------------------------------------------------------


def quota_gate(
    *,
    remaining_s: float,
    refresh_time: datetime | None,
    need_s: float,
    reserve_s: float,
    now: datetime,
) -> Wait | None:
    """Wait when the week's GPU quota cannot cover the segment plus the reserve."""
    if remaining_s >= need_s + reserve_s:
        return None
    until = refresh_time if refresh_time and refresh_time > now else now + timedelta(hours=1)
    return Wait(
        f"GPU quota: {remaining_s / 3600:.1f} h left this week, the next segment needs "
        f"~{need_s / 3600:.1f} h plus a {reserve_s / 3600:.1f} h reserve; waiting until the "
        f"quota refreshes at {iso(until)}",
        until,
    )


def capacity_gate(busy_sessions: int, cap: int) -> Wait | None:
    if busy_sessions < cap:
        return None
    return Wait(f"GPU slots busy: {busy_sessions} of {cap} batch GPU sessions are running")


def resume_mismatch(expected: StartPoint | None, summary: SessionSummary | None) -> str | None:
    """An alert when a segment did not resume from the checkpoint the ledger says it should."""
    if expected is None or summary is None:
        return None
    resumed = summary.resumed_from
    if resumed is not None and resumed.manifest_sha256 == expected.checkpoint.manifest_sha256:
        return None
    want = expected.checkpoint.manifest_sha256[:12]
    if resumed is None:
        return (
            f"expected a resume from {expected.ref} step {expected.step} "
            f"(manifest {want}) but the session started from scratch"
        )
    return (
        f"resumed from manifest {resumed.manifest_sha256[:12]} (step {resumed.step}), not the "
        f"recorded {want} (step {expected.step}) of {expected.ref}"
    )
