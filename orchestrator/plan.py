"""How long a training run will take on Kaggle, and how to split it into sessions.

The seed plan extrapolated one 100-step test straight to 24,000 steps with no margin
(and called 3h35m of a 12 h session an "8.4x" safety factor: it is 3.3x). Here:

* one session costs `setup + steps * (s_per_step + checkpoint_s_per_step) + eval + finalize`;
* per-step and setup times are multiplied by a safety factor (Kaggle's shared GPUs and
  a short quick test both make the measured speed optimistic): 1.5 when the quick test
  trained for less than 5 minutes, 1.25 otherwise, unless given;
* every session keeps a stop margin for the work after training:
  `margin = (one checkpoint + evaluation + finalization) * safety_factor + floor`, where the
  floor is the kernel's (`stop_margin_floor_s`: `min_margin_s`, else session limit / 48);
* a target that does not fit one session becomes a chain of equal segments, each of
  which fits with that margin; their sizes sum to the target.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from rich.console import Console
from rich.table import Table

from kernel_template.config import stop_margin_floor_s
from kernel_template.layout import SessionSummary
from orchestrator.capacity import SESSION_LIMIT_S
from orchestrator.errors import UserError

# The stop margin's floor: the kernel's own (`kernel_template.config.stop_margin_floor_s`),
# so plan and kernel agree: `[run] min_margin_s`, or a 48th of the session (900 s of 12 h).
SHORT_TEST_TRAINING_S = 300.0
SHORT_TEST_SAFETY_FACTOR = 1.5
LONG_TEST_SAFETY_FACTOR = 1.25
# A Kaggle log entry is `{"stream_name":..,"time":..,"data":..}` around the line itself.
DEFAULT_LOG_BYTES_PER_LINE = 100.0
HIGH_LOG_VOLUME_MB = 50.0
KAGGLE_WEEKLY_GPU_QUOTA_S = 30 * 3600.0  # when Kaggle was not asked (--no-quota)


class TimingMeasure(BaseModel):
    """What a quick test measured (or the user states) about one session of a run."""

    setup_s: float = Field(
        ge=0, description="seconds before training starts (install, imports, resume)"
    )
    s_per_step: float = Field(gt=0, description="training seconds per environment step")
    checkpoint_s_per_step: float = Field(
        default=0.0, ge=0, description="checkpointing seconds per step"
    )
    checkpoint_s: float = Field(default=0.0, ge=0, description="seconds one checkpoint takes")
    eval_s: float = Field(
        default=0.0, ge=0, description="evaluation seconds at the end of a session"
    )
    finalize_s: float = Field(default=0.0, ge=0, description="finalization seconds (summary, zip)")
    log_lines_per_step: float = Field(default=0.0, ge=0)
    log_bytes_per_line: float = Field(default=DEFAULT_LOG_BYTES_PER_LINE, gt=0)
    measured_steps: int | None = Field(
        default=None, ge=0, description="steps the quick test trained"
    )
    measured_training_s: float | None = Field(default=None, ge=0)
    device: str = "unknown"

    @classmethod
    def from_summary(cls, summary: SessionSummary) -> TimingMeasure:
        steps = summary.timesteps_end - summary.timesteps_start
        wall = summary.wall
        if steps <= 0:
            raise UserError(
                "the session summary trained no steps; run a quick test with a few hundred steps first"
            )
        s_per_step = summary.seconds_per_step or wall.training / steps
        if s_per_step <= 0:
            raise UserError("the session summary has no training time; give --s-per-step instead")
        # Periodic exports happen during training, so like checkpoints they cost per step.
        per_step_overhead = (wall.checkpointing + wall.exporting) / steps
        one_checkpoint = (
            wall.checkpointing / summary.checkpoints_written if summary.checkpoints_written else 0.0
        )
        lines_per_step = summary.log_lines_per_step
        if lines_per_step is None:
            lines_per_step = summary.log_lines / steps
        return cls(
            setup_s=wall.setup,
            s_per_step=s_per_step,
            checkpoint_s_per_step=per_step_overhead,
            checkpoint_s=one_checkpoint,
            eval_s=wall.evaluation,
            finalize_s=wall.finalization,
            log_lines_per_step=lines_per_step,
            measured_steps=steps,
            measured_training_s=wall.training,
            device=summary.device,
        )

    @classmethod
    def from_summary_file(cls, path: Path) -> TimingMeasure:
        try:
            summary = SessionSummary.model_validate_json(Path(path).read_bytes())
        except FileNotFoundError:
            raise UserError(
                f"{path} does not exist; pass the session_summary.json of a quick test"
            ) from None
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UserError(f"{path} is not a session summary ({where}: {first['msg']})") from None
        return cls.from_summary(summary)

    @property
    def uses_gpu(self) -> bool:
        return self.device.lower().startswith(("cuda", "gpu"))

    def session_wall_s(self, steps: int) -> float:
        """Expected wall time of a session training `steps` (no safety factor)."""
        return (
            self.setup_s
            + steps * (self.s_per_step + self.checkpoint_s_per_step)
            + self.eval_s
            + self.finalize_s
        )


def default_safety_factor(timing: TimingMeasure) -> float:
    measured = timing.measured_training_s
    if measured is None and timing.measured_steps is None:
        return SHORT_TEST_SAFETY_FACTOR  # stated numbers, nothing measured: assume the worst case
    if measured is None:
        measured = (timing.measured_steps or 0) * timing.s_per_step
    return (
        LONG_TEST_SAFETY_FACTOR if measured >= SHORT_TEST_TRAINING_S else SHORT_TEST_SAFETY_FACTOR
    )


class QuotaView(BaseModel):
    used_s: float
    total_s: float
    left_s: float
    refresh_time: datetime | None
    needed_s: float
    enough: bool


class DeviceAdvice(BaseModel):
    cpu_s_per_step: float
    gpu_s_per_step: float
    gpu_speedup: float
    cpu_sessions: int
    gpu_sessions: int
    cpu_total_s: float
    cpu_suffices: bool
    reason: str


Recommendation = Literal["one_run", "shorter_run", "chain"]


class Plan(BaseModel):
    target_timesteps: int
    session_limit_s: float
    safety_factor: float
    margin_s: float
    steps_per_session: int
    segment_timesteps: list[int]
    session_wall_s: list[float] = Field(
        description="expected wall time of each session, no safety factor"
    )
    total_time_s: float
    headroom: float = Field(description="session limit / expected wall time of the longest session")
    recommendation: Recommendation
    suggested_timesteps: int | None = Field(default=None, description="for shorter_run: what fits")
    log_lines: int
    log_mb: float
    gpu: bool
    quota: QuotaView | None = None
    calendar_weeks: int | None = Field(
        default=None, description="weeks of GPU quota the run needs, when more than one"
    )
    weekly_gpu_h: float | None = Field(default=None, description="the weekly quota it assumed")
    device_advice: DeviceAdvice | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def segments(self) -> int:
        return len(self.segment_timesteps)


def steps_per_session(
    timing: TimingMeasure, session_limit_s: float, safety_factor: float, margin_s: float
) -> int:
    """Most steps one session can train and still stop with `margin_s` left."""
    usable = session_limit_s - margin_s - timing.setup_s * safety_factor
    per_step = (timing.s_per_step + timing.checkpoint_s_per_step) * safety_factor
    return max(int(usable // per_step), 0)


def split_evenly(total: int, parts: int) -> list[int]:
    """`parts` sizes that differ by at most one and sum to `total`, larger first."""
    base, extra = divmod(total, parts)
    return [base + 1] * extra + [base] * (parts - extra)


def make_plan(
    timing: TimingMeasure,
    target_timesteps: int,
    session_limit_s: float = SESSION_LIMIT_S,
    quota=None,
    *,
    safety_factor: float | None = None,
    margin_floor_s: float | None = None,
    cpu_timing: TimingMeasure | None = None,
    gpu_session: bool | None = None,
) -> Plan:
    """The sessions a run of `target_timesteps` needs. `quota` is an AcceleratorQuota (or None).

    `gpu_session`: whether the sessions run on a GPU machine, which is what spends GPU quota,
    whatever device torch trains on (default: the quick test's device).
    `margin_floor_s`: the stop margin's floor; None is the kernel's default for this limit.
    """
    margin_floor_s = stop_margin_floor_s(session_limit_s, margin_floor_s)
    if gpu_session is None:
        gpu_session = timing.uses_gpu
    if target_timesteps < 1:
        raise UserError("target timesteps must be at least 1; pass --timesteps N")
    if session_limit_s <= 0:
        raise UserError("the session limit must be positive; pass --session-limit-s SECONDS")
    factor = safety_factor if safety_factor is not None else default_safety_factor(timing)
    if factor < 1:
        raise UserError(
            f"safety factor {factor} is below 1; it must inflate measured times, not shrink them"
        )
    margin = (timing.checkpoint_s + timing.eval_s + timing.finalize_s) * factor + margin_floor_s
    capacity = steps_per_session(timing, session_limit_s, factor, margin)
    if capacity < 1:
        raise UserError(
            f"not one step fits a {session_limit_s:g} s session after setup ({timing.setup_s:g} s) and the "
            f"{margin:.0f} s margin; raise --session-limit-s or cut the setup time"
        )
    sessions = math.ceil(target_timesteps / capacity)
    segments = split_evenly(target_timesteps, sessions)
    walls = [timing.session_wall_s(steps) for steps in segments]
    total = sum(walls)
    notes: list[str] = []
    measured = timing.measured_training_s
    if (
        timing.measured_steps is not None
        and measured is not None
        and measured < SHORT_TEST_TRAINING_S
    ):
        notes.append(
            f"the quick test trained only {timing.measured_training_s:.0f} s ({timing.measured_steps} steps): "
            f"safety factor {factor:g}; a test of 5+ minutes gives a tighter plan"
        )
    log_lines = round(target_timesteps * timing.log_lines_per_step)
    log_mb = log_lines * timing.log_bytes_per_line / 1e6
    if log_mb > HIGH_LOG_VOLUME_MB:
        notes.append(
            f"about {log_mb:.0f} MB of log: lower logging.max_lines_per_step or add tag throttles"
        )

    quota_view = None
    recommendation: Recommendation = "one_run" if sessions == 1 else "chain"
    suggested = None
    if gpu_session and not timing.uses_gpu:
        notes.append(
            'the quick test trained on CPU inside a GPU session: with accelerator = "none" '
            "the same run uses no GPU quota"
        )
    if quota is not None and gpu_session:
        needed = total * factor
        left = quota.remaining_s
        quota_view = QuotaView(
            used_s=quota.time_used_s,
            total_s=quota.total_allowed_s,
            left_s=left,
            refresh_time=quota.refresh_time,
            needed_s=needed,
            enough=needed <= left,
        )
        if needed > left:
            # What fits the quota left this week: whole sessions, then a partial one.
            fit = _steps_within(timing, left / factor, capacity)
            if fit >= 1:
                recommendation = "shorter_run"
                suggested = fit
            notes.append(
                f"needs about {needed / 3600:.1f} GPU h but {left / 3600:.1f} h are left this week"
                + (
                    f" (refresh {quota.refresh_time:%a %Y-%m-%d %H:%M} UTC)"
                    if quota.refresh_time
                    else ""
                )
            )
    calendar_weeks = None
    weekly_s = (
        quota.total_allowed_s
        if quota is not None and quota.total_allowed_s > 0
        else KAGGLE_WEEKLY_GPU_QUOTA_S
    )
    if gpu_session and total * factor > weekly_s:
        # More GPU hours than one week gives: the chain waits for the weekly refreshes.
        calendar_weeks = math.ceil(total * factor / weekly_s)
        notes.append(
            f"{total * factor / 3600:.0f} GPU h ≈ {calendar_weeks} weeks at "
            f"{weekly_s / 3600:.0f} h/week (the quota refreshes Saturday 00:00 UTC)"
        )
    if recommendation == "chain" and sessions == 2 and target_timesteps <= capacity * 1.1:
        notes.append(
            f"{capacity} steps would fit one session: shortening the run by ~{target_timesteps - capacity} steps saves a segment"
        )

    advice = None
    if cpu_timing is not None:
        advice = advise_device(
            cpu_timing, timing, target_timesteps, session_limit_s, factor, margin_floor_s
        )

    return Plan(
        target_timesteps=target_timesteps,
        session_limit_s=session_limit_s,
        safety_factor=factor,
        margin_s=margin,
        steps_per_session=capacity,
        segment_timesteps=segments,
        session_wall_s=walls,
        total_time_s=total,
        headroom=session_limit_s / max(walls),
        recommendation=recommendation,
        suggested_timesteps=suggested,
        log_lines=log_lines,
        log_mb=log_mb,
        gpu=gpu_session,
        quota=quota_view,
        calendar_weeks=calendar_weeks,
        weekly_gpu_h=weekly_s / 3600 if calendar_weeks else None,
        device_advice=advice,
        notes=notes,
    )


def _steps_within(timing: TimingMeasure, seconds: float, capacity: int) -> int:
    """Steps a chain can train in `seconds` of expected wall time (full sessions, then a part)."""
    full_session = timing.session_wall_s(capacity)
    full, rest = divmod(seconds, full_session)
    fixed = timing.setup_s + timing.eval_s + timing.finalize_s
    partial = max(int((rest - fixed) // (timing.s_per_step + timing.checkpoint_s_per_step)), 0)
    return int(full) * capacity + min(partial, capacity)


def advise_device(
    cpu: TimingMeasure,
    gpu: TimingMeasure,
    target_timesteps: int,
    session_limit_s: float,
    safety_factor: float,
    margin_floor_s: float,
) -> DeviceAdvice:
    """Whether a CPU session (no GPU quota) would do: it must need no more sessions than the GPU."""
    cpu_plan = make_plan(
        cpu,
        target_timesteps,
        session_limit_s,
        safety_factor=safety_factor,
        margin_floor_s=margin_floor_s,
    )
    gpu_plan = make_plan(
        gpu,
        target_timesteps,
        session_limit_s,
        safety_factor=safety_factor,
        margin_floor_s=margin_floor_s,
    )
    speedup = cpu.s_per_step / gpu.s_per_step
    suffices = cpu_plan.segments <= gpu_plan.segments
    if suffices:
        reason = (
            f"a CPU session needs {cpu_plan.segments} session(s) like the GPU "
            f"(GPU is {speedup:.2f}x as fast): use CPU and keep the GPU quota"
        )
    else:
        reason = (
            f"CPU needs {cpu_plan.segments} sessions against {gpu_plan.segments} on GPU "
            f"(GPU is {speedup:.2f}x as fast): use the GPU"
        )
    return DeviceAdvice(
        cpu_s_per_step=cpu.s_per_step,
        gpu_s_per_step=gpu.s_per_step,
        gpu_speedup=speedup,
        cpu_sessions=cpu_plan.segments,
        gpu_sessions=gpu_plan.segments,
        cpu_total_s=cpu_plan.total_time_s,
        cpu_suffices=suffices,
        reason=reason,
    )


# -- the command -----------------------------------------------------------------------------


def _hours(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def segment_sizes(sizes: list[int]) -> str:
    """`1000, 1000, 999` for a few segments; `1000 x12, 999 x3` for many."""
    if len(sizes) <= 6:
        return ", ".join(str(size) for size in sizes)
    counts = {size: sizes.count(size) for size in dict.fromkeys(sizes)}
    return ", ".join(f"{size} x{count}" for size, count in counts.items())


def describe_recommendation(plan: Plan) -> str:
    if plan.recommendation == "one_run":
        return (
            f"one run: {plan.target_timesteps} steps in about {_hours(plan.total_time_s)} "
            f"({plan.headroom:.1f}x inside the {_hours(plan.session_limit_s)} limit)"
        )
    if plan.recommendation == "shorter_run":
        return (
            f"shorter run: the GPU quota left fits about {plan.suggested_timesteps} steps; "
            f"run those now, or wait for the refresh for all {plan.target_timesteps}"
        )
    sizes = segment_sizes(plan.segment_timesteps)
    return (
        f"chain of {plan.segments} segments ({sizes} steps), about "
        f"{_hours(max(plan.session_wall_s))} each: orchestrate chain start"
    )


def plan_rows(plan: Plan) -> list[tuple[str, str]]:
    rows = [
        ("target", f"{plan.target_timesteps} steps"),
        ("total time", f"{_hours(plan.total_time_s)} ({plan.total_time_s:.0f} s)"),
        *(
            [
                (
                    "calendar time",
                    f"about {plan.calendar_weeks} weeks ({plan.total_time_s * plan.safety_factor / 3600:.0f} "
                    f"GPU h at {plan.weekly_gpu_h:.0f} h/week)",
                )
            ]
            if plan.calendar_weeks
            else []
        ),
        ("session limit", _hours(plan.session_limit_s)),
        ("safety factor", f"{plan.safety_factor:g}"),
        ("stop margin", f"{plan.margin_s:.0f} s"),
        ("steps per session", f"at most {plan.steps_per_session}"),
        (
            "sessions",
            f"{plan.segments}: {segment_sizes(plan.segment_timesteps)} steps",
        ),
        ("log volume", f"{plan.log_lines} lines, {plan.log_mb:.1f} MB"),
    ]
    if plan.quota is not None:
        q = plan.quota
        refresh = f", refresh {q.refresh_time:%a %Y-%m-%d %H:%M} UTC" if q.refresh_time else ""
        rows.append(
            (
                "GPU quota",
                f"needs {q.needed_s / 3600:.1f} h of {q.left_s / 3600:.1f} h left "
                f"({q.used_s / 3600:.1f} of {q.total_s / 3600:.1f} h used{refresh})",
            )
        )
    if plan.device_advice is not None:
        rows.append(("CPU instead?", plan.device_advice.reason))
    return rows


def render_plan(console: Console, plan: Plan) -> None:
    """A table on a terminal; plain `name: value` lines otherwise."""
    rows = plan_rows(plan)
    if console.is_terminal:
        table = Table(title="plan", show_header=False)
        table.add_column("what")
        table.add_column("value")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        for name, value in rows:
            console.print(f"{name}: {value}", markup=False, soft_wrap=True, highlight=False)
    console.print(
        f"recommendation: {describe_recommendation(plan)}",
        markup=False,
        soft_wrap=True,
        highlight=False,
    )
    for note in plan.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True, highlight=False)


def _timings_from(summaries: list[Path]) -> tuple[TimingMeasure | None, TimingMeasure | None]:
    """(main timing, CPU timing to compare) from zero, one or two quick-test summaries."""
    if len(summaries) > 2:
        raise UserError("give at most two --summary files (one CPU and one GPU quick test)")
    timings = [TimingMeasure.from_summary_file(p) for p in summaries]
    if len(timings) < 2:
        return (timings[0] if timings else None), None
    gpu = [t for t in timings if t.uses_gpu]
    cpu = [t for t in timings if not t.uses_gpu]
    if len(gpu) != 1 or len(cpu) != 1:
        raise UserError(
            "two --summary files must come from one CPU and one GPU quick test "
            f"(devices: {timings[0].device}, {timings[1].device})"
        )
    return gpu[0], cpu[0]


def plan_from_flags(
    settings,
    *,
    summaries: list[Path],
    timesteps: int | None = None,
    session_limit_s: float | None = None,
    flags: dict[str, float | None] | None = None,
    device: str | None = None,
    safety_factor: float | None = None,
    margin_floor_s: float | None = None,
    quota: bool = True,
) -> Plan:
    """`orchestrate plan`: the plan from quick-test summaries and/or timing flags
    (setup_s, s_per_step, checkpoint_s_per_step, eval_s, finalize_s, log_lines_per_step)."""
    from orchestrator.settings import is_gpu_shape

    timing, cpu_timing = _timings_from(summaries)
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    if device is not None and device not in ("cpu", "gpu"):
        raise UserError(f"--device {device!r} must be cpu or gpu")
    if timing is None:
        if given.get("s_per_step") is None:
            raise UserError(
                "give --summary of a quick test, or at least --s-per-step (and --setup-s)"
            )
        default_device = "gpu" if is_gpu_shape(settings.kernel.machine_shape) else "cpu"
        given.setdefault("setup_s", 0.0)
        try:
            timing = TimingMeasure(device=device or default_device, **given)
        except ValidationError as error:
            first = error.errors()[0]
            raise UserError(f"--{first['loc'][0].replace('_', '-')}: {first['msg']}") from None
    elif given or device:
        timing = timing.model_copy(update={**given, **({"device": device} if device else {})})
    target = timesteps or settings.run.total_timesteps
    limit = session_limit_s or settings.run.session_limit_s
    # GPU quota follows the machine the sessions run on, not the device torch picked.
    gpu_session = timing.uses_gpu or is_gpu_shape(settings.kernel.machine_shape)
    quota_info = None
    if quota and gpu_session:
        quota_info = _fetch_quota(settings)
    if margin_floor_s is None:
        margin_floor_s = stop_margin_floor_s(limit, settings.run.min_margin_s)
    plan = make_plan(
        timing,
        target,
        limit,
        quota_info,
        safety_factor=safety_factor,
        margin_floor_s=margin_floor_s,
        cpu_timing=cpu_timing,
        gpu_session=gpu_session,
    )
    if quota and gpu_session and quota_info is None:
        plan.notes.append(
            "GPU quota unknown (Kaggle unreachable or the credentials refused); --no-quota skips it"
        )
    return plan


def _fetch_quota(settings):
    """The account's GPU quota, or None when Kaggle cannot be asked (no credentials, offline)."""
    from orchestrator.kaggle import KaggleClient, KaggleError

    try:
        with KaggleClient(settings.kaggle.api_url) as client:
            return client.quota()
    except KaggleError:
        return None
