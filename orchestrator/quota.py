"""`orchestrate quota`: this account's weekly GPU and TPU hours, used and left, and when they refresh."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

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
