"""Chains against an emulator as harsh as kaggle.com: refused pushes, full CPU slots, a
retired pinned image, a parent whose output never arrives, denials after a push, and a
session clock that started before the script did."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from kernel_template import layout
from orchestrator.chain.scheduler import run_chains
from orchestrator.chain.start import start_chain
from orchestrator.chain.step import ChainStepper
from orchestrator.kaggle import KernelNotVisible, PushSpec
from orchestrator.launch import launch
from tests.support.project import ChainProject

UNKNOWN_IMAGE = "gcr.io/kaggle-images/python@sha256:" + "0" * 64
SLEEPER = "import time\nprint('holding a slot', flush=True)\ntime.sleep(120)\n"


def _run(project: ChainProject, name: str = "tiny-chain", **options):
    with project.client(fast_retries=True) as client:
        stepper = ChainStepper(project.settings, client, project.ledger)
        return run_chains(stepper, [name], poll_interval=0.3, follow=False, **options)[name]


def _append(project: ChainProject, text: str) -> None:
    path = project.dir / "orchestrate.toml"
    path.write_text(path.read_text() + text)


def test_pushes_refused_every_time_end_the_chain_after_max_retries(emulator, chain_project):
    project = chain_project(emulator, total=500)
    start_chain(project.settings, project.ledger, "tiny-chain", owner="alice", segments=[500])
    emulator.set_faults("SaveKernel=400*50")
    result = _run(project, max_wall_s=120)
    assert result.outcome == "failed", result.message
    assert "Kaggle refused the push" in result.message
    runs = project.ledger.runs("tiny-chain")
    chain = project.ledger.get_chain("tiny-chain")
    # max_retries refusals plus the first: never a slug burnt without bound.
    assert [r.slug for r in runs] == ["tiny-chain-s1", "tiny-chain-s1-r1", "tiny-chain-s1-r2"]
    assert len(runs) == chain.max_retries + 1
    assert all(r.state == "failed_push" and r.refusal == "rejected" for r in runs)
    assert emulator.call_counts()["SaveKernel"] == chain.max_retries + 1


@pytest.mark.slow
def test_full_cpu_slots_mean_wait_and_the_slug_is_not_burnt(emulator_factory, chain_project):
    emulator = emulator_factory(cpu_slots=1)
    project = chain_project(emulator, total=500)
    start_chain(project.settings, project.ledger, "tiny-chain", owner="alice", segments=[500])
    with project.client(fast_retries=True) as client:
        client.push(PushSpec(id="alice/slot-holder", title="Slot Holder", text=SLEEPER))
        stepper = ChainStepper(project.settings, client, project.ledger)
        waited = stepper.step("tiny-chain")
        assert waited.outcome == "waiting", waited.message
        assert "CPU slots busy" in waited.message
        assert "Maximum batch CPU session count of 1 reached." in waited.message
        record = project.ledger.get("tiny-chain-s1")
        assert (record.state, record.refusal) == ("failed_push", "capacity")
        emulator.kill_kernel("alice", "slot-holder")
        result = run_chains(stepper, ["tiny-chain"], poll_interval=0.3, follow=False)["tiny-chain"]
    assert result.outcome == "done", result.message
    # The refused slug was pushed again once the slot was free: no -r1.
    assert [r.slug for r in project.ledger.runs("tiny-chain")] == ["tiny-chain-s1"]


@pytest.mark.slow
def test_a_refused_pinned_image_is_retried_once_without_the_pin(emulator, chain_project):
    project = chain_project(emulator, total=500)
    text = (project.dir / "orchestrate.toml").read_text()
    (project.dir / "orchestrate.toml").write_text(
        text.replace("[kernel]\n", f'[kernel]\ndocker_image = "{UNKNOWN_IMAGE}"\n', 1)
    )
    start_chain(project.settings, project.ledger, "tiny-chain", owner="alice", segments=[500])
    result = _run(project, max_wall_s=240)
    assert result.outcome == "done", result.message
    chain = project.ledger.get_chain("tiny-chain")
    alerts = [n.message for n in chain.notes if n.level == "alert"]
    assert any("refused the pinned image" in a and UNKNOWN_IMAGE in a for a in alerts), alerts
    assert chain.image_unpinned
    runs = project.ledger.runs("tiny-chain")
    assert [(r.slug, r.state, r.refusal) for r in runs][0] == (
        "tiny-chain-s1",
        "failed_push",
        "image",
    )
    assert runs[-1].state == "pulled" and runs[-1].docker_image is None
    assert emulator.call_counts()["SaveKernel.accepted"] == 1


@pytest.mark.slow
def test_a_segment_whose_parent_never_arrives_never_trains_from_scratch(emulator, chain_project):
    """The parent's kernel is gone before segment 2 starts, so nothing is mounted: the segment
    stops at once with an error summary. Before pushing it again the chain finds the parent
    missing from the account's listing and stops with an ALERT naming the choices, never
    having trained segment 2 from scratch."""
    project = chain_project(emulator, total=1000)
    _append(project, "\n[chain]\nmax_retries = 1\nparent_retry_s = 0.5\n")
    text = (project.dir / "orchestrate.toml").read_text()
    (project.dir / "orchestrate.toml").write_text(
        text.replace("[run]\n", "[run]\nparent_wait_s = 2\n", 1)
    )
    start_chain(project.settings, project.ledger, "tiny-chain", owner="alice", segments=[500, 500])
    with project.client(fast_retries=True) as client:

        def launch_once_the_parent_is_gone(*args, **kwargs):
            for source in kwargs.get("kernel_sources") or ():
                owner, _, slug = source.partition("/")
                with contextlib.suppress(KernelNotVisible):  # gone already
                    client.delete_kernel(owner, slug)  # its output can no longer be attached
            return launch(*args, **kwargs)

        stepper = ChainStepper(
            project.settings, client, project.ledger, launch=launch_once_the_parent_is_gone
        )
        result = run_chains(stepper, ["tiny-chain"], poll_interval=0.3, follow=False)["tiny-chain"]
    assert result.outcome == "failed", result.message
    assert "is gone from Kaggle" in result.message and "chain cancel tiny-chain" in result.message
    second = [r for r in project.ledger.runs("tiny-chain") if r.segment == 2]
    assert [r.slug for r in second] == ["tiny-chain-s2"]
    for run in second:
        summary = run.summary
        assert summary.status == "error" and summary.reason == layout.PARENT_MISSING_REASON
        assert summary.timesteps_end == summary.timesteps_start == 0
        assert summary.input_seen  # it said what it saw
    waits = [n.message for n in project.ledger.get_chain("tiny-chain").notes]
    assert any("parent checkpoint missing" in m for m in waits)


@pytest.mark.slow
def test_an_offline_two_segment_chain_completes_through_the_denials(
    emulator_factory, chain_project
):
    """Internet off, no stable-baselines3 in the image, reads denied for 4 s after each push:
    the chain polls through the denials and both segments train on the SB3 they carry."""
    emulator = emulator_factory(read_lag="4:4")
    project = chain_project(emulator, total=1000)
    assert project.settings.kernel.enable_internet is False
    start_chain(project.settings, project.ledger, "tiny-chain", owner="alice", segments=[500, 500])
    with project.client(fast_retries=True) as client:
        stepper = ChainStepper(project.settings, client, project.ledger)
        assert stepper.step("tiny-chain").pushed == ["tiny-chain-s1"]
        polled = stepper.step("tiny-chain")
        assert polled.outcome == "running", polled.message
        assert "not visible on Kaggle yet" in polled.message
        assert project.ledger.get_chain("tiny-chain").consecutive_unknowns == 0
        result = run_chains(stepper, ["tiny-chain"], poll_interval=0.3, follow=False)["tiny-chain"]
    assert result.outcome == "done", result.message
    first, second = project.ledger.runs("tiny-chain")
    assert emulator.call_counts()["SaveKernel.accepted"] == 2
    # A segment that ends before the total stops as budget_stop (its segment's budget).
    assert (first.summary.status, second.summary.status) == ("budget_stop", "complete")
    for run in (first, second):
        assert (
            run.summary.embedded["stable_baselines3"] == run.summary.versions["stable_baselines3"]
        )
    assert second.summary.resumed_from.manifest_sha256 == first.checkpoint.manifest_sha256
    assert "/notebooks/alice/tiny-chain-s1/" in second.summary.resumed_from.path


# -- the deadline in a SIGKILL world ---------------------------------------------------------

SLOW_ENV = '''
"""The traffic env, a few milliseconds slower per step: a session that cannot finish."""
import time

from kernel_template.envs.traffic_signal import TrafficSignalEnv


class SlowTraffic(TrafficSignalEnv):
    def step(self, action):
        time.sleep(0.004)
        return super().step(action)
'''


def _budget_project(emulator, chain_project, name: str, limit_s: float) -> ChainProject:
    project = chain_project(
        emulator, name=name, slug=f"{name}-run", total=200_000, session_limit_s=limit_s
    )
    (project.dir / "slowenv.py").write_text(SLOW_ENV)
    text = (project.dir / "orchestrate.toml").read_text()
    text = text.replace('env = "traffic-signal"', 'env = "slowenv:SlowTraffic"')
    text = text.replace("[kernel]\n", '[kernel]\nuser_modules = ["slowenv"]\n', 1)
    text = text.replace("min_margin_s = 1\n", "")  # the default margin, sized for a SIGKILL
    (project.dir / "orchestrate.toml").write_text(text)
    return project


def _budget_stop_runs(
    emulator_factory, chain_project, tmp_path: Path, count: int, batch: int = 0
) -> None:
    """`count` sessions at once, each far too long for its limit, on an emulator that kills
    with no grace and starts each script seconds after its session clock: every one must
    stop itself in time and end COMPLETE with a verified artifacts.zip."""
    from orchestrator.artifacts import pull_artifacts

    limit = 40.0
    emulator = emulator_factory(max_session=limit, boot_time=6, cpu_slots=max(count, 5))
    projects = [
        _budget_project(emulator, chain_project, f"budget-{batch}-{i}", limit) for i in range(count)
    ]
    with projects[0].client(fast_retries=True) as client:
        records = [
            launch(p.settings, p.settings.run, client=client, ledger=p.ledger, preflight=False)
            for p in projects
        ]
        deadline = time.monotonic() + limit + 120
        pulled = []
        for record in records:
            while True:
                try:
                    status = client.status("alice", record.slug)
                    if status.is_terminal:
                        break
                except Exception:  # the read-after-write lag
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.5)
            assert status.status == "COMPLETE", (record.slug, status)
            pulled.append(pull_artifacts(client, "alice", record.slug, tmp_path / record.slug))
    for result in pulled:
        assert result.verified, result.problems
        assert result.summary.status == "budget_stop", result.summary.reason
        assert 0 < result.summary.timesteps_end < 200_000
    kills = [
        v
        for p, r in zip(projects, records, strict=True)
        for v in emulator.kernel_versions("alice", r.slug)
        if v["status"] != "COMPLETE"
    ]
    assert kills == []


@pytest.mark.slow
def test_budget_stop_beats_the_sigkill_with_a_boot_offset(
    emulator_factory, chain_project, tmp_path
):
    _budget_stop_runs(emulator_factory, chain_project, tmp_path, count=3)


@pytest.mark.reliability
def test_budget_stop_beats_the_sigkill_twenty_times(emulator_factory, chain_project, tmp_path):
    for batch in range(4):
        _budget_stop_runs(
            emulator_factory, chain_project, tmp_path / f"batch-{batch}", count=5, batch=batch
        )
