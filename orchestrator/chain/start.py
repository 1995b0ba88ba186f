"""`chain start`: freeze a run config and a segment plan into a chain record in the ledger.

The segment plan comes from, in order: explicit sizes (`--segments 12000,12000`), a
segment size (`--segment-timesteps`, or `[chain] segment_timesteps`), a segment count
(`--count`, or `[chain] segments`), or `orchestrate plan`'s arithmetic applied to a quick
test's session summary (`--plan-from runs/quick/session_summary.json`).
"""

from __future__ import annotations

import math
from pathlib import Path

from orchestrator.build import render_bundle
from orchestrator.chain.bundle import store_bundle
from orchestrator.chain.machine import segment_slug
from orchestrator.errors import UserError
from orchestrator.kaggle.models import VISIBILITY_GRACE_S
from orchestrator.ledger import DEFAULT_QUOTA_RESERVE_S, ChainRecord, Ledger
from orchestrator.settings import Settings, check_slug

# Room for "-s<segment>-r<attempt>" inside Kaggle's 50-character slugs.
MAX_CHAIN_NAME = 40
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_UNKNOWNS = 5


def parse_segments(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise UserError(
            f"--segments {text!r} must be comma-separated step counts, e.g. 12000,12000"
        ) from None
    if not sizes or any(size < 1 for size in sizes):
        raise UserError(f"--segments {text!r} must list positive step counts, e.g. 12000,12000")
    return sizes


def split_evenly(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + 1] * extra + [base] * (parts - extra)


def check_chain_name(name: str) -> str:
    check_slug(name, error=UserError)
    if len(name) > MAX_CHAIN_NAME:
        raise UserError(
            f"chain name {name!r} is longer than {MAX_CHAIN_NAME} characters; its segment slugs "
            f"(e.g. {segment_slug(name, 12, 3)!r}) must fit Kaggle's 50; shorten it"
        )
    return name


def plan_segments(
    settings: Settings,
    total: int,
    *,
    segments: list[int] | None = None,
    segment_timesteps: int | None = None,
    count: int | None = None,
    plan_from: Path | None = None,
) -> tuple[list[int], list[float] | None]:
    """(timesteps per segment, expected wall seconds per segment or None)."""
    if segments:
        if sum(segments) != total:
            raise UserError(
                f"--segments add up to {sum(segments)} but the chain trains {total} timesteps; "
                "make them match or drop --timesteps"
            )
        return segments, None
    if plan_from is not None:
        from orchestrator.plan import TimingMeasure, make_plan

        timing = TimingMeasure.from_summary_file(plan_from)
        plan = make_plan(
            timing,
            total,
            settings.run.session_limit_s,
            margin_floor_s=settings.run.margin_floor_s,
        )
        # The quota gate wants what a segment may cost, so keep the plan's safety factor on.
        return plan.segment_timesteps, [wall * plan.safety_factor for wall in plan.session_wall_s]
    size = segment_timesteps or settings.chain.segment_timesteps
    if size:
        return split_evenly(total, math.ceil(total / size)), None
    count = count or settings.chain.segments
    if count:
        if count > total:
            raise UserError(f"{count} segments cannot split {total} timesteps; use fewer segments")
        return split_evenly(total, count), None
    raise UserError(
        "no segment plan: pass --segments 12000,12000, --segment-timesteps N, --count N or "
        "--plan-from <quick test session_summary.json>, or set [chain] segments in orchestrate.toml"
    )


def start_chain(
    settings: Settings,
    ledger: Ledger,
    name: str,
    *,
    owner: str,
    total_timesteps: int | None = None,
    segments: list[int] | None = None,
    segment_timesteps: int | None = None,
    count: int | None = None,
    plan_from: Path | None = None,
    max_retries: int | None = None,
    start_from=None,
    client=None,
) -> ChainRecord:
    """`start_from`: a `start_point.CheckpointSource` (`--from`) the first segment resumes;
    a local dir among them is uploaded as a dataset through `client`."""
    check_chain_name(name)
    if start_from is not None and ledger.get_chain(name) is not None:  # before any upload
        raise UserError(
            f"chain {name!r} already exists; to continue it from a checkpoint use "
            f"`orchestrate chain resume {name} --from DIR`, or pick another name"
        )
    # The runtime every segment embeds, rendered before anything is uploaded or written.
    bundle = render_bundle(settings)
    extra = settings.chain.model_extra or {}
    start_step = start_from.step if start_from is not None else 0
    total = (
        total_timesteps
        or (start_step + sum(segments) if segments else None)
        or settings.chain.total_timesteps
        or settings.run.total_timesteps
    )
    if start_step >= total:
        raise UserError(
            f"--from {start_from.label} is at step {start_step}, already at or past the "
            f"chain's {total} timesteps; pass a larger --timesteps"
        )
    sizes, seconds = plan_segments(
        settings,
        total - start_step,
        segments=segments,
        segment_timesteps=segment_timesteps,
        count=count,
        plan_from=plan_from,
    )
    run_config = settings.run.with_changes(
        total_timesteps=total, segment_timesteps=None, segment_index=0
    )
    start_point = None
    if start_from is not None:
        start_point, run_config = _start_point(start_from, run_config, owner, client)
    record = ChainRecord(
        name=name,
        owner=owner,
        run_config=run_config.model_dump(mode="json"),
        config_hash=run_config.config_hash(),
        total_timesteps=total,
        segments=sizes,
        segment_seconds=seconds,
        max_retries=max_retries
        if max_retries is not None
        else int(extra.get("max_retries", DEFAULT_MAX_RETRIES)),
        max_unknowns=int(extra.get("max_unknowns", DEFAULT_MAX_UNKNOWNS)),
        quota_reserve_s=float(extra["quota_reserve_h"]) * 3600  # hours in orchestrate.toml
        if "quota_reserve_h" in extra
        else DEFAULT_QUOTA_RESERVE_S,
        intent_grace_s=float(extra.get("intent_grace_s", VISIBILITY_GRACE_S)),
        parent_retry_s=float(
            extra.get("parent_retry_s", ChainRecord.model_fields["parent_retry_s"].default)
        ),
        docker_image=settings.kernel.docker_image,  # else the first segment's image, once known
        start_from=start_point,
        runtime_sha256=bundle.sha256,
    )
    record.note(
        f"chain of {len(sizes)} segment(s) {sizes} for {total} timesteps, config {record.config_hash[:12]}"
    )
    if start_point is not None:
        record.note(
            f"starts from {start_from.label}: step {start_point.step}, manifest "
            f"{start_point.checkpoint.manifest_sha256[:12]}, attached as {start_point.kind} {start_point.ref}"
        )
    with ledger.locked():
        if ledger.get_chain(name) is None:  # never replace an existing chain's runtime
            store_bundle(ledger, name, bundle)
        return ledger.create_chain(record)  # refuses a name in use


def _start_point(source, run_config, owner: str, client):
    """Check the checkpoint fits this config (a different total is allowed: the chain
    continues to its own), then upload it when it is a local dir."""
    from orchestrator.chain.start_point import (
        allowing_total_change,
        config_changes,
        refuse_changes,
        upload_start_point,
    )

    changed = config_changes(source, run_config)
    if changed == ["total_timesteps"]:
        run_config = allowing_total_change(run_config)
        changed = []
    refuse_changes(source, changed)
    return upload_start_point(client, owner, source), run_config
