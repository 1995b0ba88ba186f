"""`orchestrate sweep`: seeds x config variants, one chain each, stepped round-robin.

The GPU slot and quota gates live in `step` and read the whole ledger, so chains of a sweep
(and anything else this project runs) never together exceed the account's limits.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.chain.start import check_chain_name, parse_segments, start_chain
from orchestrator.errors import UserError
from orchestrator.ledger import Ledger
from orchestrator.settings import Settings, apply_overrides


@dataclass(frozen=True)
class SweepMember:
    chain: str
    settings: Settings


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise UserError(f"--seeds {text!r} must be comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise UserError("--seeds is empty; give at least one seed, e.g. --seeds 0")
    return list(dict.fromkeys(seeds))


def plan_sweep(settings: Settings, name: str, seeds: str, variants: list[str]) -> list[SweepMember]:
    """One member per (variant, seed); chain names `<name>-s<seed>` or `<name>-v<i>-s<seed>`."""
    members = []
    variant_sets = [[a for a in v.split(";") if a.strip()] for v in variants] or [[]]
    for index, assignments in enumerate(variant_sets):
        varied = apply_overrides(settings, assignments) if assignments else settings
        for seed in parse_seeds(seeds):
            chain = f"{name}-v{index}-seed{seed}" if len(variant_sets) > 1 else f"{name}-seed{seed}"
            check_chain_name(chain)
            seeded = apply_overrides(varied, [f"run.seed={seed}"])
            members.append(SweepMember(chain, seeded))
    return members


def start_sweep(
    settings: Settings,
    ledger: Ledger,
    members: list[SweepMember],
    *,
    owner: str,
    total_timesteps: int | None = None,
    segments: str | None = None,
    segment_timesteps: int | None = None,
    count: int | None = None,
    max_retries: int | None = None,
) -> list[str]:
    """Record each member's chain (an existing one with the same config is continued)."""
    names = []
    for member in members:
        existing = ledger.get_chain(member.chain)
        if existing is None:
            start_chain(
                member.settings,
                ledger,
                member.chain,
                owner=owner,
                total_timesteps=total_timesteps,
                segments=parse_segments(segments) if segments else None,
                segment_timesteps=segment_timesteps,
                count=count,
                max_retries=max_retries,
            )
        else:
            total = total_timesteps or existing.total_timesteps
            wanted = member.settings.run.model_copy(update={"total_timesteps": total}).config_hash()
            if wanted != existing.config_hash:
                raise UserError(
                    f"chain {member.chain} already exists with another run config; "
                    "give the sweep a new name to run changed settings"
                )
        names.append(member.chain)
    return names
