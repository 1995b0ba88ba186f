"""`orchestrate quota`: this account's weekly GPU and TPU hours, used and left, and when they refresh."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

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


def quota_command(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="orchestrate.toml (default: the nearest one)"),
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option("--api-url", help="Kaggle API root, e.g. http://127.0.0.1:7777/api/v1"),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="print one JSON document on stdout")
    ] = False,
) -> None:
    """Show this account's weekly GPU and TPU quota: used, left, and when it refreshes.

    Example: orchestrate quota --json
    """
    from orchestrator.kaggle import KaggleClient

    url = api_url
    if url is None:
        from orchestrator.settings import find_config_file

        if (
            config is not None or find_config_file() is not None
        ):  # outside a project: the environment
            from orchestrator.settings import load_settings

            url = load_settings(config).kaggle.api_url
    with KaggleClient(url) as client:
        report = quota_report(client.accelerator_quotas())
    if json_output:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        for line in describe_quota(report):
            typer.echo(line)
