"""The ledger: atomic, locked, re-entrant, survives SIGKILL, holds no credentials."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.ledger import ChainRecord, Ledger, LedgerBusy, RunRecord


def _record(run: str, **fields) -> RunRecord:
    return RunRecord(run=run, owner="alice", **fields)


def test_intent_update_get_roundtrip(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.record_intent(_record("demo-s1", chain="demo", segment=1, config_hash="ab"))
    assert ledger.get("demo-s1").state == "intent"
    updated = ledger.update("demo-s1", state="pushed", version=3, url="http://x")
    assert (updated.state, updated.version) == ("pushed", 3)
    again = Ledger(tmp_path).get("demo-s1")
    assert again == updated
    assert again.ref == "alice/demo-s1"
    assert ledger.get("missing") is None
    assert (tmp_path / ".orchestrate" / "ledger.json").is_file()


def test_slug_never_reused(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.record_intent(_record("x-s1"))
    with pytest.raises(UserError, match="already in the ledger"):
        ledger.record_intent(_record("x-s1"))


def test_update_validates_fields(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.record_intent(_record("x-s1"))
    with pytest.raises(ValueError):
        ledger.update("x-s1", state="exploded")
    assert ledger.get("x-s1").state == "intent"
    with pytest.raises(KeyError):
        ledger.update("nope", state="pushed")


def test_runs_filtered_and_ordered_by_segment(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.record_intent(_record("c-s2", chain="c", segment=2))
    ledger.record_intent(_record("other", chain=None))
    ledger.record_intent(_record("c-s1-r1", chain="c", segment=1, attempt=1))
    ledger.record_intent(_record("c-s1", chain="c", segment=1))
    assert [r.run for r in ledger.runs("c")] == ["c-s1", "c-s1-r1", "c-s2"]
    assert len(ledger.runs()) == 4


def test_chain_records(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    chain = ChainRecord(
        name="c", run_config={"algo": "DQN"}, config_hash="h", total_timesteps=10, segments=[5, 5]
    )
    ledger.create_chain(chain)
    with pytest.raises(UserError, match="already exists"):
        ledger.create_chain(chain)
    ledger.note("c", "quota spent", "alert")
    updated = ledger.update_chain("c", state="waiting", consecutive_unknowns=2)
    assert updated.state == "waiting"
    assert updated.notes[-1].level == "alert"
    assert [c.name for c in ledger.chains()] == ["c"]


def test_lock_is_reentrant_in_one_process(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    with ledger.locked(timeout=1), Ledger(tmp_path).locked(timeout=1):
        ledger.record_intent(_record("a"))
    assert ledger.get("a") is not None


def _hold_lock(project: str, ready, release) -> None:
    with Ledger(project).locked():
        ready.set()
        release.wait(30)


def test_second_process_is_told_the_ledger_is_busy(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with (
            pytest.raises(LedgerBusy, match="another orchestrate process"),
            Ledger(tmp_path).locked(timeout=0.2),
        ):
            pass
    finally:
        release.set()
        holder.join(30)
    with Ledger(tmp_path).locked(timeout=5):
        pass


def _writer(project: str, prefix: str, count: int) -> None:
    ledger = Ledger(project)
    for i in range(count):
        ledger.record_intent(RunRecord(run=f"{prefix}-{i}", owner="alice"))
        with ledger.locked():  # read-decide-write: bump a shared counter
            counter = ledger.get("counter")
            ledger.update("counter", attempt=counter.attempt + 1)


def test_concurrent_writers_from_two_processes_lose_nothing(tmp_path: Path) -> None:
    Ledger(tmp_path).record_intent(_record("counter"))
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_writer, args=(str(tmp_path), p, 40)) for p in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    ledger = Ledger(tmp_path)
    names = {r.run for r in ledger.runs()}
    assert {f"a-{i}" for i in range(40)} <= names
    assert {f"b-{i}" for i in range(40)} <= names
    assert ledger.get("counter").attempt == 80


_KILL_LOOP = """
import sys
from orchestrator.ledger import Ledger, RunRecord
ledger = Ledger(sys.argv[1])
i = 0
while True:
    ledger.record_intent(RunRecord(run=f"r-{i}", owner="alice", summary={"pad": "x" * 20000}))
    i += 1
"""


def test_sigkill_mid_write_leaves_a_readable_ledger_and_no_stuck_lock(tmp_path: Path) -> None:
    for round_ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", _KILL_LOOP, str(tmp_path)])
        deadline = time.monotonic() + 30
        ledger_file = tmp_path / ".orchestrate" / "ledger.json"
        while not ledger_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05 + 0.03 * round_)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        document = json.loads(ledger_file.read_text())  # never half-written
        assert document["runs"]
        with Ledger(tmp_path).locked(timeout=2):  # the dead holder's lock is gone
            pass


def test_unreadable_ledger_is_a_clear_user_error(tmp_path: Path) -> None:
    path = tmp_path / ".orchestrate" / "ledger.json"
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(UserError, match="unreadable.*move it aside"):
        Ledger(tmp_path).runs()
