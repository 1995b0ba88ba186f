"""Shared fixtures: a real Kaggle emulator (a subprocess on a free loopback port)."""

from __future__ import annotations

import pytest

from orchestrator.emulator.testing import TEST_TIMINGS, EmulatorHandle, start_emulator

TEST_USERS = {"alice": "alice-test-key-1", "bob": "bob-test-key-2"}
FAST_QUEUE_DELAY = TEST_TIMINGS["queue_delay"]


@pytest.fixture
def emulator(tmp_path) -> EmulatorHandle:
    """Users alice and bob, test API on, TEST_TIMINGS (every harsh behaviour on); stopped
    (kernels killed) after."""
    with start_emulator(tmp_path / "emulator", TEST_USERS) as handle:
        yield handle


@pytest.fixture
def emulator_factory(tmp_path):
    """`emulator_factory(max_session=2, gpu_slots=1, ...)` -> a started EmulatorHandle.

    Options: those of start_emulator (TEST_TIMINGS by default), users (dict), root (Path).
    Every emulator made is stopped after the test.
    """
    handles: list[EmulatorHandle] = []

    def make(*, users: dict[str, str] | None = None, root=None, **options) -> EmulatorHandle:
        handle = EmulatorHandle(
            root or tmp_path / f"emulator-{len(handles)}", users or TEST_USERS, options
        )
        handles.append(handle)
        return handle.start()

    yield make
    for handle in handles:
        handle.stop()
