"""The plan's arithmetic: sessions, margins, segments, quota and the CPU-or-GPU advice."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_template.config import stop_margin_floor_s
from kernel_template.layout import SessionSummary, WallClock
from orchestrator.errors import UserError
from orchestrator.kaggle.models import AcceleratorQuota
from orchestrator.plan import (
    TimingMeasure,
    default_safety_factor,
    make_plan,
    split_evenly,
)
from tests.support.emulator import use_emulator_env

TWELVE_HOURS = 43_200.0


def seed_timing(**changes) -> TimingMeasure:
    """The seed plan's quick test: 95 s setup, 0.5 s/step, 10 s evaluation, 100 steps measured."""
    fields = dict(
        setup_s=95.0,
        s_per_step=0.5,
        eval_s=10.0,
        finalize_s=5.0,
        log_lines_per_step=38.0,
        measured_steps=100,
        measured_training_s=50.0,
        device="cuda",
    )
    return TimingMeasure(**{**fields, **changes})


def summary(**changes) -> SessionSummary:
    fields = dict(
        status="complete",
        reason="done",
        config_hash="c" * 64,
        total_timesteps=1000,
        timesteps_start=0,
        timesteps_end=1000,
        wall=WallClock(
            setup=20.0,
            training=400.0,
            checkpointing=8.0,
            evaluation=6.0,
            exporting=2.0,
            finalization=3.0,
            total=439.0,
        ),
        seconds_per_step=0.4,
        log_lines=500,
        checkpoints_written=4,
        started_at="2026-01-01T00:00:00Z",
        ended_at="2026-01-01T00:07:19Z",
        session_limit_s=TWELVE_HOURS,
        device="cuda",
    )
    return SessionSummary(**{**fields, **changes})


def test_seed_example_is_one_session_with_a_short_test_safety_factor():
    plan = make_plan(seed_timing(), 24_000, TWELVE_HOURS)
    assert plan.recommendation == "one_run"
    assert plan.segment_timesteps == [24_000]
    # 95 + 24000 * 0.5 + 10 + 5: the seed's 3h35m, and 12 h / that is 3.6x, not the seed's "8.4x".
    assert plan.total_time_s == pytest.approx(12_110.0)
    assert plan.headroom == pytest.approx(TWELVE_HOURS / 12_110.0)
    # A 50 s quick test is short: the plan inflates times by 1.5 and says so.
    assert plan.safety_factor == 1.5
    assert any("quick test trained only 50 s" in note for note in plan.notes)
    # margin = (checkpoint + eval + finalize) * factor + floor; the floor is the kernel's:
    # 15 minutes of a 12 h session, since Kaggle SIGKILLs at the limit.
    assert plan.margin_s == pytest.approx((0 + 10 + 5) * 1.5 + 900)
    # The seed's 38 log lines per step: 912,000 lines, flagged as too much.
    assert plan.log_lines == 912_000
    assert plan.log_mb == pytest.approx(91.2)
    assert any("MB of log" in note for note in plan.notes)


def test_plan_and_kernel_keep_the_same_margin_floor():
    from kernel_template.budget import SessionBudget
    from kernel_template.config import RunConfig

    for limit, floor in ((TWELVE_HOURS, None), (600.0, None), (TWELVE_HOURS, 120.0)):
        config = RunConfig(session_limit_s=limit, min_margin_s=floor)
        expected = floor if floor is not None else limit / 48
        assert config.margin_floor_s == pytest.approx(expected)
        plan = make_plan(seed_timing(eval_s=0.0, finalize_s=0.0), 100, limit, margin_floor_s=floor)
        budget = SessionBudget(
            session_start=0.0, session_limit_s=limit, min_margin_s=config.margin_floor_s
        )
        budget.guesses = {}  # nothing learnt yet: the margin is the floor alone
        assert plan.margin_s == pytest.approx(budget.margin_s()) == pytest.approx(expected)
    assert RunConfig().margin_floor_s >= 900  # at least 15 minutes of a 12 h session


def test_steps_per_session_is_what_fits_after_setup_and_margin():
    plan = make_plan(seed_timing(), 24_000, TWELVE_HOURS)
    usable = TWELVE_HOURS - plan.margin_s - 95 * 1.5
    assert plan.steps_per_session == int(usable // (0.5 * 1.5))


def test_a_target_beyond_one_session_becomes_an_even_chain():
    timing = seed_timing(s_per_step=2.0)  # 100,000 steps at 2 s/step: 55 h
    plan = make_plan(timing, 100_000, TWELVE_HOURS)
    assert plan.recommendation == "chain"
    assert sum(plan.segment_timesteps) == 100_000
    assert max(plan.segment_timesteps) - min(plan.segment_timesteps) <= 1
    assert max(plan.segment_timesteps) <= plan.steps_per_session
    # One fewer segment would not fit.
    assert plan.steps_per_session * (plan.segments - 1) < 100_000
    assert len(plan.session_wall_s) == plan.segments
    assert plan.total_time_s == pytest.approx(sum(plan.session_wall_s))


def test_safety_factor_depends_on_how_long_the_test_trained():
    assert default_safety_factor(seed_timing()) == 1.5
    assert default_safety_factor(seed_timing(measured_training_s=600.0)) == 1.25
    stated = TimingMeasure(setup_s=0, s_per_step=0.1)
    assert default_safety_factor(stated) == 1.5
    plan = make_plan(seed_timing(measured_training_s=600.0), 1000, TWELVE_HOURS, safety_factor=2.0)
    assert plan.safety_factor == 2.0


def test_timing_from_a_session_summary():
    timing = TimingMeasure.from_summary(summary())
    assert timing.setup_s == 20.0
    assert timing.s_per_step == 0.4
    assert timing.checkpoint_s_per_step == pytest.approx((8.0 + 2.0) / 1000)
    assert timing.checkpoint_s == pytest.approx(2.0)  # 8 s over 4 checkpoints
    assert timing.eval_s == 6.0 and timing.finalize_s == 3.0
    assert timing.log_lines_per_step == pytest.approx(0.5)
    assert timing.uses_gpu
    # A resumed segment measures only the steps it trained.
    resumed = TimingMeasure.from_summary(
        summary(timesteps_start=500, timesteps_end=1000, seconds_per_step=None)
    )
    assert resumed.s_per_step == pytest.approx(400.0 / 500)


def test_a_summary_that_trained_nothing_is_refused():
    with pytest.raises(UserError, match="trained no steps"):
        TimingMeasure.from_summary(summary(timesteps_end=0))


def test_a_summary_file_that_is_not_one_names_the_field(tmp_path):
    bad = tmp_path / "session_summary.json"
    bad.write_text(json.dumps({"status": "complete"}))
    with pytest.raises(UserError, match="is not a session summary"):
        TimingMeasure.from_summary_file(bad)
    with pytest.raises(UserError, match="does not exist"):
        TimingMeasure.from_summary_file(tmp_path / "missing.json")


def test_setup_longer_than_the_session_is_a_clear_error():
    with pytest.raises(UserError, match="not one step fits"):
        make_plan(seed_timing(setup_s=50_000), 100, TWELVE_HOURS)


def test_quota_short_of_the_need_recommends_a_shorter_run():
    refresh = datetime(2026, 11, 28, tzinfo=timezone.utc)
    quota = AcceleratorQuota(time_used_s=27 * 3600, total_allowed_s=30 * 3600, refresh_time=refresh)
    plan = make_plan(seed_timing(), 24_000, TWELVE_HOURS, quota)
    assert plan.quota is not None and not plan.quota.enough
    assert plan.quota.left_s == pytest.approx(3 * 3600)
    assert plan.recommendation == "shorter_run"
    # What it suggests fits the quota left with the safety factor.
    assert 0 < plan.suggested_timesteps < 24_000
    suggested_wall = seed_timing().session_wall_s(plan.suggested_timesteps)
    assert suggested_wall * plan.safety_factor <= 3 * 3600
    assert any("Sat 2026-11-28" in note for note in plan.notes)
    # Plenty of quota: one run, and the view says enough.
    rich = AcceleratorQuota(time_used_s=0, total_allowed_s=30 * 3600, refresh_time=refresh)
    assert make_plan(seed_timing(), 24_000, TWELVE_HOURS, rich).quota.enough


def test_cpu_timing_ignores_the_gpu_quota():
    quota = AcceleratorQuota(time_used_s=30 * 3600, total_allowed_s=30 * 3600, refresh_time=None)
    plan = make_plan(seed_timing(device="cpu"), 24_000, TWELVE_HOURS, quota)
    assert plan.quota is None and plan.recommendation == "one_run"


def test_a_gpu_session_training_on_cpu_still_spends_gpu_quota():
    # The default MLP policy trains on CPU even on a T4 machine: the session is billed anyway.
    quota = AcceleratorQuota(time_used_s=27 * 3600, total_allowed_s=30 * 3600, refresh_time=None)
    plan = make_plan(seed_timing(device="cpu"), 24_000, TWELVE_HOURS, quota, gpu_session=True)
    assert plan.gpu and plan.quota is not None and not plan.quota.enough
    assert plan.recommendation == "shorter_run"
    assert any('accelerator = "none"' in note for note in plan.notes)


def test_cpu_suffices_when_it_needs_no_more_sessions():
    gpu = seed_timing(s_per_step=0.1)
    cpu_close = seed_timing(s_per_step=0.3, device="cpu")
    plan = make_plan(gpu, 24_000, TWELVE_HOURS, cpu_timing=cpu_close)
    assert plan.device_advice.cpu_suffices
    assert plan.device_advice.gpu_speedup == pytest.approx(3.0)
    cpu_slow = seed_timing(s_per_step=5.0, device="cpu")
    plan = make_plan(gpu, 24_000, TWELVE_HOURS, cpu_timing=cpu_slow)
    assert not plan.device_advice.cpu_suffices
    assert plan.device_advice.cpu_sessions > plan.device_advice.gpu_sessions


def test_split_evenly():
    assert split_evenly(10, 3) == [4, 3, 3]
    assert split_evenly(9, 3) == [3, 3, 3]
    assert split_evenly(1, 1) == [1]


timings = st.builds(
    TimingMeasure,
    setup_s=st.floats(0, 3000),
    s_per_step=st.floats(1e-4, 5.0),
    checkpoint_s_per_step=st.floats(0, 0.5),
    checkpoint_s=st.floats(0, 60),
    eval_s=st.floats(0, 600),
    finalize_s=st.floats(0, 300),
    log_lines_per_step=st.floats(0, 50),
    measured_steps=st.one_of(st.none(), st.integers(1, 100_000)),
    measured_training_s=st.one_of(st.none(), st.floats(1, 10_000)),
)


@settings(max_examples=300, deadline=None)
@given(
    timing=timings,
    target=st.integers(1, 5_000_000),
    limit=st.floats(3600, 43_200),
    factor=st.one_of(st.none(), st.floats(1.0, 3.0)),
)
def test_every_segment_fits_the_limit_with_the_margin_and_they_sum_to_the_target(
    timing, target, limit, factor
):
    try:
        plan = make_plan(timing, target, limit, safety_factor=factor)
    except UserError:
        # Only when not even one step fits after setup and margin.
        sf = factor or default_safety_factor(timing)
        margin = (
            timing.checkpoint_s + timing.eval_s + timing.finalize_s
        ) * sf + stop_margin_floor_s(limit)
        per_step = (timing.s_per_step + timing.checkpoint_s_per_step) * sf
        assert limit - margin - timing.setup_s * sf < per_step
        return
    assert sum(plan.segment_timesteps) == target
    assert all(s >= 1 for s in plan.segment_timesteps)
    sf = plan.safety_factor
    for steps in plan.segment_timesteps:
        # The inflated session plus its stop margin stays inside the limit.
        inflated = (
            timing.setup_s * sf + steps * (timing.s_per_step + timing.checkpoint_s_per_step) * sf
        )
        assert inflated + plan.margin_s <= limit + 1e-6
    # No wasted session: one fewer would not hold the target.
    assert target > plan.steps_per_session * (plan.segments - 1)


# -- the command ----------------------------------------------------------------------------


def run_cli(args, capsys):
    from orchestrator.commands import main

    code = main(args)
    return code, capsys.readouterr()


def test_command_plans_from_flags_as_json(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(
        [
            "plan",
            "--timesteps",
            "24000",
            "--s-per-step",
            "0.5",
            "--setup-s",
            "95",
            "--eval-s",
            "10",
            "--device",
            "gpu",
            "--no-quota",
            "--json",
        ],
        capsys,
    )
    assert code == 0, out.err
    plan = json.loads(out.out)
    assert plan["segment_timesteps"] == [24000]
    assert plan["recommendation"] == "one_run"
    assert plan["safety_factor"] == 1.5  # stated numbers, nothing measured


def test_command_plans_from_two_summaries_and_says_whether_cpu_would_do(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    gpu = tmp_path / "gpu.json"
    cpu = tmp_path / "cpu.json"
    gpu.write_text(summary(device="cuda", seconds_per_step=0.05).model_dump_json())
    cpu.write_text(summary(device="cpu", seconds_per_step=0.08).model_dump_json())
    code, out = run_cli(
        [
            "plan",
            "--summary",
            str(cpu),
            "--summary",
            str(gpu),
            "--timesteps",
            "200000",
            "--no-quota",
        ],
        capsys,
    )
    assert code == 0, out.err
    assert "recommendation: one run" in out.out
    assert "use CPU and keep the GPU quota" in out.out


def test_command_refuses_two_summaries_of_one_device(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    a = tmp_path / "a.json"
    a.write_text(summary().model_dump_json())
    code, out = run_cli(["plan", "--summary", str(a), "--summary", str(a), "--no-quota"], capsys)
    assert code == 2
    assert "one CPU and one GPU" in out.err


def test_command_without_timing_says_what_to_give(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["plan", "--timesteps", "1000"], capsys)
    assert code == 2
    assert "--summary" in out.err and "--s-per-step" in out.err


def test_command_reads_the_gpu_quota_from_kaggle(emulator, tmp_path, monkeypatch, capsys):
    use_emulator_env(monkeypatch, emulator, tmp_path)
    emulator.set_gpu_used("alice", 29 * 3600)
    code, out = run_cli(
        [
            "plan",
            "--timesteps",
            "24000",
            "--s-per-step",
            "0.5",
            "--setup-s",
            "95",
            "--device",
            "gpu",
            "--json",
        ],
        capsys,
    )
    assert code == 0, out.err
    plan = json.loads(out.out)
    assert plan["quota"]["used_s"] == pytest.approx(29 * 3600, abs=5)
    assert plan["quota"]["enough"] is False
    assert plan["recommendation"] == "shorter_run"
