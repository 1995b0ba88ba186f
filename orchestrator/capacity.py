"""Kaggle's capacity: how long a session may run, which sessions hold a GPU slot now, and the
weekly quota (`orchestrate quota`).

Preflight, launch and `chain step` all ask here, so they never disagree. The count settles
the ledger against Kaggle first (`orchestrator.settle`): Kaggle's word wins, the ledger's
counts only where Kaggle cannot be read. The limits are read by `--help` (the emulator's
defaults), so the heavier modules are imported only where sessions are counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kernel_template.kaggle_limits import KAGGLE_SESSION_LIMIT_S

if TYPE_CHECKING:
    from orchestrator.kaggle import AcceleratorQuota, KaggleClient
    from orchestrator.ledger import Ledger
    from orchestrator.settings import Settings

# Kaggle's longest session, written once on the kernel's side (the kernel cannot import this
# module). SaveKernel's sessionTimeoutSeconds "must be lower than the global maximum", so a
# push for the whole session names none.
SESSION_LIMIT_S = KAGGLE_SESSION_LIMIT_S
TPU_SESSION_LIMIT_S = 9 * 3600


@dataclass(frozen=True)
class GpuSlots:
    """The account's batch GPU sessions running now (run slugs) against Kaggle's cap."""

    busy: list[str]
    cap: int

    @property
    def full(self) -> bool:
        return len(self.busy) >= self.cap


def gpu_slots(
    settings: Settings,
    ledger: Ledger,
    client: KaggleClient,
    *,
    owner: str | None = None,
    chain: str | None = None,
) -> GpuSlots:
    """The GPU sessions holding a slot now: the ledger's runs (of `owner`, when given) that
    Kaggle says are still going, settled on the way.

    A `chain` asking for itself counts its own unsettled segments as the ledger says,
    without asking Kaggle: its step polls them itself, with its own clock.
    """
    from orchestrator.settings import is_gpu_shape
    from orchestrator.settle import is_unsettled, settle_runs

    def others(record) -> bool:
        return (owner is None or record.owner == owner) and (chain is None or record.chain != chain)

    busy = settle_runs(ledger, client, select=others).busy_gpu()
    if chain is not None:
        busy += [
            r.slug for r in ledger.runs(chain) if is_unsettled(r) and is_gpu_shape(r.machine_shape)
        ]
    return GpuSlots(busy, settings.kaggle.gpu_session_cap)


def quota_spent(quota: AcceleratorQuota) -> bool:
    """The week's GPU hours are used up (an account without a reported allowance never is)."""
    return quota.total_allowed_s > 0 and quota.remaining_s <= 0


def check_gpu_capacity(
    settings: Settings, client: KaggleClient, ledger: Ledger, owner: str, shape: str | None
) -> None:
    """Refuse before a push, with the errors Kaggle's own refusal would raise (exit 3), when
    the GPU quota is spent or every GPU slot is taken by a run this ledger knows."""
    from orchestrator.kaggle import CapacityRefused, QuotaExhausted
    from orchestrator.settings import is_gpu_shape

    if not is_gpu_shape(shape):
        return
    quota = client.quota()
    if quota_spent(quota):
        refresh = (
            f"; it refreshes at {quota.refresh_time:%Y-%m-%d %H:%M} UTC"
            if quota.refresh_time
            else ""
        )
        raise QuotaExhausted(
            f"the weekly GPU quota of {owner} is spent{refresh}; launch again then"
        )
    slots = gpu_slots(settings, ledger, client, owner=owner)
    if slots.full:
        raise CapacityRefused(
            f"{len(slots.busy)} GPU sessions of {owner} are running ({', '.join(slots.busy)}) "
            f"and Kaggle allows {slots.cap} at once; wait for one to end "
            f"(orchestrate watch {slots.busy[0]})",
            limit=slots.cap,
        )


# -- the weekly quota, as `orchestrate quota` shows it ----------------------------------------

KINDS = ("gpu", "tpu")


def quota_report(quotas: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """`client.accelerator_quotas()` as one JSON-ready document (hours, and the refresh time)."""
    now = now or datetime.now(timezone.utc)
    report: dict[str, Any] = {"refresh_time": None, "refresh_in_h": None}
    for kind in KINDS:
        quota = quotas.get(kind)
        if quota is None:
            report[kind] = None
            continue
        report[kind] = {
            "used_h": round(quota.time_used_s / 3600, 2),
            "allowed_h": round(quota.total_allowed_s / 3600, 2),
            "left_h": round(quota.remaining_s / 3600, 2),
        }
        if quota.refresh_time is not None:
            report["refresh_time"] = quota.refresh_time.isoformat().replace("+00:00", "Z")
            report["refresh_in_h"] = round((quota.refresh_time - now).total_seconds() / 3600, 1)
    return report


def describe_quota(report: dict[str, Any]) -> list[str]:
    lines = []
    for kind in KINDS:
        hours = report.get(kind)
        if hours is None:
            lines.append(f"{kind.upper()}: not reported by Kaggle")
            continue
        lines.append(
            f"{kind.upper()}: {hours['used_h']:.2f} h used of {hours['allowed_h']:.2f} h, "
            f"{hours['left_h']:.2f} h left"
        )
    if report.get("refresh_time"):
        refresh = datetime.fromisoformat(report["refresh_time"].replace("Z", "+00:00"))
        lines.append(
            f"refreshes {refresh:%a %Y-%m-%d %H:%M} UTC (in {report['refresh_in_h']:.1f} h)"
        )
    return lines
