"""One count of GPU sessions for preflight, launch and `chain step` (orchestrator.capacity)."""

from __future__ import annotations

import json

import httpx
import pytest

from orchestrator.capacity import check_gpu_capacity, gpu_slots, quota_spent
from orchestrator.kaggle import (
    AcceleratorQuota,
    CapacityRefused,
    KaggleClient,
)
from orchestrator.ledger import Ledger, RunRecord
from orchestrator.settings import load_settings
from tests.support.kaggle_fakes import mock_client
from tests.support.project import write_project

GPU = "NvidiaTeslaT4"
# What Kaggle says of each session; a slug missing here must never be asked about.
KAGGLE_SAYS = {
    "plain-running": "RUNNING",
    "plain-ended": "COMPLETE",
    "cpu-running": "RUNNING",
    "bobs-running": "RUNNING",
    "mine-s1": "RUNNING",
}


@pytest.fixture
def project(tmp_path):
    write_project(tmp_path / "p", kaggle='owner = "alice"\ngpu_session_cap = 3')
    ledger = Ledger(tmp_path / "p")
    for run, owner, shape, chain in (
        ("plain-running", "alice", GPU, None),
        ("plain-ended", "alice", GPU, None),
        ("cpu-running", "alice", None, None),
        ("bobs-running", "bob", GPU, None),
        ("mine-s1", "alice", GPU, "mine"),
    ):
        ledger.record_intent(RunRecord(run=run, owner=owner, machine_shape=shape, chain=chain))
        ledger.update(run, state="running", pushed_at="2026-01-01T00:00:00Z")
    return load_settings(tmp_path / "p" / "orchestrate.toml"), ledger


def kaggle_client(asked: list[str]) -> KaggleClient:
    def kaggle(request: httpx.Request) -> httpx.Response:
        slug = json.loads(request.content)["kernelSlug"]
        asked.append(slug)
        return httpx.Response(200, json={"status": KAGGLE_SAYS[slug]})

    return mock_client(kaggle)


def test_an_owner_counts_its_gpu_sessions_still_running_on_kaggle(project):
    settings, ledger = project
    asked: list[str] = []
    with kaggle_client(asked) as client:
        slots = gpu_slots(settings, ledger, client, owner="alice")
    assert sorted(slots.busy) == ["mine-s1", "plain-running"] and slots.cap == 3
    assert not slots.full
    assert "bobs-running" not in asked
    assert ledger.get("plain-ended").state == "terminal"  # settled on the way


def test_a_chain_counts_its_own_segments_as_the_ledger_says(project):
    settings, ledger = project
    asked: list[str] = []
    with kaggle_client(asked) as client:
        slots = gpu_slots(settings, ledger, client, chain="mine")
    assert sorted(slots.busy) == ["bobs-running", "mine-s1", "plain-running"]
    assert slots.full
    assert "mine-s1" not in asked  # its own step polls it, with its own clock


def test_launch_refuses_when_every_slot_is_busy(project):
    settings, ledger = project
    settings = settings.model_copy(
        update={"kaggle": settings.kaggle.model_copy(update={"gpu_session_cap": 2})}
    )
    with kaggle_client([]) as client:
        client.quota = lambda: AcceleratorQuota(3600.0, 30 * 3600.0, None)
        with pytest.raises(CapacityRefused, match="2 GPU sessions of alice are running"):
            check_gpu_capacity(settings, client, ledger, "alice", GPU)
        check_gpu_capacity(settings, client, ledger, "alice", None)  # a CPU push: no check


def test_a_spent_quota_is_one_with_an_allowance_and_nothing_left():
    assert quota_spent(AcceleratorQuota(30 * 3600.0, 30 * 3600.0, None))
    assert not quota_spent(AcceleratorQuota(3600.0, 30 * 3600.0, None))
    assert not quota_spent(AcceleratorQuota(0.0, 0.0, None))  # no allowance reported
