"""Ledger records and session summaries built in memory, for the chain's pure decisions:
chain `demo` of alice, 3 x 1000 steps, config hash `h`; each builder takes field overrides."""

from __future__ import annotations

from kernel_template.layout import CheckpointRef, SessionSummary
from orchestrator.chain import machine
from orchestrator.ledger import ChainRecord, RunRecord


def chain_record(**fields) -> ChainRecord:
    base = dict(
        name="demo",
        owner="alice",
        run_config={},
        config_hash="h",
        total_timesteps=3000,
        segments=[1000, 1000, 1000],
        max_retries=2,
    )
    return ChainRecord(**{**base, **fields})


def segment_run(
    segment: int, attempt: int = 0, state: str = "pulled", step: int | None = None, **fields
) -> RunRecord:
    """The run of chain `demo`'s segment (retry `attempt`), holding a checkpoint at `step`."""
    slug = machine.segment_slug("demo", segment, attempt)
    return RunRecord(
        slug=slug,
        owner="alice",
        chain="demo",
        segment=segment,
        attempt=attempt,
        state=state,
        checkpoint=CheckpointRef(step=step, manifest_sha256=f"hash-{slug}")
        if step is not None
        else None,
        **fields,
    )


def session_summary(**fields) -> SessionSummary:
    """A complete one-hour session that trained nothing, unless `fields` say otherwise."""
    return SessionSummary.model_validate(
        {
            "status": "complete",
            "reason": "complete",
            "config_hash": "h",
            "total_timesteps": 3000,
            "timesteps_start": 0,
            "timesteps_end": 0,
            "wall": {},
            "started_at": "2030-01-01T00:00:00Z",
            "ended_at": "2030-01-01T01:00:00Z",
            "session_limit_s": 43200,
            **fields,
        }
    )
