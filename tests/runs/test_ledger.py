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

from kernel_template import layout
from kernel_template.layout import CheckpointRef
from orchestrator.chain import machine
from orchestrator.chain.states import ChainState
from orchestrator.errors import UserError
from orchestrator.ledger import ChainRecord, Ledger, LedgerBusy, RunRecord


def _record(run: str, **fields) -> RunRecord:
    return RunRecord(slug=run, owner="alice", **fields)


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
    assert [r.slug for r in ledger.runs("c")] == ["c-s1", "c-s1-r1", "c-s2"]
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
    updated = ledger.update_chain("c", state="cancelled", consecutive_unknowns=2)
    assert updated.state is ChainState.CANCELLED and updated.state.finished
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
        ledger.record_intent(RunRecord(slug=f"{prefix}-{i}", owner="alice"))
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
    names = {r.slug for r in ledger.runs()}
    assert {f"a-{i}" for i in range(40)} <= names
    assert {f"b-{i}" for i in range(40)} <= names
    assert ledger.get("counter").attempt == 80


_KILL_LOOP = """
import sys
from orchestrator.ledger import Ledger, RunRecord
ledger = Ledger(sys.argv[1])
i = 0
while True:
    ledger.record_intent(RunRecord(slug=f"r-{i}", owner="alice", failure_message="x" * 20000))
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


LEGACY_LEDGER = Path(__file__).parent / "data" / "ledger_before_checkpoint_refs.json"


def test_a_ledger_written_before_checkpoint_refs_still_loads(tmp_path: Path) -> None:
    """Written by the code before typed summaries: `run` for the slug, `checkpoint_hash` and
    `checkpoint_step`, a hand pull's summary cut to a few figures (and no step), a chain in
    the never-entered "waiting" state, a start point with a bare hash and step."""
    # The hand-pulled run's checkpoint is on disk: its step is read from there.
    manifest = tmp_path / "runs" / "by-hand" / layout.CHECKPOINTS_DIR / "000000002000"
    manifest.mkdir(parents=True)
    written = layout.CheckpointManifest(
        config_hash="c" * 64,
        num_timesteps=2000,
        episode_count=12,
        created_at="2026-11-01T00:01:00Z",
        algo="DQN",
        files={},
    )
    (manifest / layout.MANIFEST_NAME).write_text(written.model_dump_json())
    digest = layout.manifest_hash(manifest / layout.MANIFEST_NAME)
    document = json.loads(LEGACY_LEDGER.read_text())
    document["runs"]["by-hand"]["checkpoint_hash"] = digest
    (tmp_path / ".orchestrate").mkdir()
    (tmp_path / ".orchestrate" / "ledger.json").write_text(json.dumps(document))

    ledger = Ledger(tmp_path)
    chained = ledger.get("demo-s2")
    assert chained.slug == "demo-s2" and chained.ref == "alice/demo-s2"
    assert chained.checkpoint == CheckpointRef(step=2000, manifest_sha256="b" * 64)
    assert chained.summary.versions["stable_baselines3"] == "2.9.2"
    assert chained.summary.resumed_from.step == 1000
    assert chained.summary.model_extra["episodes"] == 12  # the kernel's extra fields survive

    by_hand = ledger.get("by-hand")
    assert by_hand.checkpoint == CheckpointRef(step=2000, manifest_sha256=digest)
    assert (by_hand.summary.status, by_hand.summary.timesteps_end) == ("complete", 2000)
    assert by_hand.summary.versions == {} and by_hand.summary.resumed_from is None  # never kept

    chain = ledger.get_chain("demo")
    assert chain.state is ChainState.ACTIVE  # "waiting" was declared, never a real state
    assert chain.start_from.checkpoint == CheckpointRef(step=500, manifest_sha256="d" * 64)
    assert machine.start_point(ledger.runs("demo"), start=chain.start_from).slug == "demo-s2"

    # Written back in today's words, and read again unchanged.
    ledger.update("by-hand", failure_message=None)
    written = json.loads((tmp_path / ".orchestrate" / "ledger.json").read_text())
    assert (
        "run" not in written["runs"]["demo-s2"]
        and "checkpoint_hash" not in written["runs"]["by-hand"]
    )
    assert written["chains"]["demo"]["state"] == "active"
    assert Ledger(tmp_path).get("by-hand") == ledger.get("by-hand")
