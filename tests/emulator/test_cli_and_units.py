"""The serve command's argument errors, and small pure pieces."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pytest

from orchestrator.emulator.auth import parse_users
from orchestrator.emulator.state import next_quota_refresh
from orchestrator.emulator.wire import duration


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.emulator", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_users_is_a_one_line_error(tmp_path):
    result = serve("--root", str(tmp_path), "--users", "alice")
    assert result.returncode == 2
    assert "--users NAME:KEY" in result.stderr


def test_bad_fault_spec_is_refused(tmp_path):
    result = serve("--root", str(tmp_path), "--users", "alice:k", "--faults", "GetKernel=explode")
    assert result.returncode == 2
    assert "unknown fault" in result.stderr


def test_parse_users():
    assert parse_users("alice:k1, bob:k2") == {"alice": "k1", "bob": "k2"}
    with pytest.raises(ValueError):
        parse_users("")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc), datetime(2026, 11, 28)),  # Wednesday
        (datetime(2026, 11, 27, 23, 59, tzinfo=timezone.utc), datetime(2026, 11, 28)),  # Friday
        (datetime(2026, 11, 28, 0, 0, tzinfo=timezone.utc), datetime(2026, 12, 5)),  # Saturday
    ],
)
def test_quota_refreshes_next_saturday_midnight_utc(now, expected):
    assert next_quota_refresh(now) == expected


def test_duration_is_total_seconds():
    from datetime import timedelta

    assert duration(timedelta(hours=30)) == "108000s"
    assert duration(timedelta(seconds=1.25)) == "1.250s"


def test_server_env_drops_credentials_and_loopback_proxies(monkeypatch):
    from orchestrator.emulator.testing import _server_env

    monkeypatch.setenv("KAGGLE_KEY", "secret")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:4321")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    env = _server_env()
    assert "KAGGLE_KEY" not in env and "HTTP_PROXY" not in env
    assert env["https_proxy"] == "http://proxy.example:3128"
