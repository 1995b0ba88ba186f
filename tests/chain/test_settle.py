"""The ledger settled against Kaggle (issue #9): the trials of a first-use review, replayed
through the CLI against the emulator in its faithful default mode.

1. Cancelled chains' segments end on Kaggle; the next step (of any chain), `status` and `runs`
   record that, the GPU slot gate believes Kaggle, and the last segment is still pulled.
2. A ledger restored from before a push: the next step finds the slug in the account's
   listing and adopts it, never pushing it a second time.
3. `delete` refuses a chain's resume source; forced (or deleted on kaggle.com), the chain
   stops with an ALERT naming the choices, never restarting from scratch.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from orchestrator.kaggle import KernelNotVisible
from tests.support.project import ChainProject

GPU = "NvidiaTeslaT4"


def _wait_until_ended(project: ChainProject, *slugs: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with project.client(fast_retries=True) as client:
        for slug in slugs:
            while True:
                try:
                    if client.status("alice", slug).is_terminal:
                        break
                except KernelNotVisible:  # the read-after-write lag
                    pass
                assert time.monotonic() < deadline, f"{slug} did not end in {timeout} s"
                time.sleep(0.2)


def _wait_until_listed(project: ChainProject, slug: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with project.client(fast_retries=True) as client:
        while client.find_own_kernel("alice", slug) is None:
            assert time.monotonic() < deadline, f"{slug} never listed"
            time.sleep(0.1)


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _records(project: ChainProject) -> dict[str, dict]:
    return {r["run"]: r for r in json.loads(_ok(project.cli("runs", "--json")))}


# -- 1. settlement ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("left", ["cancelled", "unstepped"])
def test_ended_sessions_free_their_gpu_slots(emulator, chain_project, left) -> None:
    """Two GPU chains mid-segment, cancelled (the review's trial) or simply not stepped since,
    both kernels ended, then `chain step other`: it pushes, since Kaggle's 2 GPU slots are
    free, and a cancelled chain's last segment is pulled and kept."""
    project = chain_project(emulator, accelerator=GPU, total=600)
    for name in ("first", "second", "other"):
        _ok(project.cli("chain", "start", name, "--segments", "600"))
    for name in ("first", "second"):
        assert "pushed segment 1" in _ok(project.cli("chain", "step", name))
        if left == "cancelled":
            cancelled = _ok(project.cli("chain", "cancel", name))
            assert "the next `orchestrate chain step`" in cancelled, cancelled
    _wait_until_ended(project, "first-s1", "second-s1")

    if left == "cancelled":  # `runs` settles the records (statuses only: it pulls nothing)
        records = _records(project)
        for slug in ("first-s1", "second-s1"):
            state = (records[slug]["state"], records[slug]["kernel_status"])
            assert state == ("terminal", "COMPLETE"), records[slug]

    step = project.cli("chain", "step", "other", "--json")
    [result] = json.loads(_ok(step))
    assert result["outcome"] == "advanced", result
    assert result["pushed"] == ["other-s1"]
    assert "GPU slots busy" not in step.stdout + step.stderr
    assert emulator.call_counts()["SaveKernel.accepted"] == 3
    if left == "unstepped":  # their own chains pull them, at their next step
        assert {project.ledger.get(s).state for s in ("first-s1", "second-s1")} == {"terminal"}
        return
    # The cancelled chains' last segments were pulled by that step and kept, checkpoint and all.
    for name in ("first", "second"):
        [segment] = project.ledger.runs(name)
        assert segment.state == "pulled" and segment.checkpoint.step == 600, segment
        assert (project.dir / "runs" / segment.slug / "artifacts.zip").is_file()
        notes = [n.message for n in project.ledger.get_chain(name).notes]
        assert any("kept" in n and segment.slug in n for n in notes), notes


@pytest.mark.slow  # settle_runs is checked fast below; make test runs this CLI trial
def test_status_settles_every_unsettled_run(emulator, chain_project) -> None:
    project = chain_project(emulator, slug="plain-one", total=300)
    _ok(project.cli("launch", "--skip-preflight"))
    _ok(project.cli("launch", "--skip-preflight", "--slug", "plain-two"))
    _wait_until_ended(project, "plain-one", "plain-two")
    before = {r.slug: r.state for r in project.ledger.runs()}
    assert before == {"plain-one": "pushed", "plain-two": "pushed"}

    report = json.loads(_ok(project.cli("status", "plain-one", "--json")))
    assert report["kernel_status"] == "COMPLETE"
    assert report["ledger"]["state"] == "terminal"
    # The other run was settled too: nothing in the ledger claims a session still runs.
    assert project.ledger.get("plain-two").state == "terminal"


def test_settlement_resolves_lost_pushes_and_gone_kernels(emulator, chain_project) -> None:
    """The records nobody steps, settled from the account's listing and Kaggle's statuses:
    an intent that never reached Kaggle, one that did, and a kernel deleted on kaggle.com."""
    from datetime import datetime, timedelta, timezone

    from orchestrator.kaggle import PushSpec
    from orchestrator.ledger import RunRecord
    from orchestrator.settle import GONE, settle_runs

    project = chain_project(emulator)
    ledger = project.ledger
    long_ago = (datetime.now(timezone.utc) - timedelta(minutes=10)).isoformat()
    with project.client(fast_retries=True) as client:
        client.push(PushSpec(id="alice/reached", title="Reached", text="print('hi')\n"))
        _wait_until_listed(project, "reached")
        _wait_until_ended(project, "reached")
        for slug, fields in [
            ("lost", {"created_at": long_ago}),
            ("reached", {"created_at": long_ago, "machine_shape": GPU}),
            ("deleted", {"created_at": long_ago, "pushed_at": long_ago, "machine_shape": GPU}),
            ("fresh", {"machine_shape": GPU}),
        ]:
            ledger.record_intent(RunRecord(slug=slug, owner="alice", **fields))
        ledger.update("deleted", state="pushed")
        settlement = settle_runs(ledger, client)
    states = {r.slug: (r.state, r.kernel_status) for r in ledger.runs()}
    assert states == {
        "lost": ("failed_push", None),
        "reached": ("terminal", "COMPLETE"),
        "deleted": ("terminal", GONE),
        "fresh": ("intent", None),  # may still be listed: Kaggle lists a new kernel late
    }
    assert settlement.busy_gpu() == ["fresh"]
    assert settlement.ended == ["reached"] and settlement.gone == ["deleted"]


# -- 2. a lost ledger update -----------------------------------------------------------------


@pytest.mark.slow  # adoption is checked fast in test_kill; make test runs this
def test_a_ledger_restored_from_before_a_push_adopts_the_segment(emulator, chain_project) -> None:
    """A CI job pushed ghsim-s1 and died before committing the ledger back: the next job's
    ledger has no record of that push at all. Its step must not push ghsim-s1 again."""
    project = chain_project(emulator, total=1000)
    _ok(project.cli("chain", "start", "ghsim", "--segments", "500,500"))
    ledger_file = project.ledger.path
    saved = ledger_file.with_name("ledger.before-push.json")
    shutil.copy(ledger_file, saved)
    [pushed] = json.loads(_ok(project.cli("chain", "step", "ghsim", "--json")))
    assert pushed["pushed"] == ["ghsim-s1"]
    shutil.copy(saved, ledger_file)  # the lost update
    assert project.ledger.get("ghsim-s1") is None
    _wait_until_listed(project, "ghsim-s1")  # the next scheduled job comes minutes later

    [again] = json.loads(_ok(project.cli("chain", "step", "ghsim", "--json")))
    assert again["pushed"] == [], again
    assert "adopted" in again["message"] and "alice/ghsim-s1" in again["message"], again
    assert emulator.call_counts()["SaveKernel.accepted"] == 1

    # The adopted session is followed like any other: the chain goes on from it.
    _wait_until_ended(project, "ghsim-s1")
    [next_step] = json.loads(_ok(project.cli("chain", "step", "ghsim", "--json")))
    assert next_step["pushed"] == ["ghsim-s2"], next_step
    assert "resuming alice/ghsim-s1" in next_step["message"], next_step
    assert emulator.call_counts()["SaveKernel.accepted"] == 2
    with project.client() as client:
        assert client.get_kernel("alice", "ghsim-s1").current_version_number == 1


# -- 3. delete and a parent that is gone ------------------------------------------------------


def _first_segment_pulled_by_hand(project: ChainProject) -> None:
    """Segment 1 ran and the user pulled it with `pull-artifacts` (the chain has not stepped
    since, so segment 2 is not pushed yet)."""
    _ok(project.cli("chain", "start", "deltest", "--segments", "500,500"))
    _ok(project.cli("chain", "step", "deltest"))
    _wait_until_ended(project, "deltest-s1")
    _ok(project.cli("pull-artifacts", "deltest-s1"))


@pytest.mark.slow  # the fast tier stays under 4 minutes; make test runs it
def test_delete_refuses_a_chains_resume_source(emulator, chain_project) -> None:
    project = chain_project(emulator, total=1000)
    _first_segment_pulled_by_hand(project)

    refused = project.cli("delete", "deltest-s1")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert "chain deltest" in line and "--force" in line, line
    _wait_until_listed(project, "deltest-s1")  # still on Kaggle

    # The hand pull did not fool the chain: segment 2 resumes from segment 1, not segment 1
    # again from scratch.
    [step] = json.loads(_ok(project.cli("chain", "step", "deltest", "--json")))
    assert step["pushed"] == ["deltest-s2"], step
    first = project.ledger.get("deltest-s1")
    assert (
        f"resuming alice/deltest-s1 step 500 (manifest {first.checkpoint.manifest_sha256[:12]})"
        in (step["message"])
    )
    assert emulator.call_counts()["SaveKernel.accepted"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("how", ["delete --force", "on kaggle.com"])
def test_a_chain_whose_parent_is_gone_stops_with_an_alert(emulator, chain_project, how) -> None:
    project = chain_project(emulator, total=1000)
    _first_segment_pulled_by_hand(project)
    if how == "delete --force":
        forced = _ok(project.cli("delete", "deltest-s1", "--force"))
        assert "chain deltest" in forced, forced
        alerts = [
            n.message for n in project.ledger.get_chain("deltest").notes if n.level == "alert"
        ]
        assert any("deltest-s1" in a and "deleted" in a for a in alerts), alerts
    else:
        with project.client() as client:
            client.delete_kernel("alice", "deltest-s1")

    step = project.cli("chain", "step", "deltest", "--json")
    assert step.returncode == 1, step.stdout + step.stderr
    [result] = json.loads(step.stdout)
    assert result["outcome"] == "failed"
    [alert] = result["alerts"]
    assert "orchestrate chain resume deltest --from runs/deltest-s1/checkpoints/" in alert
    assert "orchestrate chain cancel deltest" in alert
    assert "ALERT chain deltest" in step.stderr
    # Nothing was pushed: no segment 2 without its parent, no segment 1 again from scratch.
    assert [r.slug for r in project.ledger.runs("deltest")] == ["deltest-s1"]
    assert emulator.call_counts()["SaveKernel.accepted"] == 1
    # The local checkpoint named is there and verified.
    named = alert.split("--from ")[1].split()[0].rstrip("`")
    assert (project.dir / named / "MANIFEST.json").is_file()

    # The first choice works as named: the chain goes on from that checkpoint, uploaded.
    _ok(project.cli("chain", "resume", "deltest", "--from", named))
    deadline = time.monotonic() + 60
    while True:
        [step] = json.loads(_ok(project.cli("chain", "step", "deltest", "--json")))
        if step["pushed"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert step["pushed"], step
    assert "resuming" in step["message"] and "step 500" in step["message"], step
