"""A SIGKILLed orchestrator loses nothing and never pushes twice.

`chain run` runs as a subprocess and is SIGKILLed at random moments; another `chain run`
finishes the chain. The emulator counts accepted pushes (SaveKernel calls that made a
kernel version): they must equal the segments plus legitimate retries, and every slug must
have exactly one version. The crash windows around a push are also hit on purpose.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.chain.start import start_chain
from orchestrator.chain.step import ChainStepper
from orchestrator.ledger import RunRecord
from tests.support.emulator import kernel_processes_left
from tests.support.project import ChainProject


def _kill_loop(project: ChainProject, kills: int, seed: int, max_delay_s: float) -> int:
    """SIGKILL `chain run` `kills` times at random moments; returns the kills that landed."""
    rng = random.Random(seed)
    landed = 0
    for _ in range(kills):
        process = project.popen(
            "chain", "run", "tiny-chain", "--no-follow", "--poll-interval", "0.2"
        )
        time.sleep(rng.uniform(0.05, max_delay_s))
        if process.poll() is not None:  # finished on its own: nothing left to kill
            break
        process.kill()
        process.wait()
        landed += 1
    return landed


def _assert_completed_without_duplicates(project: ChainProject, total: int) -> None:
    ledger = project.ledger
    chain = ledger.get_chain("tiny-chain")
    assert chain.state == "done", [n.message for n in chain.notes[-5:]]
    runs = ledger.runs("tiny-chain")
    reached_kaggle = [r for r in runs if r.state != "failed_push"]
    calls = project.emulator.call_counts()
    assert calls["SaveKernel.accepted"] == len(reached_kaggle)
    with project.client() as client:
        for run in reached_kaggle:
            info = client.get_kernel("alice", run.slug)
            assert info is not None and info.current_version_number == 1, f"{run.slug} pushed twice"
    # No lost segment: the checkpoints the chain resumed from form one unbroken line to the total.
    carried = [r for r in runs if r.state == "pulled" and r.checkpoint]
    steps = [r.checkpoint.step for r in carried]
    assert steps == sorted(steps) and steps[-1] == total
    for run in carried[1:]:
        parent = max(
            (p for p in carried if p.checkpoint.step < run.checkpoint.step),
            key=lambda p: p.checkpoint.step,
        )
        resumed = run.summary.resumed_from if run.summary else None
        assert resumed is not None and resumed.manifest_sha256 == parent.checkpoint.manifest_sha256
    assert not [n for n in chain.notes if n.level == "alert"]
    assert not kernel_processes_left(project.emulator)


def _run_killed_chain(
    emulator_factory,
    chain_project,
    *,
    kills: int,
    segments: list[int],
    seed: int,
    max_delay_s: float,
) -> None:
    emulator = emulator_factory()
    project = chain_project(emulator, total=sum(segments))
    start_chain(project.settings, project.ledger, "tiny-chain", owner="alice", segments=segments)
    landed = _kill_loop(project, kills, seed, max_delay_s=max_delay_s)
    # Every kill hit a live orchestrator: the chain cannot finish in the time they take.
    assert landed == kills
    finish = project.cli(
        "chain", "run", "tiny-chain", "--no-follow", "--poll-interval", "0.2", timeout=600
    )
    assert finish.returncode == 0, finish.stderr[-3000:]
    _assert_completed_without_duplicates(project, sum(segments))


@pytest.mark.slow
def test_sigkilled_chain_run_completes_without_duplicate_pushes(
    emulator_factory, chain_project
) -> None:
    _run_killed_chain(
        emulator_factory, chain_project, kills=5, segments=[1000, 1000], seed=1, max_delay_s=2.0
    )


@pytest.mark.reliability
@pytest.mark.parametrize("seed", [11, 12])
def test_sigkilled_chain_run_many_times(emulator_factory, chain_project, seed: int) -> None:
    _run_killed_chain(
        emulator_factory,
        chain_project,
        kills=20,
        segments=[750, 750, 750, 750],
        seed=seed,
        max_delay_s=1.0,
    )


def test_intent_without_push_gets_a_new_slug_and_intent_after_push_is_adopted(
    emulator, chain_project
) -> None:
    """The two crash windows around a push, hit deterministically."""
    project = chain_project(emulator, total=1000)
    settings, ledger = project.settings, project.ledger
    start_chain(settings, ledger, "tiny-chain", owner="alice", segments=[1000])
    # Killed after writing the intent, before the push: the account's listing does not show
    # it. Not at first (Kaggle lists a new kernel only after a lag), but once the intent is
    # older than the grace period.
    ledger.record_intent(
        RunRecord(slug="tiny-chain-s1", owner="alice", chain="tiny-chain", segment=1)
    )
    with project.client() as client:
        fresh = ChainStepper(settings, client, ledger).step("tiny-chain")
        assert fresh.outcome == "waiting" and "not listed on Kaggle yet" in fresh.message
        assert ledger.get("tiny-chain-s1").state == "intent"
        later = datetime.now(timezone.utc) + timedelta(minutes=5)
        result = ChainStepper(settings, client, ledger, clock=lambda: later).step("tiny-chain")
    assert result.outcome == "advanced" and result.pushed == ["tiny-chain-s1-r1"]
    assert ledger.get("tiny-chain-s1").state == "failed_push"
    assert emulator.call_counts()["SaveKernel.accepted"] == 1

    # Killed after the push, before the ledger heard back: once Kaggle lists the kernel, the
    # next step finds it there, and nothing is pushed.
    ledger.update("tiny-chain-s1-r1", state="intent", pushed_at=None)
    with project.client() as client:
        deadline = time.monotonic() + 30
        while client.find_own_kernel("alice", "tiny-chain-s1-r1") is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        result = ChainStepper(settings, client, ledger).step("tiny-chain")
    assert result.outcome == "running" and not result.pushed
    assert ledger.get("tiny-chain-s1-r1").state in ("pushed", "running")
    assert emulator.call_counts()["SaveKernel.accepted"] == 1


def test_overlapping_step_exits_quickly_and_does_nothing(emulator, chain_project) -> None:
    project = chain_project(emulator, total=1000)
    start_chain(project.settings, project.ledger, "tiny-chain", owner="alice", segments=[1000])
    with project.ledger.locked():
        started = time.monotonic()
        second = project.cli("chain", "step", "tiny-chain", "--lock-timeout", "0.5")
        assert time.monotonic() - started < 60
    assert second.returncode == 0
    assert "busy" in second.stdout and "another orchestrate process" in second.stdout
    assert emulator.call_counts().get("SaveKernel", 0) == 0
