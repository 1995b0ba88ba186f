"""Shared fixtures: a real Kaggle emulator (a subprocess on a free loopback port), and the
benchmark record that `make bench` writes to bench-results.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.emulator.testing import TEST_TIMINGS, EmulatorHandle, start_emulator
from tests.support.emulator import TEST_USERS

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


# -- benchmarks ------------------------------------------------------------------------------

BENCH_RESULTS = Path(__file__).resolve().parents[1] / "bench-results.json"
_bench_records: list[dict] = []


@pytest.fixture
def bench_record():
    """`bench_record(name, value, baseline=..., ratio=..., target="ratio >= 10", met=bool,
    unit="s")`: one measure for bench-results.json and a `BENCH` line on stdout. The test
    still asserts `met` itself, so a missed target fails `make bench`."""

    def record(
        name: str,
        value: float,
        *,
        target: str,
        met: bool,
        baseline: float | None = None,
        ratio: float | None = None,
        unit: str = "",
        **details,
    ) -> bool:
        entry = {
            "name": name,
            "value": value,
            "unit": unit,
            "baseline": baseline,
            "ratio": ratio,
            "target": target,
            "met": bool(met),
            **details,
        }
        _bench_records.append(entry)
        shown = f"BENCH {name}: {value:.6g}{unit}"
        if baseline is not None:
            shown += f" (baseline: {baseline:.6g}{unit}"
            shown += f", ratio: {ratio:.3g})" if ratio is not None else ")"
        print(f"{shown} target {target}: {'met' if met else 'MISSED'}", flush=True)
        return bool(met)

    return record


def pytest_sessionfinish(session, exitstatus):
    """Write the session's benchmark records (one run of `make bench` -> one file)."""
    if _bench_records and not os.environ.get("PYTEST_XDIST_WORKER"):
        BENCH_RESULTS.write_text(json.dumps(_bench_records, indent=2) + "\n")
