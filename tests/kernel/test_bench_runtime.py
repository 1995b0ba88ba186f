"""Benchmark: the whole kernel runtime against bare `model.learn` on the same env and config,
and the log volume of a default-config run.

The run is long enough for the DEFAULT periodic work to happen as in a real session: at
least 10 checkpoints (every `checkpoint_every` steps, at least `checkpoint_min_seconds`
apart) and 3 exports (every `export_every` steps, at least `export_min_seconds` apart), so
its length comes from the measured speed: ~`RUN_SECONDS` of training per run.

The two runs take turns on the CPU, in lockstep: one of the runtime's learn chunks (~1 s),
then bare learn on its own model until it has as many steps, and so on. This box's speed
drifts by more than the gap the target resolves: bare learn alone went 1619 and then 1728
steps/s in runs minutes apart, and with whole runs in alternation the runtime's ratio came
out anywhere from 0.91 to 0.99 (nine rounds, three runs of this bench as it was). Taking
turns, both sides meet the same machine. Two bare models in turns came out even (0.997,
1.002, 1.005, 0.987 in four rounds of 40k steps), so the turns favour neither side.

Bare learn goes on with `learn(n, reset_num_timesteps=False)` on the main thread, as the
runtime does. Continued so, it was no slower than one `learn(total)` (12k-step calls against
one call, four rounds: 1524/1417, 1533/1446, 1498/1511, 1605/1549 steps/s). One
`learn(total)` on a helper thread, held at its rollout ends, ran ~1 % faster than the main
thread's learn and scattered the ratio from 0.94 to 0.99, so bare stays on the main thread.

The runtime's clock stops during bare's turns, so its wall-clock intervals (checkpoint and
export) space its periodic work as in a session of its own. A checkpoint still being written
when its turn ends is waited for on its time, so its writes never overlap bare. After a
warm-up round, `ROUNDS` rounds; the target holds for the median round.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import time

import pytest

from kernel_template import layout
from kernel_template.config import RunConfig
from kernel_template.runtime import RuntimeEnvironment

TARGET_RATIO = 0.97
MIN_CHECKPOINTS = 10
MIN_EXPORTS = 3
ROUNDS = int(os.environ.get("ORCHESTRATE_BENCH_RUNTIME_ROUNDS", "3"))
DEFAULTS = RunConfig()
# Enough wall time for the checkpoints and exports above (the n-th comes after n intervals),
# with a margin for the machine speeding up after the speed probe (on a shared 2-core box the
# fastest run went 1.2x the probe's speed).
RUN_SECONDS = 1.4 * max(
    (MIN_CHECKPOINTS + 0.5) * DEFAULTS.checkpoint_min_seconds,
    (MIN_EXPORTS + 0.5) * DEFAULTS.export_min_seconds,
)


def _steady_steps_per_s(config: RunConfig) -> float:
    """Warm-up (imports, torch, allocator) and the speed once gradient updates run."""
    import torch

    from kernel_template.train import build_model, build_vec_env

    torch.set_num_threads(1)
    model = build_model(config, build_vec_env(config), "cpu")
    model.learn(2000)
    began = time.perf_counter()
    model.learn(3000, reset_num_timesteps=False)
    return 3000 / (time.perf_counter() - began)


class _PausableClock:
    """The `time` module as the runtime's modules see it: stopped while bare has the CPU."""

    def __init__(self) -> None:
        self.paused_s = 0.0

    def __getattr__(self, name: str):
        return getattr(time, name)

    def time(self) -> float:
        return time.time() - self.paused_s

    def monotonic(self) -> float:
        return time.monotonic() - self.paused_s

    def perf_counter(self) -> float:
        return time.perf_counter() - self.paused_s


class _BareLearnInTurns:
    """Bare learn on its own model, in turns: `learn(n, reset_num_timesteps=False)` until it
    has as many steps as the runtime (SB3's way to go on training; its schedules see the
    run's planned total, as in one `learn(total)`), no callback, the default log interval."""

    def __init__(self, config: RunConfig) -> None:
        from kernel_template.train import build_model, build_vec_env

        self.model = build_model(config, build_vec_env(config), "cpu")
        self.total = config.total_timesteps
        self.seconds = 0.0

    def turn(self, until_step: int) -> float:
        """Learn up to `until_step` (the end of the rollout that reaches it); the seconds taken."""
        began = time.perf_counter()
        steps = min(until_step, self.total) - self.model.num_timesteps
        if steps > 0:
            self.model.learn(steps, reset_num_timesteps=False)
        seconds = time.perf_counter() - began
        self.seconds += seconds
        return seconds


def _run_in_lockstep(config: RunConfig, working, monkeypatch) -> dict:
    """One round: the runtime and bare learn in turns. Steps/s of each (the runtime's: its
    training loop with checkpoints, exports, progress events and logs; its one-off setup and
    end-of-session work are not per-step costs), its summary and the events it printed."""
    from kernel_template.train import TrainingSession

    bare = _BareLearnInTurns(config)
    clock = _PausableClock()
    with monkeypatch.context() as patch:
        for name, module in list(sys.modules.items()):
            if name.startswith("kernel_template") and getattr(module, "time", None) is time:
                patch.setattr(module, "time", clock)
        learn_chunk = TrainingSession._learn_chunk

        def learn_chunk_then_bare(session, steps: int) -> None:
            learn_chunk(session, steps)
            if session.writer.in_flight:  # on the runtime's time: its write never overlaps bare
                concurrent.futures.wait([session.writer._pending])
            clock.paused_s += bare.turn(session.model.num_timesteps)

        patch.setattr(TrainingSession, "_learn_chunk", learn_chunk_then_bare)
        # In-process: the session starts now, not when pytest did.
        runtime = RuntimeEnvironment(
            working_dir=working,
            input_dir=working / "no-input",
            session_limit_s=3600,
            session_start=clock.time(),
        )
        log = working.parent / f"{working.name}.log"
        with open(log, "w") as stream:  # as Kaggle: stdout to a file
            session = TrainingSession(config, runtime, stream=stream)
            session.setup()
            start = session.model.num_timesteps
            began = clock.perf_counter()
            session.train()
            seconds = clock.perf_counter() - began
            stream.flush()
            events: dict[str, int] = {}
            for line in log.read_text().splitlines():
                event = layout.parse_event(line)
                if event:
                    events[event["event"]] = events.get(event["event"], 0) + 1
            summary = session.finish()
    bare.turn(config.total_timesteps)
    assert summary.status == "complete", summary.reason
    assert bare.model.num_timesteps >= config.total_timesteps
    ours = (summary.timesteps_end - start) / seconds
    baseline = bare.model.num_timesteps / bare.seconds
    return {
        "ours": ours,
        "bare": baseline,
        "ratio": ours / baseline,
        "summary": summary.model_dump(),
        "events": events,
    }


@pytest.mark.bench
@pytest.mark.timeout(1800)  # a warm-up and ROUNDS rounds of two ~2.5 minute runs in turns
def test_bench_runtime_against_bare_learn(tmp_path, bench_record, monkeypatch):
    probe = RunConfig.model_validate({"total_timesteps": 5000})
    speed = _steady_steps_per_s(probe)
    total = max(20_000, round(speed * RUN_SECONDS, -3))
    config = RunConfig.model_validate({"total_timesteps": total})
    # The defaults, untouched: SB3's 1M-transition replay buffer, checkpoint and export intervals.
    assert config.hyperparams.get("buffer_size", 1_000_000) == 1_000_000
    assert (config.checkpoint_every, config.checkpoint_min_seconds) == (
        DEFAULTS.checkpoint_every,
        DEFAULTS.checkpoint_min_seconds,
    )
    assert (config.export_every, config.export_min_seconds) == (
        DEFAULTS.export_every,
        DEFAULTS.export_min_seconds,
    )
    # A warm-up round, untimed: a process's first session pays one-off costs (imports, first
    # renders), and its first training ran fastest in every earlier bench (bare 1878, then
    # 1711 and 1664 steps/s).
    warm_up = RunConfig.model_validate({"total_timesteps": max(5000, round(speed * 20, -3))})
    _run_in_lockstep(warm_up, tmp_path / "warm-up", monkeypatch)
    rounds = [
        _run_in_lockstep(config, tmp_path / f"run-{index}", monkeypatch) for index in range(ROUNDS)
    ]
    for run in rounds:  # every run did the periodic work asked of it
        assert run["summary"]["checkpoints_written"] >= MIN_CHECKPOINTS, run["summary"]
        assert run["events"].get("export", 0) >= MIN_EXPORTS, run["events"]
    # The median round (the lower middle one for an even count).
    median = sorted(rounds, key=lambda run: run["ratio"])[(len(rounds) - 1) // 2]
    summary, ratio = median["summary"], median["ratio"]
    met = bench_record(
        "runtime_steps_per_s_vs_bare_learn",
        median["ours"],
        unit=" steps/s",
        baseline=median["bare"],
        ratio=ratio,
        target=f"median round's ratio >= {TARGET_RATIO}",
        met=ratio >= TARGET_RATIO,
        total_timesteps=total,
        rounds=ROUNDS,
        round_ratios=[run["ratio"] for run in rounds],
        all_runtime_sps=[run["ours"] for run in rounds],
        all_bare_sps=[run["bare"] for run in rounds],
        checkpoints=summary["checkpoints_written"],
        exports=median["events"].get("export", 0),
        wall_split_s=summary["wall"],
        load_avg_1m=os.getloadavg()[0],
    )
    lines_per_step = summary["log_lines_per_step"]
    budget = config.logging.max_lines_per_step
    logs_met = bench_record(
        "log_lines_per_step_default_config",
        lines_per_step,
        baseline=budget,
        ratio=lines_per_step / budget,
        target=f"log lines per step <= max_lines_per_step ({budget})",
        met=lines_per_step <= budget,
    )
    assert met, (
        f"runtime {median['ours']:.1f} steps/s < {TARGET_RATIO} x bare {median['bare']:.1f} "
        f"(median of rounds {[round(run['ratio'], 3) for run in rounds]})"
    )
    assert logs_met, f"{lines_per_step} log lines per step > {budget}"
