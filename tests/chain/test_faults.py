"""Chains under trouble: the session limit, API faults, a spent quota, full GPU slots."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from kernel_template import layout
from orchestrator.chain import machine
from orchestrator.chain.scheduler import run_chains
from orchestrator.chain.start import start_chain
from orchestrator.chain.step import ChainStepper
from orchestrator.kaggle import TERMINAL_STATUSES, KernelNotVisible
from tests.support.project import ChainProject

GPU = "NvidiaTeslaT4"


def _run_to_end(project: ChainProject, name: str = "tiny-chain"):
    with project.client() as client:
        stepper = ChainStepper(project.settings, client, project.ledger)
        return run_chains(stepper, [name], poll_interval=0.3, follow=False)[name]


def _status(client, slug: str) -> str:
    """The kernel's status; DENIED while Kaggle still hides a just-pushed kernel (403)."""
    try:
        return client.status("alice", slug).status
    except KernelNotVisible:
        return "DENIED"


def _wait_for_checkpoint(emulator, slug: str, timeout: float = 120) -> None:
    working = emulator.root / "kernels" / "alice" / slug / "v1" / "working"
    deadline = time.monotonic() + timeout
    while not list(working.glob(f"{layout.CHECKPOINTS_DIR}/*/{layout.MANIFEST_NAME}")):
        assert time.monotonic() < deadline, f"{slug} wrote no checkpoint in {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_segment_killed_by_the_session_limit_resumes_from_its_last_checkpoint(
    emulator, chain_project
) -> None:
    # The kernel believes it has 600 s. Once it has saved a checkpoint, the emulator ends the
    # session the way Kaggle's limit does (CANCEL_ACKNOWLEDGED, "exceeded the max allowed
    # execution duration"): at a known point mid-training, whatever this machine's speed.
    project = chain_project(emulator, total=3000, session_limit_s=600)
    start_chain(project.settings, project.ledger, "tiny-chain", owner="alice", segments=[3000])
    with project.client() as client:
        stepper = ChainStepper(project.settings, client, project.ledger)
        assert stepper.step("tiny-chain").pushed == ["tiny-chain-s1"]
        _wait_for_checkpoint(emulator, "tiny-chain-s1")
        emulator.kill_kernel("alice", "tiny-chain-s1", as_timeout=True)
        result = run_chains(stepper, ["tiny-chain"], poll_interval=0.3, follow=False)["tiny-chain"]
    assert result.outcome == "done", result.message
    first, *rest = project.ledger.runs("tiny-chain")
    assert first.kernel_status == "CANCEL_ACKNOWLEDGED"
    assert 0 < first.checkpoint.step < 3000
    # Either the kernel saved on the kill signal (signal_stop) or it had no time to (no summary).
    assert (first.summary.status if first.summary else None) in (None, "signal_stop")
    successor = rest[0]
    assert successor.segment == 2
    assert successor.summary.resumed_from.manifest_sha256 == first.checkpoint.manifest_sha256
    assert successor.summary.timesteps_start == first.checkpoint.step
    assert rest[-1].checkpoint.step == 3000
    assert emulator.call_counts()["SaveKernel.accepted"] == 1 + len(rest)


# Counted rules (no chance involved): rules for one method fire in this order, each for its
# count, so once a method has been called as often as its rules add up to, every one of them
# fired. Together they cover every fault kind: 429 with Retry-After, 5xx, an HTML error page,
# a dropped connection, a truncated and a corrupted download, and an accepted push answered 503.
COUNTED_FAULTS = [
    ("SaveKernel", "accepted-503", 1),
    # The push's ambiguity is settled from the account's listing (GetKernel's 403 cannot tell
    # absent from just pushed): the listing gets a 503 first.
    ("ListKernels", "503", 1),
    ("GetKernelSessionStatus", "429:0.2", 2),
    ("GetKernelSessionStatus", "503", 1),
    ("GetKernelSessionStatus", "drop", 1),
    ("GetKernelSessionStatus", "html", 1),
    ("ListKernelSessionOutput", "502", 2),
    ("download", "corrupt", 1),
    ("download", "truncate", 1),
]


def assert_every_fault_fired(before: dict[str, int], after: dict[str, int]) -> None:
    needed: dict[str, int] = {}
    for method, fault, count in COUNTED_FAULTS:
        needed[method] = needed.get(method, 0) + count
        calls = after.get(method, 0) - before.get(method, 0)
        assert calls >= needed[method], (
            f"{method}={fault}*{count} did not fire every time: {calls} calls to {method}, "
            f"its rules up to this one need {needed[method]}"
        )


@pytest.mark.slow
def test_chain_completes_through_injected_faults(emulator_factory, chain_project) -> None:
    emulator = emulator_factory()
    project = chain_project(emulator, total=2000)
    start_chain(
        project.settings, project.ledger, "tiny-chain", owner="alice", segments=[1000, 1000]
    )
    before = emulator.call_counts()
    emulator.set_faults(",".join(f"{m}={f}*{n}" for m, f, n in COUNTED_FAULTS))
    result = _run_to_end(project)
    assert result.outcome == "done", result.message
    after = emulator.call_counts()
    assert_every_fault_fired(before, after)
    runs = project.ledger.runs("tiny-chain")
    reached = [r for r in runs if r.state != "failed_push"]
    # The ambiguous push was found by its check, not pushed twice.
    assert after["SaveKernel.accepted"] == len(reached) == 2
    for run in runs:
        assert run.state == "pulled" and run.artifacts_sha256
        assert (
            layout.sha256_file(project.ledger.pulled_path(run) / layout.ARTIFACTS_ZIP)
            == run.artifacts_sha256
        )
    assert runs[1].summary.resumed_from.manifest_sha256 == runs[0].checkpoint.manifest_sha256


def test_spent_quota_waits_until_the_refresh_and_says_so(emulator, chain_project) -> None:
    project = chain_project(emulator, accelerator=GPU, total=1000)
    start_chain(project.settings, project.ledger, "tiny-chain", owner="alice", segments=[1000])
    with project.client() as client:
        quota = client.quota()
        emulator.set_gpu_used("alice", quota.total_allowed_s - 60)
        stepper = ChainStepper(project.settings, client, project.ledger)
        result = stepper.step("tiny-chain")
        # Once, an ALERT (exit 1: the scheduler shows it); then quiet waiting until the refresh.
        assert result.outcome == "waiting" and result.exit_code == 1 and result.alerts
        refresh = client.quota().refresh_time
        assert result.until == refresh
        assert machine.iso(refresh) in result.message and "GPU quota" in result.message
        asked = emulator.call_counts()["GetAcceleratorQuotaStatistics"]
        again = stepper.step("tiny-chain")  # until then, a step answers from the ledger
        assert again.outcome == "waiting" and again.until == refresh
        assert again.exit_code == 0 and not again.alerts
        assert emulator.call_counts()["GetAcceleratorQuotaStatistics"] == asked
        assert "SaveKernel" not in emulator.call_counts()
        status = project.cli("chain", "status", "tiny-chain")
        assert "waiting: GPU quota" in status.stdout

        # After the refresh (the clock moved past it, the quota is back) the segment goes out.
        emulator.set_gpu_used("alice", 0)
        later = ChainStepper(
            project.settings, client, project.ledger, clock=lambda: refresh + timedelta(seconds=1)
        )
        pushed = later.step("tiny-chain")
        assert pushed.outcome == "advanced" and pushed.pushed == ["tiny-chain-s1"]


def test_full_gpu_slots_make_the_chain_wait(emulator_factory, chain_project) -> None:
    emulator = emulator_factory(gpu_slots=1)
    # Another project of the same account holds the only GPU slot; our ledger does not know it.
    other = chain_project(emulator, name="other", slug="other-run", accelerator=GPU, total=4000)
    start_chain(other.settings, other.ledger, "other-chain", owner="alice", segments=[4000])
    with other.client() as client:
        assert (
            ChainStepper(other.settings, client, other.ledger).step("other-chain").outcome
            == "advanced"
        )
        # A chain in that project with a cap of 1 waits without asking Kaggle.
        start_chain(other.settings, other.ledger, "second-chain", owner="alice", segments=[1000])
        capped = ChainStepper(
            other.settings.model_copy(
                update={"kaggle": other.settings.kaggle.model_copy(update={"gpu_session_cap": 1})}
            ),
            client,
            other.ledger,
        )
        waiting = capped.step("second-chain")
        assert waiting.outcome == "waiting" and "GPU slots busy: 1 of 1" in waiting.message

    project = chain_project(emulator, accelerator=GPU, total=1000)
    start_chain(project.settings, project.ledger, "tiny-chain", owner="alice", segments=[1000])
    with project.client() as client:
        result = ChainStepper(project.settings, client, project.ledger).step("tiny-chain")
    assert result.outcome == "waiting" and "GPU slots busy" in result.message
    assert emulator.call_counts()["SaveKernel.accepted"] == 1
    assert project.ledger.get("tiny-chain-s1").state == "failed_push"


def test_unreadable_status_is_unknown_then_alerts(emulator, chain_project, capsys) -> None:
    project = chain_project(emulator, total=1000)
    start_chain(project.settings, project.ledger, "tiny-chain", owner="alice", segments=[1000])
    with project.client(fast_retries=True) as client:
        stepper = ChainStepper(project.settings, client, project.ledger)
        assert stepper.step("tiny-chain").outcome == "advanced"
        emulator.set_faults("GetKernelSessionStatus=503")
        chain = project.ledger.get_chain("tiny-chain")
        outcomes = [stepper.step("tiny-chain") for _ in range(chain.max_unknowns)]
    assert all(o.outcome == "unknown" for o in outcomes)
    # Unreadable is "try later" (3) until the ALERT, which a scheduler must see fail (1).
    assert [o.exit_code for o in outcomes] == [3] * (len(outcomes) - 1) + [1]
    assert outcomes[-1].alerts and not any(o.alerts for o in outcomes[:-1])
    assert "ALERT chain tiny-chain" in capsys.readouterr().err
    chain = project.ledger.get_chain("tiny-chain")
    assert chain.state == "active" and chain.consecutive_unknowns == chain.max_unknowns
    assert chain.notes[-1].level == "alert"
    assert project.ledger.get("tiny-chain-s1").state in ("pushed", "running")


@pytest.mark.slow
def test_error_without_progress_is_retried_under_a_new_slug(emulator, chain_project) -> None:
    project = chain_project(emulator, total=1000)
    start_chain(project.settings, project.ledger, "tiny-chain", owner="alice", segments=[1000])
    with project.client() as client:
        stepper = ChainStepper(project.settings, client, project.ledger)
        assert stepper.step("tiny-chain").pushed == ["tiny-chain-s1"]
        deadline = time.monotonic() + 60
        while _status(client, "tiny-chain-s1") != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # Crash it while it is still importing torch: long before its first checkpoint.
        emulator.kill_kernel("alice", "tiny-chain-s1")
        result = run_chains(stepper, ["tiny-chain"], poll_interval=0.3, follow=False)["tiny-chain"]
    assert result.outcome == "done", result.message
    failed, retry = project.ledger.runs("tiny-chain")
    assert (failed.slug, failed.kernel_status, failed.checkpoint) == (
        "tiny-chain-s1",
        "ERROR",
        None,
    )
    assert (retry.slug, retry.attempt, retry.kernel_status) == ("tiny-chain-s1-r1", 1, "COMPLETE")
    assert retry.summary.resumed_from is None
    assert emulator.call_counts()["SaveKernel.accepted"] == 2


@pytest.mark.reliability
def test_emulator_max_session_kill_is_resumed(emulator_factory, chain_project) -> None:
    """The same, with the emulator's own session limit doing the kill. Timing-based (the first
    checkpoint must come within 12 s, 6000 steps must not fit), hence not in the default suite."""
    emulator = emulator_factory(max_session=12)
    project = chain_project(emulator, total=6000, session_limit_s=600)
    start_chain(project.settings, project.ledger, "tiny-chain", owner="alice", segments=[6000])
    with project.client(fast_retries=True) as client:
        stepper = ChainStepper(project.settings, client, project.ledger)
        stepper.step("tiny-chain")
        deadline = time.monotonic() + 120
        while _status(client, "tiny-chain-s1") not in TERMINAL_STATUSES:
            assert time.monotonic() < deadline
            time.sleep(0.3)
    # The next segments get room: a restarted emulator (same state) with a 10-minute limit.
    emulator.options["max_session"] = 600
    emulator.restart()
    result = _run_to_end(project)
    assert result.outcome == "done", result.message
    first, *rest = project.ledger.runs("tiny-chain")
    assert first.kernel_status == "CANCEL_ACKNOWLEDGED" and 0 < first.checkpoint.step < 6000
    assert "max allowed execution duration" in (first.failure_message or "")
    assert rest[0].summary.resumed_from.manifest_sha256 == first.checkpoint.manifest_sha256
    assert rest[-1].checkpoint.step == 6000
