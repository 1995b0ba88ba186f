"""The session clock: the emulator's variable, else the container's start on Kaggle, else ours."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from kernel_template.runtime import (
    KAGGLE_RUN_TYPE_ENV,
    SESSION_START_ENV,
    RuntimeEnvironment,
    embedded_packages,
    proc_start_time,
    session_start_time,
)

TICKS = os.sysconf("SC_CLK_TCK")


def fake_proc(tmp_path: Path, *, boot: int, pid1_s: float | None, self_s: float) -> Path:
    """A /proc with btime `boot` and PID 1 / self started that many seconds after boot."""
    proc = tmp_path / "proc"
    proc.mkdir(parents=True)
    (proc / "stat").write_text(f"cpu  1 2 3\nbtime {boot}\nprocesses 9\n")

    def stat_line(pid: str, seconds: float) -> str:
        # 52 fields; the name has a space and a ')' to prove the parsing; field 22 = starttime.
        fields = ["S"] + ["0"] * 18 + [str(int(seconds * TICKS))] + ["0"] * 30
        return f"{pid} (odd) name) " + " ".join(fields) + "\n"

    for pid, seconds in (("1", pid1_s), ("self", self_s)):
        if seconds is not None:
            (proc / pid).mkdir()
            (proc / pid / "stat").write_text(stat_line(pid, seconds))
    return proc


def test_proc_start_time_reads_field_22_after_an_odd_name(tmp_path):
    boot = int(time.time()) - 1000
    proc = fake_proc(tmp_path, boot=boot, pid1_s=10, self_s=400)
    assert proc_start_time(1, proc) == pytest.approx(boot + 10, abs=0.02)
    assert proc_start_time("self", proc) == pytest.approx(boot + 400, abs=0.02)


def test_the_emulator_variable_wins_everywhere(tmp_path):
    proc = fake_proc(tmp_path, boot=int(time.time()) - 1000, pid1_s=10, self_s=400)
    start = time.time() - 123.5
    env = {SESSION_START_ENV: repr(start), KAGGLE_RUN_TYPE_ENV: "Batch"}
    assert session_start_time(environ=env, proc=proc) == start


@pytest.mark.parametrize("bad", ["soon", "nan", "-5", "an hour ahead"])
def test_a_bad_variable_is_ignored_with_a_warning(tmp_path, bad):
    if bad == "an hour ahead":  # computed here: test ids must not change between xdist workers
        bad = str(time.time() + 3600)
    boot = int(time.time()) - 1000
    proc = fake_proc(tmp_path, boot=boot, pid1_s=10, self_s=400)
    warnings: list[str] = []
    start = session_start_time(environ={SESSION_START_ENV: bad}, proc=proc, warn=warnings.append)
    assert start == pytest.approx(boot + 400, abs=0.02)  # a local run: our own start
    assert len(warnings) == 1 and SESSION_START_ENV in warnings[0]


def test_on_kaggle_the_container_start_counts(tmp_path):
    boot = int(time.time()) - 1000
    proc = fake_proc(tmp_path, boot=boot, pid1_s=10, self_s=400)
    env = {KAGGLE_RUN_TYPE_ENV: "Batch"}
    # Boot and queue seconds count: the clock started with PID 1, 390 s before us.
    assert session_start_time(environ=env, proc=proc) == pytest.approx(boot + 10, abs=0.02)
    # Our own start when it is the earlier one.
    proc2 = fake_proc(tmp_path / "b", boot=boot, pid1_s=500, self_s=400)
    assert session_start_time(environ=env, proc=proc2) == pytest.approx(boot + 400, abs=0.02)


def test_on_kaggle_an_unreadable_pid1_falls_back_to_our_start(tmp_path):
    boot = int(time.time()) - 1000
    proc = fake_proc(tmp_path, boot=boot, pid1_s=None, self_s=400)
    warnings: list[str] = []
    start = session_start_time(
        environ={KAGGLE_RUN_TYPE_ENV: "Batch"}, proc=proc, warn=warnings.append
    )
    assert start == pytest.approx(boot + 400, abs=0.02)
    assert warnings and "/1/stat" in warnings[0]


def test_on_kaggle_a_pid1_older_than_the_limit_is_not_the_container(tmp_path):
    boot = int(time.time()) - 100_000
    proc = fake_proc(tmp_path, boot=boot, pid1_s=1, self_s=99_990)
    warnings: list[str] = []
    start = session_start_time(
        environ={KAGGLE_RUN_TYPE_ENV: "Batch"},
        proc=proc,
        session_limit_s=43_200,
        warn=warnings.append,
    )
    assert start == pytest.approx(boot + 99_990, abs=0.02) and warnings


def test_a_local_run_starts_with_this_process(tmp_path):
    boot = int(time.time()) - 1000
    proc = fake_proc(tmp_path, boot=boot, pid1_s=10, self_s=400)
    assert session_start_time(environ={}, proc=proc) == pytest.approx(boot + 400, abs=0.02)
    # No /proc at all: now.
    before = time.time()
    assert session_start_time(environ={}, proc=tmp_path / "none") >= before


def test_discover_uses_the_seam(tmp_path):
    start = time.time() - 50
    runtime = RuntimeEnvironment.discover(
        working_dir=tmp_path / "w",
        input_dir=tmp_path / "i",
        session_limit_s=600,
        environ={SESSION_START_ENV: str(start)},
    )
    assert runtime.session_start == start
    assert runtime.deadline == start + 600


def test_embedded_packages_come_from_the_script_variable():
    env = {"ORCHESTRATE_EMBEDDED_PACKAGES": '{"stable_baselines3": "2.9.2"}'}
    assert embedded_packages(env) == {"stable_baselines3": "2.9.2"}
    assert embedded_packages({}) == {}
    assert embedded_packages({"ORCHESTRATE_EMBEDDED_PACKAGES": "not json"}) == {}
