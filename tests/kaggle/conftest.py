"""Fixtures for the Kaggle client's unit tests: a client over httpx.MockTransport with tiny waits."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import pytest

from orchestrator.kaggle import Credentials, KaggleClient, RetryPolicy
from tests.support.kaggle_fakes import API, SECRET_KEY, SleepRecorder


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_client(sleeps: SleepRecorder) -> Callable[..., KaggleClient]:
    """make_client(handler, max_attempts=4, credentials=None) -> KaggleClient on a MockTransport."""
    created: list[KaggleClient] = []

    def factory(
        handler, *, max_attempts: int = 4, credentials: Credentials | None = None
    ) -> KaggleClient:
        policy = RetryPolicy(
            max_attempts=max_attempts,
            max_total_s=60,
            initial_wait_s=0.001,
            max_wait_s=0.01,
            max_retry_after_s=600,
            sleep=sleeps,
        )
        client = KaggleClient(
            API,
            credentials or Credentials(username="alice", key=SECRET_KEY, source="test"),
            timeout=5,
            retry=policy,
            transport=httpx.MockTransport(handler),
        )
        created.append(client)
        return client

    yield factory
    for client in created:
        client.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> object:
    """No Kaggle variables, HOME in a temp dir: credential discovery sees only what a test puts there."""
    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name in ("ORCHESTRATE_KAGGLE_API", "XDG_CONFIG_HOME"):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home
