"""The chain's decisions as a pure function of ledger records."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from kernel_template.layout import CheckpointRef
from orchestrator.chain import machine
from orchestrator.chain.machine import Finish, Push, next_action
from orchestrator.chain.states import ChainState, StepOutcome
from orchestrator.ledger import RunRecord, StartPoint
from tests.support.records import chain_record as chain
from tests.support.records import segment_run as run
from tests.support.records import session_summary as summary

NOW = datetime(2025, 10, 25, 12, 0, tzinfo=timezone.utc)


def test_first_action_pushes_segment_one_from_scratch() -> None:
    action = next_action(chain(), [], NOW)
    assert action == Push(segment=1, attempt=0, slug="demo-s1", segment_timesteps=1000, start=None)
    assert action.kernel_sources == []


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        ("intent", machine.ResolveIntent),
        ("pushed", machine.Poll),
        ("running", machine.Poll),
        ("terminal", machine.Pull),
    ],
)
def test_an_unsettled_run_is_dealt_with_before_anything_else(state: str, kind: type) -> None:
    runs = [run(1, step=1000), run(2, state=state)]
    action = next_action(chain(wait_until="2030-01-01T00:00:00Z"), runs, NOW)
    assert isinstance(action, kind)
    assert action.run.slug == "demo-s2"


def test_next_segment_resumes_from_the_previous_checkpoint() -> None:
    action = next_action(chain(), [run(1, step=1000, kernel_status="COMPLETE")], NOW)
    assert isinstance(action, Push)
    assert (action.segment, action.attempt, action.slug) == (2, 0, "demo-s2")
    assert action.kernel_sources == ["alice/demo-s1"]
    assert action.start.checkpoint == CheckpointRef(step=1000, manifest_sha256="hash-demo-s1")


def test_a_segment_killed_by_the_session_limit_still_counts() -> None:
    runs = [run(1, step=600, kernel_status="CANCEL_ACKNOWLEDGED")]
    action = next_action(chain(), runs, NOW)
    assert isinstance(action, Push)
    assert action.segment == 2 and action.start.step == 600


def test_error_without_progress_retries_with_a_new_slug_then_fails() -> None:
    runs = [run(1, step=1000), run(2, kernel_status="ERROR", step=1000)]
    action = next_action(chain(), runs, NOW)
    assert isinstance(action, Push)
    assert (action.segment, action.attempt, action.slug) == (2, 1, "demo-s2-r1")
    assert action.kernel_sources == ["alice/demo-s1"]  # not the failed attempt

    runs += [run(2, 1, kernel_status="ERROR"), run(2, 2, kernel_status="ERROR")]
    action = next_action(chain(), runs, NOW)
    assert isinstance(action, Finish) and action.state == "failed"
    assert "segment 2 failed 3 times" in action.reason


def test_error_with_progress_moves_on() -> None:
    runs = [run(1, kernel_status="ERROR", step=400)]
    action = next_action(chain(), runs, NOW)
    assert isinstance(action, Push) and action.segment == 2


def test_a_refused_push_burns_its_slug_and_counts_toward_max_retries() -> None:
    runs = [run(1, state="failed_push"), run(1, 1, state="failed_push", refusal="rejected")]
    action = next_action(chain(max_retries=2), runs, NOW)
    assert isinstance(action, Push)
    assert (action.segment, action.slug) == (1, "demo-s1-r2")
    runs[-1].failure_message = "Kaggle rejected the request (HTTP 400)"
    action = next_action(chain(max_retries=1), runs, NOW)
    assert isinstance(action, Finish) and action.state == "failed"
    assert "Kaggle refused the push: Kaggle rejected the request (HTTP 400)" in action.reason


@pytest.mark.parametrize("refusal", ["capacity", "quota", "throttled"])
def test_a_push_refused_for_now_is_sent_again_under_the_same_slug(refusal) -> None:
    runs = [run(1, state="failed_push", refusal=refusal)]
    for _ in range(5):  # never counted as failures, however often
        action = next_action(chain(max_retries=0), runs, NOW)
        assert isinstance(action, Push) and (action.slug, action.attempt) == ("demo-s1", 0)


def test_done_when_the_summary_reaches_the_total() -> None:
    runs = [
        run(1, step=1000),
        run(2, step=2000),
        run(3, step=3000, summary=summary(timesteps_end=3000)),
    ]
    action = next_action(chain(), runs, NOW)
    assert isinstance(action, Finish) and action.state == "done"


def early_stopped_runs(total: int = 3000) -> list[RunRecord]:
    """Segment 2 of 3 whose loop called stop_early at step 1500."""
    ended = summary(
        reason="validation loss plateaued",
        total_timesteps=total,
        timesteps_start=1000,
        timesteps_end=1500,
        stopped_early=True,
    )
    return [run(1, step=1000), run(2, step=1500, summary=ended)]


def test_a_segment_that_stopped_early_makes_the_chain_done() -> None:
    action = next_action(chain(), early_stopped_runs(), NOW)
    assert action == Finish(
        ChainState.DONE,
        "ended early by demo-s2 at step 1500 of 3000: validation loss plateaued",
    )


def test_a_chain_extended_past_an_early_stop_trains_on() -> None:
    action = next_action(chain(total_timesteps=4000), early_stopped_runs(total=3000), NOW)
    assert isinstance(action, Push) and action.segment == 3 and action.start.step == 1500


def test_segments_cut_short_get_extra_segments_within_a_bound() -> None:
    runs = [run(1, step=500), run(2, step=1000), run(3, step=1500)]
    action = next_action(chain(), runs, NOW)
    assert isinstance(action, Push) and action.segment == 4
    assert action.segment_timesteps == 1000
    runs += [run(k, step=1500 + 10 * k) for k in range(4, 17)]
    action = next_action(chain(), runs, NOW)
    assert isinstance(action, Finish) and action.state == "failed"
    assert "plan shorter segments" in action.reason


def test_wait_until_holds_back_a_push_but_not_a_poll() -> None:
    later = NOW + timedelta(hours=3)
    waiting = chain(wait_until=machine.iso(later), waiting_reason="GPU quota spent")
    action = next_action(waiting, [run(1, step=1000)], NOW)
    assert action == machine.Wait("GPU quota spent", later)
    assert isinstance(next_action(waiting, [run(1, step=1000)], later), Push)


@pytest.mark.parametrize("state", ["done", "failed", "cancelled"])
def test_inactive_chains_do_nothing(state: str) -> None:
    assert isinstance(next_action(chain(state=state), [run(1, state="running")], NOW), machine.Idle)


def test_quota_gate_says_until_when() -> None:
    refresh = NOW + timedelta(days=2)
    wait = machine.quota_gate(
        remaining_s=3600, refresh_time=refresh, need_s=3600, reserve_s=1800, now=NOW
    )
    assert wait is not None and wait.until == refresh
    assert "1.0 h left" in wait.reason and machine.iso(refresh) in wait.reason
    assert (
        machine.quota_gate(
            remaining_s=9000, refresh_time=refresh, need_s=3600, reserve_s=1800, now=NOW
        )
        is None
    )


def test_capacity_gate() -> None:
    assert machine.capacity_gate(1, 2) is None
    assert "2 of 2" in machine.capacity_gate(2, 2).reason


def test_resume_mismatch() -> None:
    point = StartPoint(
        owner="alice", slug="demo-s1", checkpoint=CheckpointRef(step=1000, manifest_sha256="a" * 64)
    )
    good = summary(resumed_from={"manifest_sha256": "a" * 64, "step": 1000, "path": "/in"})
    assert machine.resume_mismatch(point, good) is None
    assert "from scratch" in machine.resume_mismatch(point, summary(resumed_from=None))
    other = summary(resumed_from={"manifest_sha256": "b" * 64, "step": 900})
    assert "not the recorded" in machine.resume_mismatch(point, other)


def test_version_drift_names_each_changed_pinned_version() -> None:
    first = {
        "python": "3.11.9",
        "numpy": "2.4.0",
        "torch": "2.13.0",
        "docker_image": "img@sha256:a",
    }
    assert machine.version_drift(first, dict(first, gymnasium="9.9")) == []  # not pinned
    assert machine.version_drift(
        first, dict(first, numpy="2.5.0", docker_image="img@sha256:b")
    ) == [
        "numpy: 2.4.0 -> 2.5.0",
        "docker_image: img@sha256:a -> img@sha256:b",
    ]
    without_image = {k: v for k, v in first.items() if k != "docker_image"}
    assert machine.version_drift(first, without_image) == ["docker_image: img@sha256:a -> (none)"]
    # A segment that left no summary reports nothing: nothing to compare.
    assert machine.version_drift(first, None) == [] and machine.version_drift(None, first) == []


def test_every_finished_chain_state_is_a_step_outcome() -> None:
    """A step on a finished chain reports its state: adding a final state here must add the
    outcome of the same name (chain/states.py), or `chain step` cannot say it."""
    for state in ChainState:
        outcome = StepOutcome.of_finished(state) if state.finished else None
        assert outcome is None or (outcome.finished and f"{outcome}" == f"{state}")
    assert not ChainState.ACTIVE.finished and not StepOutcome.WAITING.finished
    assert {StepOutcome.FAILED.exit_code, StepOutcome.UNKNOWN.exit_code} == {1, 3}
    assert StepOutcome.WAITING.exit_code == 0 and {StepOutcome.DONE} == {"done"}
