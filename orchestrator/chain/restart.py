"""`chain resume` and `chain extend`: take a stopped chain on, or raise a finished one's total.

Both only rewrite the chain record (under the ledger lock); the next `chain step` or
`chain run` does the pushing, from the newest verified checkpoint the chain holds:

* resume: a failed or cancelled chain becomes active again, and the failures so far are
  forgiven (`forgiven_runs`), so the segment that failed gets `max_retries` fresh attempts.
  With `--from` (a verified local checkpoint dir, or a pulled run), that checkpoint is where
  it continues, e.g. when the kernel holding the newest one was deleted on kaggle.com: a
  dir is uploaded as a private dataset and attached to the next segment.
* extend: the total grows and segments are planned for the rest. `total_timesteps` is a
  result field, so the chain's config lists it in `allow_config_change` and gets a new hash;
  the next segment resumes exactly, and schedules that depend on the total (DQN's
  exploration) follow the new total from the resumed step on.
"""

from __future__ import annotations

import math

from kernel_template.config import RunConfig
from orchestrator.chain import machine
from orchestrator.chain.start import split_evenly
from orchestrator.chain.start_point import (
    CheckpointSource,
    allowing_total_change,
    config_changes,
    refuse_changes,
    upload_start_point,
)
from orchestrator.chain.states import ChainState
from orchestrator.errors import UserError
from orchestrator.ledger import ChainRecord, Ledger

# DQN's defaults, for the warning below (stable-baselines3 DQN.__init__).
DQN_EXPLORATION_FRACTION = 0.1
DQN_EXPLORATION_FINAL_EPS = 0.05


def _chain(ledger: Ledger, name: str) -> ChainRecord:
    chain = ledger.get_chain(name)
    if chain is None:
        names = ", ".join(c.name for c in ledger.chains()) or "none yet"
        raise UserError(f"no chain {name!r} in {ledger.path} (chains: {names})")
    return chain


def resume_chain(
    ledger: Ledger, name: str, *, source: CheckpointSource | None = None, client=None
) -> ChainRecord:
    """Make a failed or cancelled chain (with `source`: any chain not done) active again."""
    with ledger.locked():
        chain = _chain(ledger, name)
        if chain.state is ChainState.DONE:
            raise UserError(
                f"chain {name} is done ({chain.total_timesteps} timesteps); to train on, raise "
                f"its total: orchestrate chain extend {name} --to N"
            )
        if source is None and not chain.state.finished:  # failed or cancelled: done is above
            raise UserError(
                f"chain {name} is {chain.state}, not failed or cancelled: nothing to resume; "
                f"`orchestrate chain run {name}` carries it on (or pass --from DIR to continue "
                "from a local checkpoint)"
            )
        runs = ledger.runs(name)
        if source is not None:
            changed = config_changes(source, RunConfig.model_validate(chain.run_config))
            refuse_changes(source, changed)
            best = machine.start_point(runs, start=chain.start_from)
            if best is not None and source.step < best.step:
                raise UserError(
                    f"--from {source.label} is at step {source.step}, but chain {name} holds a "
                    f"newer checkpoint at step {best.step} ({best.ref}); pass that one, e.g. "
                    f"runs/{best.slug}/checkpoints/{best.step:012d}"
                )
            chain.start_from = upload_start_point(client, chain.owner or "", source)
        chain.forgiven_runs = sorted({*chain.forgiven_runs, *(r.slug for r in runs)})
        was = chain.state
        chain.state = ChainState.ACTIVE
        chain.wait_until = None
        chain.waiting_reason = None
        chain.consecutive_unknowns = 0
        point = machine.start_point(runs, start=chain.start_from)
        where = (
            f"step {point.step} ({point.kind} {point.ref}, "
            f"manifest {point.checkpoint.manifest_sha256[:12]})"
            if point
            else "scratch (no verified checkpoint yet)"
        )
        chain.note(f"resumed ({was} before) from {where}; earlier failures forgiven")
        return ledger.save_chain(chain)


def extend_chain(
    ledger: Ledger,
    name: str,
    to: int,
    *,
    segments: list[int] | None = None,
    segment_timesteps: int | None = None,
    count: int | None = None,
) -> ChainRecord:
    """Raise the chain's total to `to`, planning segments for the rest."""
    with ledger.locked():
        chain = _chain(ledger, name)
        if to <= chain.total_timesteps:
            raise UserError(
                f"--to {to} must be more than chain {name}'s {chain.total_timesteps} timesteps"
            )
        extra = to - chain.total_timesteps
        sizes = _extra_segments(chain, extra, segments, segment_timesteps, count)
        config = RunConfig.model_validate({**chain.run_config, "total_timesteps": to})
        config = allowing_total_change(config)
        runs = ledger.runs(name)
        # Segment k+1 is planned at chain.segments[k]: keep the plan aligned with the segments
        # that already ran, however many more than planned there were.
        ran = max((r.segment or 0 for r in runs), default=0)
        past = chain.segments + [max(chain.segments)] * max(0, ran - len(chain.segments))
        planned = past + sizes
        if chain.segment_seconds:
            seconds = chain.segment_seconds
            chain.segment_seconds = seconds + [max(seconds)] * (len(planned) - len(seconds))
        was = chain.state
        old_total = chain.total_timesteps
        chain.run_config = config.model_dump(mode="json")
        chain.config_hash = config.config_hash()
        chain.total_timesteps = to
        chain.segments = planned
        if chain.state is ChainState.DONE:
            chain.state = ChainState.ACTIVE
        chain.note(
            f"extended from {old_total} to {to} timesteps: {len(sizes)} more segment(s) {sizes}"
        )
        warning = exploration_warning(config, old_total)
        if warning:
            chain.note(warning, "warning")
        chain.note(f"state {was} -> {chain.state}")
        return ledger.save_chain(chain)


def _extra_segments(
    chain: ChainRecord,
    extra: int,
    segments: list[int] | None,
    segment_timesteps: int | None,
    count: int | None,
) -> list[int]:
    if segments:
        if sum(segments) != extra:
            raise UserError(
                f"--segments add up to {sum(segments)}, but the extension adds {extra} "
                "timesteps; make them match"
            )
        return segments
    if count:
        if count > extra:
            raise UserError(f"{count} segments cannot split {extra} timesteps; use fewer")
        return split_evenly(extra, count)
    size = segment_timesteps or max(chain.segments)
    return split_evenly(extra, math.ceil(extra / size))


def exploration_warning(config: RunConfig, reached: int) -> str | None:
    """DQN's epsilon decays over `exploration_fraction` of the total: a new total puts the
    resumed step back inside that window when reached / new total is below the fraction."""
    if config.algo != "DQN":
        return None
    fraction = float(config.hyperparams.get("exploration_fraction", DQN_EXPLORATION_FRACTION))
    progress = reached / config.total_timesteps
    if progress > fraction:
        return None
    return (
        f"DQN explores over the first {fraction:g} of the total: at step {reached} of the new "
        f"{config.total_timesteps} its epsilon rises again (progress {progress:.2f}); extend "
        "further, or lower hyperparams.exploration_fraction in a new chain"
    )
