"""One training session: build or resume, train in chunks, checkpoint, export, finalise.

Training runs as a sequence of `learn(n, reset_num_timesteps=False)` chunks. Between
chunks the model sits at a rollout boundary, so that is where checkpoints, exports and
stop decisions happen; the schedule horizon is pinned to `total_timesteps` so chunking
and resuming leave exploration and learning-rate schedules untouched (see
docs in /work/shared/notes/exact-resume.md for why each step matters).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger, configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from kernel_template import layout
from kernel_template.checkpoint import (
    ENV_PKL,
    MODEL_ZIP,
    RNG_PKL,
    read_state,
    restore_replay_buffer,
    restore_rng_states,
)
from kernel_template.config import RunConfig
from kernel_template.resume import ResumePoint
from kernel_template.runtime import RuntimeEnvironment
from kernel_template.session import Session
from kernel_template.session import rss_mb as _rss_mb

# Emergency stop: a signal not honoured at a chunk boundary within this many seconds stops
# learn() mid-rollout (that state is not checkpointed; the last boundary checkpoint stands).
SIGNAL_GRACE_S = 5.0
# Agent plus baseline controllers in the final evaluation (an upper bound for the cost estimate).
FINAL_EVAL_CONTROLLERS = 4
# Conservative zip throughput, for the finalisation estimate.
ZIP_BYTES_PER_S = 50e6
STATE_VERSION = 1
# How often, inside a chunk, the emergency stop is checked (far below SIGNAL_GRACE_S).
EMERGENCY_CHECK_S = 0.05
# The learning curve is for people, who read it once the session's outputs are out (the
# session's end renders it again): during training it is drawn at most this often, the first
# time one interval into the session, since a render costs more than the periodic evaluation.
FIGURE_EVERY_S = 600.0
# What a render is taken to cost until one is timed (a session's first, cold one: ~0.3 s).
FIGURE_COST_GUESS_S = 0.5


class PinnedHorizonMixin:
    """Schedules see progress against the run's planned total, not the current learn() call."""

    _pinned_total_timesteps: int | None = None

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        pinned = self._pinned_total_timesteps
        super()._update_current_progress_remaining(num_timesteps, pinned or total_timesteps)


class PinnedDQN(PinnedHorizonMixin, DQN):
    pass


class PinnedPPO(PinnedHorizonMixin, PPO):
    pass


class PinnedA2C(PinnedHorizonMixin, A2C):
    pass


class PinnedSAC(PinnedHorizonMixin, SAC):
    pass


ALGORITHM_CLASSES = {"DQN": PinnedDQN, "PPO": PinnedPPO, "A2C": PinnedA2C, "SAC": PinnedSAC}
# Hyperparameters SB3 wants as tuples; JSON brings lists.
TUPLE_HYPERPARAMS = ("train_freq",)


def make_env(env_id: str, env_kwargs: dict, seed: int):
    """The env named by a run config (traffic-signal, a Gymnasium id, or package.module:Class)."""
    from kernel_template.envs import make_env as make_named_env

    return make_named_env(env_id, env_kwargs, seed)


def build_vec_env(config: RunConfig) -> DummyVecEnv:
    """DummyVecEnv of Monitor-wrapped envs (no Monitor file: the env must stay picklable)."""

    def factory(index: int):
        return lambda: Monitor(make_env(config.env, config.env_kwargs, config.seed + index))

    return DummyVecEnv([factory(i) for i in range(config.n_envs)])


def model_kwargs(config: RunConfig) -> dict[str, Any]:
    hyperparams = dict(config.hyperparams)
    for name in TUPLE_HYPERPARAMS:
        if isinstance(hyperparams.get(name), list):
            hyperparams[name] = tuple(hyperparams[name])
    return hyperparams


def build_model(config: RunConfig, env: DummyVecEnv, device: str):
    cls = ALGORITHM_CLASSES[config.algo]
    model = cls(
        config.policy,
        env,
        seed=config.seed,
        device=device,
        verbose=0,
        policy_kwargs=dict(config.policy_kwargs) or None,
        **model_kwargs(config),
    )
    model._pinned_total_timesteps = config.total_timesteps
    return model


def load_model(point: ResumePoint, config: RunConfig, device: str, allowed_changes: list[str]):
    """Restore model, env, replay buffer and RNGs exactly as they were at the checkpoint."""
    import cloudpickle

    directory = point.directory
    env = cloudpickle.loads((directory / ENV_PKL).read_bytes())
    overrides = {
        name.split(".", 1)[1]: _dig(config.result_fields(), name)
        for name in allowed_changes
        if name.startswith("hyperparams.")
    }
    cls = ALGORITHM_CLASSES[config.algo]
    # seed=None: load() would otherwise re-seed every RNG with the original seed.
    model = cls.load(
        directory / MODEL_ZIP, env=env, device=device, force_reset=False, seed=None, **overrides
    )
    model._pinned_total_timesteps = config.total_timesteps
    if getattr(model, "replay_buffer", None) is not None:
        restore_replay_buffer(model.replay_buffer, directory)
    import pickle

    restore_rng_states(pickle.loads((directory / RNG_PKL).read_bytes()))
    return model, read_state(directory)


def _dig(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


def bare_learn(config: RunConfig, device: str = "cpu", callback=None):
    """Plain `model.learn(total)` on the same env and config: the baseline for benchmarks."""
    torch.set_num_threads(1)
    model = build_model(config, build_vec_env(config), device)
    model.learn(config.total_timesteps, callback=callback)
    return model


class TrainingStats(BaseCallback):
    """Collects the env's `queue`/`delay` infos between exports; stops learn() only in an emergency."""

    def __init__(self, emergency) -> None:
        super().__init__(verbose=0)
        self._emergency = emergency
        self.queue_sum = 0.0
        self.delay_sum = 0.0
        self.samples = 0
        self.stopped_mid_rollout = False
        self._has_traffic_info: bool | None = None
        self._next_check = 0.0

    def _on_step(self) -> bool:
        infos = self.locals.get("infos")
        if infos:
            if self._has_traffic_info is None:
                self._has_traffic_info = "queue" in infos[0]
            if self._has_traffic_info:
                for info in infos:
                    self.queue_sum += float(info.get("queue", 0.0))
                    self.delay_sum += float(info.get("delay", 0.0))
                    self.samples += 1
        now = time.monotonic()
        if now < self._next_check:  # the budget maths costs more than a step's bookkeeping
            return True
        self._next_check = now + EMERGENCY_CHECK_S
        if self._emergency():
            self.stopped_mid_rollout = True
            return False
        return True

    def take_means(self) -> tuple[float | None, float | None]:
        if not self.samples:
            return None, None
        means = self.queue_sum / self.samples, self.delay_sum / self.samples
        self.queue_sum = self.delay_sum = 0.0
        self.samples = 0
        return means


@dataclass
class SessionClock:
    """Wall-clock split of the session (contract 4)."""

    started: float = field(default_factory=time.time)
    split: layout.WallClock = field(default_factory=layout.WallClock)

    def add(self, part: str, seconds: float) -> None:
        setattr(self.split, part, getattr(self.split, part) + seconds)


class TrainingSession(Session):
    """The SB3 trainer: a `Session` whose loop is chunked `learn()` calls, whose state is
    the model (and env, replay buffer), and whose end evaluates against the baselines."""

    def __init__(self, config: RunConfig, runtime: RuntimeEnvironment, *, stream=None) -> None:
        super().__init__(config, runtime, stream=stream)
        self.working = self.working_dir
        # The split starts at process start: imports and installs are part of setup.
        self.clock = SessionClock(started=runtime.session_start, split=self.wall)
        self.model = None
        # The step of the newest checkpoint on disk (where a kill resumes), and until when
        # training may go on while the next one is written.
        self.durable_step = 0
        self.write_grace_until = 0.0
        self.last_export_step = 0
        self.last_export_time = time.monotonic()
        self.last_figure_time = time.monotonic()
        self.figure_s = FIGURE_COST_GUESS_S  # the last render's cost, for the finalisation estimate
        self.stats: TrainingStats | None = None

    # -- setup --------------------------------------------------------------------------
    def setup(self) -> None:
        config = self.config
        self._begin(config.algo)
        device = self.runtime.device
        if self.resumed is None:
            self.model = build_model(config, build_vec_env(config), device)
        else:
            self.model, _ = load_model(self.resumed, config, device, config.allow_config_change)
        self.start_step = self.last_checkpoint_step = self.last_export_step = (
            self.model.num_timesteps
        )
        self._continue()
        self.model.set_logger(self._sb3_logger())
        self.durable_step = self.start_step
        self.last_progress_step = self.start_step
        self.stats = TrainingStats(self._emergency)
        self.clock.add("setup", time.time() - self.clock.started)
        # Measure the end-of-session work now (evaluation, figures), so the stop margin is
        # learnt rather than guessed; the evaluation runs off the training RNG streams.
        # Imports first: their one-off cost must not inflate the measured costs.
        import matplotlib.backends.backend_agg  # noqa: F401
        import pandas  # noqa: F401

        import kernel_template.evaluation  # noqa: F401
        import kernel_template.finalize  # noqa: F401

        self.export()

    def _sb3_logger(self) -> Logger:
        """Set once for the whole session, so every learn() chunk writes to one events file.

        TensorBoard: one run dir (`logs/tensorboard/<algo>/`, never SB3's `DQN_1`, `DQN_2`)
        across segments: the parent's event files are copied forward and this session's file
        joins them. Steps are `num_timesteps`, so they continue where the parent stopped; a
        purge marker at the resume step hides whatever the parent logged past its checkpoint
        (work that is redone after a kill), so the steps stay strictly increasing."""
        formats: list[str] = []
        run_dir = self.paths.tensorboard / self.config.algo
        if self.config.logging.tensorboard:
            try:
                import tensorboard  # noqa: F401

                self._copy_parent_tensorboard()
                formats.append("tensorboard")
            except ImportError:
                self._warn("tensorboard is not installed; TensorBoard logs are skipped")
        logger = configure(str(run_dir), formats)
        if formats and self.resumed is not None:
            self._mark_tensorboard_resume(logger, int(self.model.num_timesteps))
        return logger

    @staticmethod
    def _mark_tensorboard_resume(logger: Logger, step: int) -> None:
        from stable_baselines3.common.logger import TensorBoardOutputFormat
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        for output in logger.output_formats:
            if isinstance(output, TensorBoardOutputFormat):
                start = Event(step=step, session_log=SessionLog(status=SessionLog.START))
                output.writer.file_writer.add_event(start)

    def _current_step(self) -> int:
        return int(self.model.num_timesteps) if self.model is not None else self.start_step

    def _session_target(self) -> int:
        return self._target_step()

    # -- stop decisions -----------------------------------------------------------------
    def _emergency(self) -> bool:
        """Time is truly out inside a chunk: the platform will kill us before the boundary."""
        if self.signals.received_at is not None:
            return time.time() - self.signals.received_at > SIGNAL_GRACE_S
        return self.budget.session_seconds_left() < self.budget.end_cost_s() * 1.1

    def _target_step(self) -> int:
        target = self.config.total_timesteps
        if self.config.segment_timesteps is not None:
            target = min(target, self.start_step + self.config.segment_timesteps)
        return target

    # -- the loop -----------------------------------------------------------------------
    def train(self) -> None:
        model, config = self.model, self.config
        target = self._target_step()
        try:
            while True:
                if model.num_timesteps >= target:
                    self._stopped_at_target(target, config.total_timesteps)
                    break
                if self.signals.requested:
                    self._stopped_by_signal()
                    break
                chunk = self.budget.plan_chunk(self._wanted_steps(target))
                if chunk <= 0:
                    self._stopped_by_budget(model.num_timesteps)
                    break
                self._learn_chunk(chunk)
                if self.stats.stopped_mid_rollout:
                    self.status = "signal_stop" if self.signals.requested else "budget_stop"
                    self.reason = "stopped mid-rollout: out of time"
                    break
                self._after_chunk()
            if model.num_timesteps != self.last_progress_step:
                self._maybe_progress(force=True)  # the bar ends where training ended
        finally:
            self.signals.uninstall()
            if self.signals.requested and self.status != "signal_stop":
                self._stopped_by_signal()

    def _wanted_steps(self, target: int) -> int:
        remaining = target - self.model.num_timesteps
        if self.writer.in_flight:
            # A kill now redoes everything since the last durable checkpoint. Train on until
            # that checkpoint's interval would be up (a write started early has that long to
            # land), one rollout at least; then `_after_chunk` waits for the write.
            grace_s = self.write_grace_until - time.monotonic()
            steps = self._rollout_steps()
            if grace_s > 0 and self.budget.seconds_per_step:
                steps = max(steps, int(grace_s / self.budget.seconds_per_step))
            return min(remaining, steps)
        # Land the chunk where the next checkpoint is due, so checkpoints keep their spacing
        # (and a time-spaced one starts when planned, not up to a chunk late).
        to_checkpoint = self.config.checkpoint_every - (
            self.model.num_timesteps - self.last_checkpoint_step
        )
        until_due_s = self._checkpoint_spacing_s() - (time.monotonic() - self.last_checkpoint_time)
        if until_due_s > 0 and self.budget.seconds_per_step:
            by_time = max(self._rollout_steps(), int(until_due_s / self.budget.seconds_per_step))
            to_checkpoint = max(to_checkpoint, by_time)
        if until_due_s > 0 and not self.budget.seconds_per_step:
            return remaining  # speed unknown yet: the budget's probe chunk is small anyway
        return min(remaining, to_checkpoint) if to_checkpoint > 0 else remaining

    def _checkpoint_spacing_s(self) -> float:
        """Seconds between checkpoint starts. A time-spaced checkpoint starts early by its
        measured cost (at most half the interval), so it is durable when the interval is up
        and training does not wait for its write."""
        spacing = self.config.checkpoint_min_seconds
        cost = self.budget.costs.get("checkpoint")
        if spacing > 0 and cost is not None and cost.count:
            spacing -= min(cost.planning_s, spacing / 2)
        return spacing

    def _rollout_steps(self) -> int:
        """Timesteps of one rollout: what one learn() call collects at the least."""
        from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

        model = self.model
        # On-policy: n_steps per env. (Off-policy models have an n_steps too: n-step returns.)
        if isinstance(model, OnPolicyAlgorithm):
            return int(model.n_steps * model.n_envs)
        freq = getattr(model, "train_freq", None)
        per_env = freq.frequency if freq is not None and freq.unit.value == "step" else 1
        return max(1, int(per_env * model.n_envs))

    def _learn_chunk(self, steps: int) -> None:
        before = self.model.num_timesteps
        began = time.monotonic()
        self.model.learn(steps, reset_num_timesteps=False, callback=self.stats, log_interval=4)
        seconds = time.monotonic() - began
        self.clock.add("training", seconds)
        self.budget.record_steps(self.model.num_timesteps - before, seconds)

    def _after_chunk(self) -> None:
        # A write still in flight once its grace is over is waited for (see `_wanted_steps`):
        # a kill never redoes more than one checkpoint interval plus one rollout.
        self._collect_checkpoint(
            block=self.writer.in_flight and time.monotonic() >= self.write_grace_until
        )
        step = self.model.num_timesteps
        now = time.monotonic()
        if (
            step - self.last_checkpoint_step >= self.config.checkpoint_every
            and now - self.last_checkpoint_time >= self._checkpoint_spacing_s()
        ):
            self._checkpoint_model()
        if (
            step - self.last_export_step >= self.config.export_every
            and now - self.last_export_time >= self.config.export_min_seconds
        ):
            self.export()
        self._maybe_progress()

    # -- checkpoints and exports ---------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "num_timesteps": int(self.model.num_timesteps),
            "episode_count": int(self.model._episode_num),
            "pinned_total_timesteps": self.model._pinned_total_timesteps,
            "segment_index": self.config.segment_index,
            "helpers": {
                "logger": self.logger.state_dict(),
                "best_model": self.best.state_dict(),
                "budget": self.budget.state_dict(),
            },
        }

    def _checkpoint_model(self) -> None:
        """Snapshot now (training waits for that part only); the disk work runs in the
        background and is reported by `_collect_checkpoint` once it is durable."""
        began = time.monotonic()
        finished = self.writer.submit(
            self.model,
            episode_count=int(self.model._episode_num),
            state=self._state(),
            extra_manifest={
                "result_fields": self.config.result_fields(),
                "segment_index": self.config.segment_index,
            },
        )
        self.clock.add("checkpointing", time.monotonic() - began)
        # Started early (time-spaced, `_checkpoint_spacing_s`): training may go on until the
        # interval is up. Step-spaced: no grace, one rollout and the write is waited for.
        self.write_grace_until = self.last_checkpoint_time + self.config.checkpoint_min_seconds
        self.last_checkpoint_step = self.model.num_timesteps
        self.last_checkpoint_time = time.monotonic()
        if finished is not None:
            self._report_checkpoint(finished)

    def _report_checkpoint(self, written) -> None:
        self.durable_step = written.ref.step
        # The budget plans for the whole cost: the session's last checkpoint is waited for.
        super()._report_checkpoint(written)

    def export(self) -> None:
        """Metrics row, best-model check and learning curve; their costs feed the budget,
        since the session's end does the same work (final evaluation, figures, zip)."""
        from kernel_template.evaluation import evaluate_agent
        from kernel_template.exports import render_learning_curve

        began = time.monotonic()
        step = self.model.num_timesteps
        episodes = self.config.evaluation.best_model_episodes
        result = evaluate_agent(self.model, self.config, episodes)
        eval_s = time.monotonic() - began
        self.clock.add("evaluation", eval_s)
        # The final evaluation runs more episodes, and the baselines too: scale the measured cost.
        final_episodes = self.config.evaluation.final_episodes
        self.budget.record_cost(
            "evaluation", eval_s / episodes * final_episodes * FINAL_EVAL_CONTROLLERS
        )
        score = result.get("mean_return")
        self.best.consider(self.model, score)
        self.metrics.append(self._metrics_row(score))
        figure_began = time.monotonic()
        figure_due = figure_began - self.last_figure_time >= FIGURE_EVERY_S
        # None: no episode has ended yet, nothing drawn; the next export tries again.
        if figure_due and render_learning_curve(self.working) is not None:
            self.last_figure_time = time.monotonic()
            self.figure_s = self.last_figure_time - figure_began
        # Finalising renders two figures and zips the outputs (checkpoints dominate its size).
        zip_bytes = self.writer.last_bytes * self.config.keep_checkpoints if self.writer else 0
        self.budget.record_cost("finalize", 2 * self.figure_s + zip_bytes / ZIP_BYTES_PER_S)
        seconds = time.monotonic() - began - eval_s
        self.clock.add("exporting", seconds)
        self.last_export_step, self.last_export_time = step, time.monotonic()
        self.logger.event("export", step=step, score=score, seconds=round(seconds + eval_s, 3))

    def _metrics_row(self, eval_score: float | None) -> dict[str, Any]:
        model = self.model
        episodes = list(model.ep_info_buffer or [])
        queue, delay = self.stats.take_means()
        values = model.logger.name_to_value
        sps = 1.0 / self.budget.seconds_per_step if self.budget.seconds_per_step else None
        gpu_mb = torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else None
        return {
            "step": model.num_timesteps,
            "segment": self.config.segment_index,
            "wall_time": round(time.time(), 3),
            "episodes": model._episode_num,
            "episode_reward": float(np.mean([e["r"] for e in episodes])) if episodes else None,
            "episode_length": float(np.mean([e["l"] for e in episodes])) if episodes else None,
            "loss": values.get("train/loss", values.get("train/actor_loss")),
            "exploration": getattr(model, "exploration_rate", None),
            "queue": queue,
            "delay": delay,
            "sps": round(sps, 1) if sps else None,
            "rss_mb": _rss_mb(),
            "gpu_mem_mb": gpu_mb,
        }

    # -- the end --------------------------------------------------------------------------
    def finish(self, error: BaseException | None = None) -> layout.SessionSummary:
        """Final checkpoint (when sound), then summary, evaluation and artifacts."""
        self._record_error(error)
        model = self.model
        progressed = model is not None and model.num_timesteps > self.last_checkpoint_step
        sound = model is not None and not (self.stats and self.stats.stopped_mid_rollout)
        if self.writer is not None:
            try:
                self._collect_checkpoint(block=True)  # the one still being written
            except Exception as checkpoint_error:
                self._warn(f"checkpoint failed: {checkpoint_error}")
            try:
                if progressed and sound:
                    self._checkpoint_model()
                    self._collect_checkpoint(block=True)
            except Exception as checkpoint_error:  # the outputs still matter
                self._warn(f"final checkpoint failed: {checkpoint_error}")
            finally:
                with contextlib.suppress(Exception):  # its error was reported just above
                    self.writer.close()
        summary = self.summary()
        if model is not None and self.metrics and self.metrics.last_step != model.num_timesteps:
            try:
                self.metrics.append(self._metrics_row(None))
            except Exception as export_error:
                self._warn(f"final metrics row failed: {export_error}")
        self._end(summary, model, evaluate=model is not None)
        return summary

    def _close_tensorboard(self) -> None:
        if self.model is not None:
            self.model.logger.close()

    def _summary_end(self) -> int:
        return self._current_step()

    def summary(self) -> layout.SessionSummary:
        model = self.model
        return super().summary(episodes=int(model._episode_num) if model is not None else None)


def run_session(
    config: RunConfig, runtime: RuntimeEnvironment, *, stream=None
) -> layout.SessionSummary:
    """One whole session: the SB3 trainer, or the user loop the config names."""
    if config.trainer == "loop":
        from kernel_template.session import run_entrypoint

        return run_entrypoint(config, runtime, stream=stream)
    session = TrainingSession(config, runtime, stream=stream)
    error: BaseException | None = None
    try:
        session.setup()
        session.train()
    except Exception as caught:
        error = caught
    return session.finish(error)
