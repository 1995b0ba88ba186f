"""Issue #9 item 4: a segment that fails before its first training step stops the chain,
quoting the error, instead of burning max_retries more sessions on it."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kernel_template.layout import SessionSummary
from orchestrator.chain import early_failure
from orchestrator.chain.machine import Finish, Push, next_action
from orchestrator.kaggle.models import LogEntry
from tests.support.records import chain_record, segment_run, session_summary

TYPO_ERROR = "TypeError: DQN.__init__() got an unexpected keyword argument 'learning_rte'"


def summary(**fields) -> SessionSummary:
    """A session of a 1000-step chain that ended in TYPO_ERROR a minute in."""
    early = dict(status="error", reason=TYPO_ERROR, total_timesteps=1000)
    return session_summary(**{**early, "ended_at": "2030-01-01T00:01:00Z", **fields})


def test_an_error_summary_without_a_step_trained_is_an_early_failure() -> None:
    assert early_failure.from_summary(summary()) == TYPO_ERROR
    resumed = summary(timesteps_start=1000, timesteps_end=1000)
    assert early_failure.from_summary(resumed) == TYPO_ERROR


def test_trained_steps_a_clean_end_or_a_missing_parent_are_not() -> None:
    assert early_failure.from_summary(summary(timesteps_end=40)) is None
    assert early_failure.from_summary(summary(status="budget_stop")) is None
    for reason in early_failure.PARENT_REASONS:  # Kaggle's attach lag: retried after a delay
        assert early_failure.from_summary(summary(reason=reason)) is None
    assert early_failure.from_summary(None) is None


def log(*lines: tuple[str, str]) -> list[LogEntry]:
    return [LogEntry(stream_name=stream, time=0.0, data=data) for stream, data in lines]


def test_a_crash_before_any_progress_quotes_the_last_error_line() -> None:
    entries = log(
        ("stdout", "orchestrate: kernel_template imported from /tmp/x\n"),
        ("stderr", "Traceback (most recent call last):\n  File 'x.py', line 1\n"),
        ("stderr", "ModuleNotFoundError: No module named 'sumo_rl'\n"),
    )
    assert early_failure.from_log(entries, "COMPLETE") == (
        "ModuleNotFoundError: No module named 'sumo_rl'"
    )
    assert early_failure.from_log(log(("stderr", "error: pip_install needs internet\n")), "ERROR")


def test_a_log_with_progress_a_limit_kill_or_no_error_line_is_not() -> None:
    progress = '@@orchestrate {"event":"progress","step":200,"total":1000}'
    crashed_late = log(("stdout", progress), ("stderr", "RuntimeError: boom"))
    assert early_failure.from_log(crashed_late, "COMPLETE") is None
    assert (
        early_failure.from_log(log(("stderr", "RuntimeError: boom")), "CANCEL_ACKNOWLEDGED") is None
    )
    assert early_failure.from_log(log(("stdout", "importing torch")), "ERROR") is None  # killed


def test_the_machine_finishes_the_chain_on_an_early_failure_quoting_it() -> None:
    chain = chain_record(total_timesteps=1000, segments=[1000])
    failed = segment_run(1)
    assert failed.slug == "demo-s1" and failed.early_error is None
    now = datetime.now(timezone.utc)
    assert isinstance(next_action(chain, [failed], now), Push)  # an ordinary failure: retried
    failed.early_error = TYPO_ERROR
    action = next_action(chain, [failed], now)
    assert isinstance(action, Finish) and action.state == "failed"
    assert TYPO_ERROR in action.reason and "preflight" in action.reason


# -- end to end: the trial of the issue, against the emulator ---------------------------------


def test_a_misspelt_hyperparameter_fails_one_session_and_stops_the_chain(
    emulator, chain_project
) -> None:
    """`--set run.hyperparams.learning_rte=0.1` used to run -s1, -r1 and -r2 and report only
    `Kernel process exited with code 1`. Now: one session, exit 1, the TypeError quoted in
    the step's output and in the ALERT."""
    project = chain_project(emulator, total=1000)
    started = project.cli(
        "chain", "start", "typo-chain", "--count", "1", "--set", "run.hyperparams.learning_rte=0.1"
    )
    assert started.returncode == 0, started.stderr
    ran = project.cli("chain", "run", "typo-chain", "--poll-interval", "0.3", "--no-follow")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert (
        "typo-chain: failed: segment 1 (typo-chain-s1) failed before its first training step"
        in (ran.stdout)
    )
    assert "unexpected keyword argument 'learning_rte'" in ran.stdout
    alert = next(line for line in ran.stderr.splitlines() if line.startswith("ALERT chain"))
    assert "unexpected keyword argument 'learning_rte'" in alert
    assert emulator.call_counts().get("SaveKernel.accepted") == 1
    chain = project.ledger.get_chain("typo-chain")
    assert chain.state == "failed" and any(n.level == "alert" for n in chain.notes)
    assert project.ledger.get("typo-chain-s1").early_error.startswith("TypeError:")
    # Stepping again does nothing more: the chain is over.
    again = project.cli("chain", "step", "typo-chain")
    assert again.returncode == 1 and "is failed" in again.stdout  # still failed, nothing pushed
    assert emulator.call_counts().get("SaveKernel.accepted") == 1


@pytest.mark.slow
def test_a_crash_before_the_summary_is_read_from_the_log_and_stops_the_chain(
    emulator_factory, chain_project
) -> None:
    """A kernel that dies before it can write a summary (here: an image without pandas, which
    the bootstrap refuses) is judged by its log's error line: one session, not max_retries + 1."""
    emulator = emulator_factory(image_lacks=["stable-baselines3", "sb3-contrib", "pandas"])
    project = chain_project(emulator, total=1000)
    assert project.cli("chain", "start", "no-pandas", "--count", "1").returncode == 0
    ran = project.cli("chain", "run", "no-pandas", "--poll-interval", "0.3", "--no-follow")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "failed before its first training step: error: module pandas is not importable" in (
        ran.stdout
    )
    assert "ALERT chain no-pandas" in ran.stderr
    assert emulator.call_counts().get("SaveKernel.accepted") == 1
    assert project.ledger.get("no-pandas-s1").summary is None
