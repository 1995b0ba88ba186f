"""SIGKILL at random moments of training, inside a checkpoint commit and during finalisation,
then resume: every kill hits a live session, no uncommitted checkpoint is ever chosen, the
newest committed step advances, at most one checkpoint interval plus one rollout is redone,
and the final result equals the uninterrupted run's.

Kernels run through `killpoints` (tests/support/killpoints.py), a test-only wrapper around
`python -m kernel_template` that can SIGKILL the session at a named point and records how far
training got (the model's num_timesteps at every step), so the work a kill threw away is
measured, not guessed.
"""

from __future__ import annotations

import concurrent.futures
import json
import queue
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kernel_template import layout
from tests.support.compare import assert_bit_identical as assert_same
from tests.support.kernel import (
    DQN_CONFIG,
    KILLPOINTS,
    config_with,
    newest_checkpoint,
    run_kernel,
    start_kernel,
    summary_of,
    training_result,
)
from tests.support.killpoints import read_step_file

# Random kills: long enough that ten kills, each after at least one new checkpoint, all land
# while the session still trains (each kill costs at most ~4 checkpoint intervals of steps).
RANDOM_CONFIG = config_with(
    DQN_CONFIG, total_timesteps=6400, checkpoint_every=200, export_every=1600
)
# Deterministic kills: short.
POINT_CONFIG = config_with(DQN_CONFIG, total_timesteps=1600, checkpoint_every=200, export_every=800)
ROLLOUT = (
    4  # train_freq: checkpoints land on rollout boundaries, at most this far past the interval
)
TRAINING_EVENTS = ("progress", "checkpoint")


def newest_sound_step(input_dir: Path) -> int | None:
    """What a correct resume must pick, computed independently of the runtime."""
    best = None
    for manifest_path in input_dir.glob(f"*/{layout.CHECKPOINTS_DIR}/*/{layout.MANIFEST_NAME}"):
        directory = manifest_path.parent
        if not directory.name.isdigit():
            # A temp dir killed between its manifest and its rename: never committed. (pathlib's
            # glob matches dot-directories, so it must be skipped explicitly.)
            continue
        try:
            manifest = layout.CheckpointManifest.model_validate_json(manifest_path.read_text())
        except ValueError:
            continue
        if not manifest.problems(directory):
            best = max(best or 0, manifest.num_timesteps)
    return best


def checkpoint_steps(working: Path) -> list[int]:
    path = working / layout.EVENTS_JSONL
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a kill can leave no torn line, but be lenient
        if record.get("message") == "checkpoint" or record.get("event") == "checkpoint":
            fields = record.get("fields") or record
            if "step" in fields:
                steps.append(int(fields["step"]))
    return steps


def resumed_step(working: Path) -> int | None:
    """The step this attempt resumed from, from its own log (None when it started fresh)."""
    path = working / layout.EVENTS_JSONL
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("tag") == "resume":
            return int(record["step"])
    return None


@dataclass
class Session:
    """A kernel process whose stdout `@@orchestrate` events are read as they come."""

    process: subprocess.Popen
    working: Path
    step_file: Path
    events: queue.Queue = field(default_factory=queue.Queue)
    output: list[str] = field(default_factory=list)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            event = layout.parse_event(line)
            if event is not None:
                self.events.put((time.monotonic(), event))
        self.events.put((time.monotonic(), None))  # end of output

    def next_event(self, names: tuple[str, ...], timeout: float = 120) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {names} event in {timeout} s:\n{self.tail()}"
            at, event = self.events.get(timeout=left)
            assert event is not None, f"session ended before a {names} event:\n{self.tail()}"
            if event.get("event") in names:
                return at, event

    def kill(self) -> int:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)
        return self.process.returncode

    def wait(self, timeout: float = 300) -> int:
        self.process.wait(timeout=timeout)
        return self.process.returncode

    def tail(self) -> str:
        return "".join(self.output)[-3000:]

    def position(self) -> int:
        """How far training got: the newest num_timesteps of this session (its start if none)."""
        step = read_step_file(self.step_file)
        return step if step is not None else resumed_step(self.working) or 0


def start_session(
    config: dict[str, Any],
    working: Path,
    input_dir: Path,
    kill_at: str | None = None,
    pause_s: float = 0,
) -> Session:
    working.mkdir(parents=True)
    step_file = working.parent / f"{working.name}.step"
    extra = {"KILLPOINT_STEP_FILE": str(step_file)}
    if kill_at:
        extra.update(KILLPOINT_AT=kill_at, KILLPOINT_PAUSE_S=str(pause_s))
    process = start_kernel(config, working, input_dir, module=KILLPOINTS, extra_env=extra)
    session = Session(process, working, step_file)
    threading.Thread(target=session._read, daemon=True).start()
    return session


class Attempts:
    """Fresh sessions, each mounting every earlier attempt's output (Kaggle mounts kernel
    sources read-only; a symlink keeps the files checkable)."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root, self.config = root, config
        self.input_dir = root / "input"
        self.input_dir.mkdir()
        self.count = 0
        self.redone: list[int] = []

    def start(self, kill_at: str | None = None, pause_s: float = 0) -> tuple[Session, int | None]:
        expected = newest_sound_step(self.input_dir)
        working = self.root / f"attempt-{self.count:03d}"
        self.count += 1
        return start_session(self.config, working, self.input_dir, kill_at, pause_s), expected

    def settle(self, session: Session, expected: int | None) -> int | None:
        """Check an ended attempt, mount it for the next one; returns the newest sound step."""
        started_at = resumed_step(session.working)
        assert started_at == expected, (
            f"{session.working.name} resumed from {started_at}, newest sound is {expected}"
        )
        steps = [started_at or 0, *checkpoint_steps(session.working)]
        for earlier, later in zip(steps, steps[1:], strict=False):
            assert later - earlier <= self.config["checkpoint_every"] + ROLLOUT, (
                f"{session.working.name}: checkpoints {earlier} -> {later}"
            )
        (self.input_dir / session.working.name).symlink_to(session.working)
        return newest_sound_step(self.input_dir)

    def settle_killed(self, session: Session, expected: int | None, returncode: int) -> int:
        """A killed attempt: the kill found it alive. Records what it trained past the
        checkpoint the next attempt resumes from (checked by `assert_redone_within_bound`)."""
        assert returncode == -signal.SIGKILL, (
            f"{session.working.name} was not alive at its kill (exit {returncode}):\n"
            f"{session.tail()}"
        )
        reached = session.position()
        newest = self.settle(session, expected) or 0
        self.redone.append((session.working.name, reached, newest))
        assert reached >= newest, f"{session.working.name}: step gauge {reached} < {newest}"
        return newest


def assert_redone_within_bound(attempts: Attempts) -> None:
    """At most one checkpoint interval plus one rollout is redone after any kill."""
    bound = attempts.config["checkpoint_every"] + ROLLOUT
    over = [
        f"{name} reached step {reached}, the next attempt resumed from {newest}: "
        f"{reached - newest} steps redone"
        for name, reached, newest in attempts.redone
        if reached - newest > bound
    ]
    assert not over, f"more than {bound} steps redone:\n" + "\n".join(over)


def random_kill(session: Session, rng: random.Random, spacing: float) -> tuple[int, float]:
    """Kill at a random moment of training, counted from the session's first training event:
    wait for that event and 0 or 1 further checkpoint, then a random fraction of one
    checkpoint interval (as timed between this session's checkpoints, else the last seen).
    Returns the exit code and the interval's duration as measured."""
    at, _ = session.next_event(TRAINING_EVENTS)
    for _ in range(rng.choice((0, 1))):
        later, _ = session.next_event(("checkpoint",))
        spacing, at = later - at, later
    time.sleep(rng.uniform(0.0, spacing))
    return session.kill(), spacing


def kill_loop(tmp_path: Path, kills: int, seed: int) -> tuple[Path, Attempts]:
    rng = random.Random(seed)
    attempts = Attempts(tmp_path, RANDOM_CONFIG)
    newest = 0
    spacing = 0.15  # seconds per checkpoint interval, until measured
    for _ in range(kills):
        session, expected = attempts.start()
        returncode, spacing = random_kill(session, rng, spacing)
        committed = attempts.settle_killed(session, expected, returncode)
        assert committed > newest, (
            f"{session.working.name}: the newest committed step stayed at {newest}"
        )
        newest = committed
    assert newest < RANDOM_CONFIG["total_timesteps"]
    session, expected = attempts.start()
    assert session.wait() == 0, session.tail()
    attempts.settle(session, expected)
    return session.working, attempts


def assert_like_one_session(final: Path, single: concurrent.futures.Future, alone: Path) -> None:
    assert single.result().returncode == 0
    assert summary_of(final).status == "complete"
    assert_same(
        training_result(newest_checkpoint(final)), training_result(newest_checkpoint(alone))
    )


def run_and_compare(tmp_path: Path, kills: int, seed: int) -> Attempts:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        single = pool.submit(run_kernel, RANDOM_CONFIG, tmp_path / "single", tmp_path / "none")
        final, attempts = kill_loop(tmp_path, kills, seed)
        assert_like_one_session(final, single, tmp_path / "single")
    return attempts


@pytest.fixture(scope="module")
def random_kills(tmp_path_factory) -> Attempts:
    return run_and_compare(tmp_path_factory.mktemp("random-kills"), kills=10, seed=1234)


@pytest.mark.slow
def test_random_sigkills_then_resume_end_exactly_like_an_uninterrupted_run(random_kills):
    # Every kill hit a live session, each advanced the newest committed step, every resume
    # chose the newest sound checkpoint, and the end is bit-identical (checked in the loop).
    assert len(random_kills.redone) == 10


@pytest.mark.slow
def test_random_sigkills_redo_at_most_one_interval_plus_one_rollout(random_kills):
    assert_redone_within_bound(random_kills)


@pytest.fixture(scope="module")
def point_kills(tmp_path_factory) -> Attempts:
    tmp_path = tmp_path_factory.mktemp("point-kills")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        single = pool.submit(run_kernel, POINT_CONFIG, tmp_path / "single", tmp_path / "none")
        attempts = Attempts(tmp_path, POINT_CONFIG)

        # 1. Killed inside the third checkpoint's commit, after a slow write (0.2 s): its
        #    manifest is written, the rename that would make it a checkpoint is not done. The
        #    second checkpoint is the one that counts.
        session, expected = attempts.start(kill_at="commit:3", pause_s=0.2)
        returncode = session.wait()
        torn = list((session.working / layout.CHECKPOINTS_DIR).glob(".tmp-*/MANIFEST.json"))
        assert len(torn) == 1, session.tail()
        torn_step = layout.CheckpointManifest.model_validate_json(torn[0].read_text())
        assert torn_step.num_timesteps == 3 * POINT_CONFIG["checkpoint_every"]
        newest = attempts.settle_killed(session, expected, returncode)
        assert newest == 2 * POINT_CONFIG["checkpoint_every"]

        # 2. Killed during finalisation: the summary is written, the artifacts zip is not.
        session, expected = attempts.start(kill_at="finalize")
        returncode = session.wait()
        assert (session.working / layout.SESSION_SUMMARY_JSON).is_file(), session.tail()
        assert not (session.working / layout.ARTIFACTS_ZIP).exists()
        newest = attempts.settle_killed(session, expected, returncode)
        assert newest == POINT_CONFIG["total_timesteps"]

        # 3. The next session has no training left: it resumes, finalises, and ends complete.
        session, expected = attempts.start()
        assert session.wait() == 0, session.tail()
        attempts.settle(session, expected)
        assert (session.working / layout.ARTIFACTS_ZIP).is_file()
        assert_like_one_session(session.working, single, tmp_path / "single")
    return attempts


@pytest.mark.slow
def test_kills_inside_a_checkpoint_commit_and_during_finalisation(point_kills):
    assert [name for name, _, _ in point_kills.redone] == ["attempt-000", "attempt-001"]
    assert point_kills.redone[1][1:] == (POINT_CONFIG["total_timesteps"],) * 2  # nothing redone


@pytest.mark.slow
def test_kill_inside_a_slow_commit_redoes_at_most_one_interval_plus_one_rollout(point_kills):
    assert_redone_within_bound(point_kills)


@pytest.mark.reliability
@pytest.mark.parametrize("seed", range(10))
def test_many_random_sigkills(tmp_path, seed):
    attempts = run_and_compare(tmp_path, kills=10, seed=seed)  # 10 seeds x 10 kills = 100 kills
    assert_redone_within_bound(attempts)
