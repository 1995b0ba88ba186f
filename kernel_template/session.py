"""The kernel's guarantees for any training loop: `Session`, what a user's entrypoint receives.

A run config with `entrypoint = "package.module:function"` hands the session to that function,
which runs its own loop:

    def train(session):
        model, optimizer, scheduler, loader = build(session.params)
        state = session.resume()            # None on a fresh start; RNG streams are restored
        if state is not None:
            model.load_state_dict(state["model"]) ...
        for step in session.steps(state["step"] if state else 0):
            loss = one_batch(model, optimizer, loader.next_batch())
            session.log(step, loss=loss)
            if session.should_checkpoint(step):
                session.checkpoint(step, snapshot(step))
            if plateaued(step):
                session.stop_early("validation loss plateaued")  # the run is finished
                break
        session.checkpoint(session.step, snapshot(session.step))

Step numbers count completed steps: `steps(start)` yields start+1, start+2, ... and step
`n`'s body leaves the state "after n steps", which is what `checkpoint(n, state)` stores.
The session stops yielding at the total, at the segment's end, before the time budget runs
out and after SIGTERM/SIGINT. `stop_early(reason)` ends the whole run on purpose (a chain is
done); leaving the loop before `steps()` ends without it is an error. Checkpoints, events,
metrics.csv, the summary and artifacts.zip have the shapes the SB3 trainer writes, so the
orchestrator reads them alike.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pickle
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kernel_template import layout
from kernel_template.budget import SessionBudget, StopSignals
from kernel_template.checkpoint import RNG_PKL, STATE_JSON, capture_rng_states, read_state
from kernel_template.config import RunConfig
from kernel_template.resume import ParentMissing, ResumePoint, find_resume_point
from kernel_template.runtime import RuntimeEnvironment

# The user's state (torch.save of whatever `checkpoint` was given) inside a checkpoint dir.
USER_STATE_PT = "user_state.pt"
# `algo` in the manifests of a user loop's checkpoints.
LOOP_ALGO = "loop"
# The budget and the stop signals are looked at no more often than this inside `steps()`:
# a step of a small model costs microseconds, the budget maths more.
STOP_CHECK_S = 0.05
SESSION_STATE_VERSION = 1


def load_entrypoint(spec: str) -> Callable[[Session], Any]:
    """The function named by `package.module:function` (its module must be importable)."""
    module_name, _, function_name = spec.partition(":")
    module = importlib.import_module(module_name)
    try:
        function = getattr(module, function_name)
    except AttributeError:
        raise AttributeError(
            f"entrypoint {spec!r}: {module_name} has no {function_name!r}"
        ) from None
    if not callable(function):
        raise TypeError(f"entrypoint {spec!r} is not a function")
    return function


class _SavesBytes:
    """What BestModelTracker saves: it calls `.save(file)` and reads `num_timesteps`."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.num_timesteps = data, step

    def save(self, handle: io.BytesIO) -> None:
        handle.write(self.data)


class Session:
    """One kernel session of a user's loop: resume, stop decisions, checkpoints, logs, exports.

    Public: `params`, `config`, `device`, `working_dir`, `step`, `resume()`, `steps()`,
    `should_checkpoint()`, `checkpoint()`, `log()`, `export_best()`, `track()`,
    `stop_early()`. The kernel calls `setup()` before the entrypoint and `finish()` after it."""

    def __init__(self, config: RunConfig, runtime: RuntimeEnvironment, *, stream=None) -> None:
        from kernel_template.exports import BestModelTracker
        from kernel_template.throttle import ThrottledLogger

        self.config = config
        self.config_hash = config.config_hash()  # once: the manifests and the summary carry it
        self.params: dict[str, Any] = dict(config.params)
        self.runtime = runtime
        self.device = runtime.device
        self.working_dir = runtime.working_dir
        self.paths = layout.SessionPaths(self.working_dir)
        self.working_dir.mkdir(parents=True, exist_ok=True)
        self.logger = ThrottledLogger(config.logging, self.paths.events, stream)
        self.best = BestModelTracker(self.working_dir)
        self.budget = SessionBudget(
            session_start=runtime.session_start,
            session_limit_s=runtime.session_limit_s,
            min_margin_s=config.margin_floor_s,
        )
        self.signals = StopSignals()
        self.wall = layout.WallClock()
        self.resumed: ResumePoint | None = None
        self.writer = None
        self.metrics = None
        self.tensorboard = None
        self.start_step = 0
        self.step = 0  # the last step `steps()` yielded: done once the loop body has run
        self.target_step = config.total_timesteps
        self.status = "error"
        self.reason = ""
        # `stop_early`'s reason: the user ended the run here on purpose (None: they did not).
        self.early_stop_reason: str | None = None
        self.input_seen: dict[str, list[str] | None] | None = None
        self.store = None  # a growing.GrowingStore checkpointed incrementally (`track`)
        self._resumed_state: Any = None
        self._rng_restored = False
        self.last_checkpoint_step = 0
        self.last_checkpoint_time = time.monotonic()
        self._last_metrics = (0, 0.0)  # (step, monotonic time) of the last metrics row
        self.last_progress_step = 0
        self.last_progress_time = 0.0
        self._pace = (0, time.monotonic())  # (step, time) where the speed was last measured

    # -- the kernel's side -------------------------------------------------------------
    def setup(self) -> None:
        self._begin(LOOP_ALGO)
        seed_everything(self.config.seed)  # a resume restores the checkpoint's streams over these
        if self.resumed is not None:
            self.start_step = self.resumed.manifest.num_timesteps
        self._continue()
        self.step = self.last_checkpoint_step = self.last_progress_step = self.start_step
        self._last_metrics = (self.start_step, 0.0)
        self._pace = (self.start_step, time.monotonic())
        if self.config.segment_timesteps is not None:
            self.target_step = min(
                self.target_step, self.start_step + self.config.segment_timesteps
            )
        self.tensorboard = self._open_tensorboard()
        self.wall.setup += time.time() - self.runtime.session_start

    # What every trainer does around its own setup (the SB3 trainer too).
    def _begin(self, algo: str) -> None:
        """Stop signals, the run config in the outputs, CPU threads, the checkpoint to
        continue (None: a fresh start) and the writer of the next ones."""
        from kernel_template.checkpoint import CheckpointWriter

        config = self.config
        self.signals.install()  # from here on SIGTERM/SIGINT mean "stop gracefully"
        layout.atomic_write_text(self.paths.run_config, config.model_dump_json(indent=2) + "\n")
        if self.device == "cpu":
            import torch

            torch.set_num_threads(1)  # deterministic CPU kernels (and SB3's advice for small nets)
        self.resumed = find_resume_point(
            self.working_dir, self.runtime.input_dir, config, warn=self._warn
        )
        self.writer = CheckpointWriter(
            self.working_dir,
            config_hash=self.config_hash,
            algo=algo,
            keep=config.keep_checkpoints,
        )

    def _continue(self) -> None:
        """Continue the resumed checkpoint (its chain of manifests, the parent's outputs and
        the helpers' state), then open metrics.csv. `start_step` is the resumed step."""
        from kernel_template.exports import MetricsWriter

        if self.resumed is not None:
            self.writer.continue_from(self.resumed.directory, self.resumed.manifest_sha256)
            self.logger.log(
                "resume",
                f"resumed from {self.resumed.source} at step {self.start_step}",
                step=self.start_step,
            )
            self._carry_forward_outputs()
        self.metrics = MetricsWriter(self.working_dir)
        if self.resumed is not None:
            self._load_session_state(read_state(self.resumed.directory))

    def _load_session_state(self, state: dict[str, Any]) -> None:
        helpers = state.get("helpers", {})
        for name, target in (("logger", self.logger), ("best_model", self.best)):
            if name in helpers:
                try:
                    target.load_state_dict(helpers[name])
                except (ValueError, KeyError, TypeError) as error:
                    self._warn(f"{name} state not restored ({error}); continuing without it")
        if "budget" in helpers:
            self.budget.load_priors(helpers["budget"])

    def _carry_forward_outputs(self) -> None:
        """The parent's metrics and best model continue here, so this output is complete alone."""
        assert self.resumed is not None
        if self.resumed.source_output_dir.resolve() == self.working_dir.resolve():
            return
        parent = layout.SessionPaths(self.resumed.source_output_dir)
        for source, target in zip(
            parent.continued_outputs(), self.paths.continued_outputs(), strict=True
        ):
            if source.is_file() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)

    def _copy_parent_tensorboard(self) -> None:
        """The parent's event files join this session's run dir (one run across segments)."""
        if self.resumed is None:
            return
        parent_tb = layout.SessionPaths(self.resumed.source_output_dir).tensorboard
        tb_dir = self.paths.tensorboard
        if parent_tb.is_dir() and parent_tb.resolve() != tb_dir.resolve():
            shutil.copytree(parent_tb, tb_dir, dirs_exist_ok=True)

    def _open_tensorboard(self):
        if not self.config.logging.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self._warn("tensorboard is not installed; TensorBoard logs are skipped")
            return None
        self._copy_parent_tensorboard()
        run_dir = self.paths.tensorboard / LOOP_ALGO
        # purge_step hides what a killed parent logged past its checkpoint (redone here).
        purge = self.start_step + 1 if self.resumed is not None else None
        return SummaryWriter(str(run_dir), purge_step=purge)

    # -- the user's side ---------------------------------------------------------------
    def resume(self) -> Any | None:
        """The state given to `checkpoint()` in the checkpoint this session continues (the
        parent's, or this session's own after a kill), verified against its manifest; None
        on a fresh start. Restores the torch, numpy, random and CUDA RNG streams as they were
        at that checkpoint, so call it after building the model and optimizer."""
        if self.resumed is None:
            return None
        if not self._rng_restored:
            import torch

            from kernel_template.checkpoint import restore_rng_states

            location = None if torch.cuda.is_available() else "cpu"
            with open(self.resumed.directory / USER_STATE_PT, "rb") as handle:
                self._resumed_state = torch.load(handle, map_location=location, weights_only=False)
            restore_rng_states(pickle.loads((self.resumed.directory / RNG_PKL).read_bytes()))
            self._rng_restored = True
        return self._resumed_state

    def track(self, store) -> None:
        """Checkpoint `store` (a `growing.GrowingStore`) with every checkpoint, writing only
        the rows appended since the last one; when this session resumed, refill it now."""
        from kernel_template.checkpoint import BUFFER_INDEX, restore_replay_buffer

        if self.store is not None:
            raise RuntimeError("a session tracks one store")
        self.store = store
        if self.resumed is not None:
            if not (self.resumed.directory / BUFFER_INDEX).is_file():
                raise RuntimeError(
                    "the resumed checkpoint holds no store: track() it from the start"
                )
            store._moved_to(restore_replay_buffer(store, self.resumed.directory))

    def steps(self, start: int | None = None, total: int | None = None) -> Iterator[int]:
        """Yield start+1, start+2, ... up to `total` (default: the run's total_timesteps),
        stopping early at the segment's end, before the time budget runs out, or after a
        stop signal. Each value is the number of steps completed once its body has run."""
        start = self.start_step if start is None else int(start)
        total = self.config.total_timesteps if total is None else int(total)
        if start != self.start_step:
            self._warn(f"steps() starts at {start}, the resumed checkpoint is at {self.start_step}")
        target = min(total, self.target_step)
        self.step = start
        self._pace = (start, time.monotonic())
        next_check = 0.0
        training_began = time.monotonic()
        elsewhere = self.wall.checkpointing + self.wall.exporting  # counted there, not here
        try:
            while True:
                if self.early_stop_reason is not None:  # stop_early set the status
                    return
                if self.step >= target:
                    self._stopped_at_target(target, total)
                    return
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + STOP_CHECK_S
                    if self._should_stop(now):
                        return
                self.step += 1  # counted when yielded: a `break` after the body keeps it
                yield self.step
        finally:
            elsewhere = self.wall.checkpointing + self.wall.exporting - elsewhere
            self.wall.training += time.monotonic() - training_began - elsewhere
            self._collect_checkpoint(block=False)
            if self.step != self.last_progress_step:
                self._maybe_progress(force=True)

    def stop_early(self, reason: str) -> None:
        """End the whole run at `session.step`, on purpose (early stopping): `steps()` yields
        no more, leaving the loop is not an error, and the summary says `complete` with
        `reason` and `stopped_early`, so a chain is done instead of pushing another segment.
        Checkpoint `session.step` after the loop as always: the run ends there."""
        reason = str(reason).strip()
        if not reason:
            raise ValueError(
                'stop_early needs a reason, e.g. stop_early("validation loss plateaued")'
            )
        self.early_stop_reason = reason
        self.status, self.reason = "complete", reason
        self.logger.log("stop", f"stopping early at step {self.step}: {reason}", step=self.step)

    def should_checkpoint(self, step: int) -> bool:
        """True when `checkpoint_every` steps and `checkpoint_min_seconds` have passed since
        the last checkpoint."""
        return (
            step - self.last_checkpoint_step >= self.config.checkpoint_every
            and time.monotonic() - self.last_checkpoint_time >= self.config.checkpoint_min_seconds
        )

    def checkpoint(self, step: int, state: Any) -> None:
        """Store `state` (tensors, arrays, state dicts, picklable objects) as the state after
        `step` steps, with the RNG streams. It is serialised now; writing, hashing, fsync and
        the atomic rename run in the background while training goes on. A second call for the
        same step is ignored."""
        import torch

        step = int(step)
        if self.writer is None:
            raise RuntimeError("checkpoint() before the session was set up")
        already = self.writer.in_flight or self.writer.last or self.resumed
        if step == self.last_checkpoint_step and already:  # on disk (or the resumed one)
            return
        began = time.monotonic()
        user_state = io.BytesIO()
        torch.save(state, user_state)
        blobs = {
            USER_STATE_PT: user_state.getvalue(),
            RNG_PKL: pickle.dumps(capture_rng_states()),
            STATE_JSON: self._session_state_json(step),
        }
        finished = self.writer.submit_files(
            step,
            blobs,
            rows=self.store,
            extra_manifest={
                "result_fields": self.config.result_fields(),
                "segment_index": self.config.segment_index,
            },
        )
        self.wall.checkpointing += time.monotonic() - began
        self.last_checkpoint_step, self.last_checkpoint_time = step, time.monotonic()
        if finished is not None:
            self._report_checkpoint(finished)

    def log(self, step: int, **metrics: float) -> None:
        """Record metrics at `step`, throttled to `export_every` steps and
        `export_min_seconds`: a metrics.csv row (its known columns: loss, episode_reward, ...),
        TensorBoard scalars (every metric), and a progress event when one is due."""
        step = int(step)
        self._maybe_progress()
        last_step, last_time = self._last_metrics
        now = time.monotonic()
        if (
            step - last_step < self.config.export_every
            or now - last_time < self.config.export_min_seconds
        ):
            return
        self._last_metrics = (step, now)
        values = {name: _number(value) for name, value in metrics.items()}
        self._write_metrics_row(step, values)
        if self.tensorboard is not None:
            for name, value in values.items():
                if value is not None:
                    self.tensorboard.add_scalar(name, value, step)

    def export_best(
        self, path_or_state: str | Path | Any, score: float, step: int | None = None
    ) -> bool:
        """Keep `models/best_model.zip` as the best-scoring export: a file's bytes as they
        are, anything else through torch.save. True when this one was the best so far."""
        import torch

        if isinstance(path_or_state, (str, Path)):
            data = Path(path_or_state).read_bytes()
        else:
            handle = io.BytesIO()
            torch.save(path_or_state, handle)
            data = handle.getvalue()
        began = time.monotonic()
        kept = self.best.consider(_SavesBytes(data, self.step if step is None else step), score)
        self.wall.exporting += time.monotonic() - began
        if kept:
            self.logger.event("export", step=self.best.best_step, score=float(score))
        return kept

    # -- stop decisions --------------------------------------------------------------
    def _stopped_at_target(self, target: int, total: int) -> None:
        if target >= total:
            self.status, self.reason = "complete", "total_timesteps reached"
        else:
            self.status = "budget_stop"
            self.reason = f"segment_timesteps ({self.config.segment_timesteps}) reached"

    def _should_stop(self, now: float) -> bool:
        self._collect_checkpoint(block=False)
        done_steps, since = self._pace
        if self.step > done_steps:
            self.budget.record_steps(self.step - done_steps, now - since)
            self._pace = (self.step, now)
        if self.signals.requested:
            self._stopped_by_signal()
            return True
        # One more step must fit before the stop time (which keeps the end's margin).
        if self.budget.training_seconds_left() <= (self.budget.seconds_per_step or 0.0):
            self._stopped_by_budget(self.step)
            return True
        self._maybe_progress()
        return False

    def _stopped_by_signal(self) -> None:
        self.status, self.reason = "signal_stop", f"{self.signals.received} received"

    def _stopped_by_budget(self, step: int) -> None:
        self.status, self.reason = "budget_stop", "session time budget reached"
        self.logger.event(
            "budget_stop",
            step=step,
            session_left_s=round(self.budget.session_seconds_left(), 1),
            margin_s=round(self.budget.margin_s(), 2),
        )

    # -- checkpoints, metrics, progress ------------------------------------------------
    def _session_state_json(self, step: int) -> bytes:
        import json

        state = {
            "version": SESSION_STATE_VERSION,
            "num_timesteps": step,
            "segment_index": self.config.segment_index,
            "helpers": {
                "logger": self.logger.state_dict(),
                "best_model": self.best.state_dict(),
                "budget": self.budget.state_dict(),
            },
        }
        return json.dumps(state, indent=1).encode()

    def _collect_checkpoint(self, *, block: bool) -> None:
        if self.writer is None:
            return
        began = time.monotonic()
        finished = self.writer.wait() if block else self.writer.poll()
        if block:
            self.wall.checkpointing += time.monotonic() - began
        if finished is not None:
            self._report_checkpoint(finished)

    def _report_checkpoint(self, written) -> None:
        self.budget.record_cost("checkpoint", written.seconds)
        self.logger.event(
            "checkpoint",
            step=written.ref.step,
            manifest_sha256=written.ref.manifest_sha256,
            seconds=round(written.seconds, 4),
            blocked_s=round(written.blocked_s, 4),
            bytes=written.bytes_written,
        )

    def _write_metrics_row(self, step: int, values: dict[str, float | None]) -> None:
        row: dict[str, Any] = {
            name: value for name, value in values.items() if name in layout.METRICS_COLUMNS
        }
        sps = 1.0 / self.budget.seconds_per_step if self.budget.seconds_per_step else None
        row.update(
            step=step,
            segment=self.config.segment_index,
            wall_time=round(time.time(), 3),
            sps=round(sps, 1) if sps else None,
            rss_mb=rss_mb(),
        )
        began = time.monotonic()
        self.metrics.append(row)
        self.wall.exporting += time.monotonic() - began

    def _current_step(self) -> int:
        """Steps done so far (a trainer with a model of its own reads them from it)."""
        return self.step

    def _session_target(self) -> int:
        """This session's last step: the total, or the segment's end."""
        return self.target_step

    def _maybe_progress(self, force: bool = False) -> None:
        step, now = self._current_step(), time.monotonic()
        logging = self.config.logging
        if not force and (
            now - self.last_progress_time < logging.progress_every_s
            or step - self.last_progress_step < logging.progress_every_steps
        ):
            return
        sps = 1.0 / self.budget.seconds_per_step if self.budget.seconds_per_step else None
        # `total` and the ETA are this session's end (a chain segment's last step); the
        # chain's whole length travels as `chain_total`.
        target = self._session_target()
        remaining = max(target - step, 0)
        self.logger.event(
            "progress",
            step=step,
            total=target,
            chain_total=self.config.total_timesteps,
            sps=round(sps, 1) if sps else None,
            eta_s=round(remaining / sps, 1) if sps else None,
            session_left_s=round(self.budget.session_seconds_left(), 1),
        )
        self.last_progress_step, self.last_progress_time = step, now

    def _warn(self, message: str) -> None:
        self.logger.log("runtime", message, step=self._current_step(), level="warning")

    # -- the end -------------------------------------------------------------------------
    def finish(self, error: BaseException | None = None) -> layout.SessionSummary:
        """Wait for the checkpoint in flight, then summary, metrics and artifacts.zip."""
        self.signals.uninstall()
        self._record_error(error)
        if error is None and self.status == "error" and not self.reason:
            self.reason = (
                "the entrypoint returned before steps() ended: to end the run there on purpose, "
                'call session.stop_early("why") before leaving the loop'
            )
        stopping_early = self.early_stop_reason is not None and self.status == "complete"
        if (
            self.signals.requested
            and self.status not in ("signal_stop", "error")
            and not stopping_early  # the user had ended the run already
        ):
            self._stopped_by_signal()
        if self.writer is not None:
            try:
                self._collect_checkpoint(block=True)
            except Exception as checkpoint_error:
                self._warn(f"checkpoint failed: {checkpoint_error}")
            finally:
                with contextlib.suppress(Exception):
                    self.writer.close()
            if self.step > self.last_checkpoint_step and self.writer.last is not None:
                self._warn(
                    f"trained to step {self.step} but checkpointed to {self.last_checkpoint_step}: "
                    "call session.checkpoint(session.step, state) after the loop"
                )
        if self.metrics is not None and self.metrics.last_step != self.step and self.step:
            with contextlib.suppress(Exception):
                self._write_metrics_row(self.step, {})
        summary = self.summary(stopped_early=stopping_early)
        if summary.stopped_early:
            if summary.timesteps_end < self.step:
                # Finished without its last steps saved: not a success, nor a chain's end.
                summary.status, summary.stopped_early = "error", False
                summary.reason = (
                    f"stop_early({self.early_stop_reason!r}) at step {self.step}, but "
                    f"checkpointed to {summary.timesteps_end}: call "
                    "session.checkpoint(session.step, state) after the loop"
                )
        elif summary.status == "complete" and summary.timesteps_end < summary.total_timesteps:
            summary.status = "budget_stop"
            summary.reason = f"trained to the total, but checkpointed to {summary.timesteps_end}"
        self._end(summary, None, evaluate=False)
        return summary

    def _record_error(self, error: BaseException | None) -> None:
        if isinstance(error, ParentMissing):
            # No lineage, no training: say what the inputs held, so the chain can tell why.
            self.status, self.reason, self.input_seen = "error", error.reason, error.input_seen
            self.logger.log("resume", f"{error.reason}: {error}", step=0, level="error")
            for directory, names in error.input_seen.items():
                listed = "(absent)" if names is None else ", ".join(names) or "(empty)"
                self.logger.log(
                    "resume", f"input seen: {directory}: {listed}", step=0, level="error"
                )
        elif error is not None:
            self.status = "error"
            self.reason = f"{type(error).__name__}: {error}"
            self.logger.log(
                "runtime", "".join(traceback.format_exception(error)), step=0, level="error"
            )

    def _close_tensorboard(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()

    def _end(self, summary: layout.SessionSummary, model: Any, *, evaluate: bool) -> None:
        """The summary event, then `finalize_session`: summary file, artifacts.zip, sha256."""
        from kernel_template.finalize import finalize_session

        event = layout.SummaryEvent(
            status=summary.status,
            reason=summary.reason,
            step=summary.timesteps_end,
            total=summary.total_timesteps,
        )
        self.logger.event("summary", **event.model_dump())
        with contextlib.suppress(Exception):  # flush TensorBoard's events before the zip
            self._close_tensorboard()
        summary.wall.total = time.time() - self.runtime.session_start
        finalize_session(
            self.working_dir, summary, model, self.config, self.logger, evaluate=evaluate
        )
        self.logger.close()

    def _summary_end(self) -> int:
        # The session ends where its newest checkpoint is: that is what the next one continues.
        last = self.writer.last if self.writer is not None else None
        return max(last.step if last is not None else self.start_step, self.start_step)

    def summary(self, **extra: Any) -> layout.SessionSummary:
        trained = self._current_step() - self.start_step
        resumed = None
        if self.resumed is not None:
            resumed = layout.CheckpointRef(
                step=self.resumed.manifest.num_timesteps,
                manifest_sha256=self.resumed.manifest_sha256,
                path=self.resumed.source,
            )
        return layout.SessionSummary(
            status=self.status,
            reason=self.reason or self.status,
            config_hash=self.config_hash,
            segment_index=self.config.segment_index,
            total_timesteps=self.config.total_timesteps,
            timesteps_start=self.start_step,
            timesteps_end=self._summary_end(),
            wall=self.wall.model_copy(),
            seconds_per_step=(self.wall.training / trained) if trained > 0 else None,
            checkpoints_written=self.writer.written if self.writer else 0,
            resumed_from=resumed,
            left_checkpoint=self.writer.last if self.writer else None,
            steps_redone=self.resumed.steps_redone if self.resumed else 0,
            started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.runtime.session_start)),
            ended_at=layout.utc_now_iso(),
            session_limit_s=self.runtime.session_limit_s,
            device=self.device,
            versions=self.runtime.versions(),
            embedded=self.runtime.embedded(),
            input_seen=self.input_seen,
            **extra,
            budget=self.budget.state_dict(),
            pid=os.getpid(),
        )


def seed_everything(seed: int) -> None:
    """Seed the random, numpy and torch (CUDA included) global streams."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


def rss_mb() -> float | None:
    """This process's resident memory in MiB (None where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _number(value: Any) -> float | None:
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None


def run_entrypoint(
    config: RunConfig, runtime: RuntimeEnvironment, *, stream=None
) -> layout.SessionSummary:
    """A whole session of a user loop: set up, call the entrypoint, finish (whatever happened)."""
    session = Session(config, runtime, stream=stream)
    error: BaseException | None = None
    try:
        session.setup()
        assert config.entrypoint is not None
        load_entrypoint(config.entrypoint)(session)
    except Exception as caught:
        error = caught
    return session.finish(error)
