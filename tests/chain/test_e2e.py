"""A real 3-segment chain on the emulator, checked against the same training in one session."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kernel_template import layout
from kernel_template.checkpoint import read_policy_tensors, read_replay_buffer
from orchestrator.chain.report import build_report
from orchestrator.chain.step import segment_run_config
from orchestrator.ledger import Ledger, RunRecord
from tests.support import REPO_ROOT
from tests.support.compare import assert_bit_identical
from tests.support.emulator import use_emulator_env
from tests.support.kernel import run_kernel
from tests.support.project import emulated_project, project_toml, run_chain_to_end
from tests.support.report_browser import assert_renders_in_chromium

# A full chain plus a one-session run to compare with: the heaviest end-to-end check.
pytestmark = pytest.mark.slow

USERS = {"alice": "alice-chain-key"}
CHAIN = "tiny-chain"


def write_chain_project(directory, api_url: str) -> None:
    (directory / "orchestrate.toml").write_text(project_toml(api_url))


@pytest.fixture(scope="module")
def finished_chain(tmp_path_factory):
    """One 3 x 1000-step chain, run in-process to the end; the tests below examine it."""
    root = tmp_path_factory.mktemp("chain-e2e")
    with emulated_project(root, USERS, write_chain_project) as (emulator, project, client):
        settings, ledger, result = run_chain_to_end(
            project, client, CHAIN, segments=[1000, 1000, 1000]
        )
        yield {
            "project": project,
            "settings": settings,
            "ledger": ledger,
            "result": result,
            "calls": emulator.call_counts(),
            "emulator": emulator,
        }


def test_chain_completes_with_one_push_per_segment(finished_chain) -> None:
    ledger: Ledger = finished_chain["ledger"]
    assert finished_chain["result"].outcome == "done"
    runs = ledger.runs(CHAIN)
    assert [r.slug for r in runs] == ["tiny-chain-s1", "tiny-chain-s2", "tiny-chain-s3"]
    assert finished_chain["calls"]["SaveKernel.accepted"] == 3
    assert all(
        r.state == "pulled" and r.artifacts_sha256 and r.checkpoint.manifest_sha256 for r in runs
    )
    assert [r.checkpoint.step for r in runs] == [1000, 2000, 3000]
    # Each segment resumed from exactly the checkpoint the ledger recorded for its parent.
    for parent, child in zip(runs, runs[1:], strict=False):
        assert child.summary.resumed_from.manifest_sha256 == parent.checkpoint.manifest_sha256
    assert runs[0].summary.resumed_from is None
    chain = ledger.get_chain(CHAIN)
    assert chain.state == "done"
    assert not [n for n in chain.notes if n.level == "alert"]
    # The pulled outputs are the verified ones: the zip matches its recorded hash.
    for run in runs:
        assert (
            layout.sha256_file(ledger.pulled_path(run) / layout.ARTIFACTS_ZIP)
            == run.artifacts_sha256
        )


def test_later_segments_are_pushed_with_the_first_segments_image(finished_chain) -> None:
    ledger: Ledger = finished_chain["ledger"]
    runs = ledger.runs(CHAIN)
    first_image = runs[0].summary.versions["docker_image"]
    assert first_image.startswith("gcr.io/kaggle-images/python@sha256:")
    # What each SaveKernel asked for, as the emulator stored it: segment 1 nothing, then its image.
    emulator = finished_chain["emulator"]
    pushed = [emulator.kernel_versions("alice", r.slug)[0]["pushed_docker_image"] for r in runs]
    assert pushed == [None, first_image, first_image]
    assert [r.summary.versions["docker_image"] for r in runs] == [first_image] * 3
    chain = ledger.get_chain(CHAIN)
    assert chain.docker_image == first_image and chain.reference_run == runs[0].slug


def test_a_run_pulled_by_hand_reads_what_the_chain_recorded(
    finished_chain, tmp_path, monkeypatch
) -> None:
    """Another project has segment 2 as a plain run and pulls it with `orchestrate
    pull-artifacts`: its record reads the same summary and checkpoint as the chain's."""
    from orchestrator.cli import main

    emulator = finished_chain["emulator"]
    chained = finished_chain["ledger"].get("tiny-chain-s2")
    project = tmp_path / "by-hand"
    project.mkdir()
    (project / "orchestrate.toml").write_text(project_toml(emulator.api_url))
    use_emulator_env(monkeypatch, emulator, project)
    Ledger(project).record_intent(RunRecord(slug="tiny-chain-s2", owner="alice"))
    assert main(["pull-artifacts", "tiny-chain-s2"]) == 0

    by_hand = Ledger(project).get("tiny-chain-s2")
    assert by_hand.chain is None and by_hand.state == "pulled"
    assert chained.summary.versions and chained.summary.resumed_from is not None
    assert by_hand.summary.versions == chained.summary.versions
    assert by_hand.summary.resumed_from == chained.summary.resumed_from
    assert by_hand.summary == chained.summary
    assert (
        by_hand.checkpoint
        == chained.checkpoint
        == layout.CheckpointRef(step=2000, manifest_sha256=chained.checkpoint.manifest_sha256)
    )


def test_final_model_is_bit_identical_to_one_session(finished_chain, tmp_path) -> None:
    ledger: Ledger = finished_chain["ledger"]
    chain = ledger.get_chain(CHAIN)
    one_session = segment_run_config(chain, 0, chain.total_timesteps).model_copy(
        update={"segment_timesteps": None, "segment_index": 0}
    )
    working, inputs = tmp_path / "working", tmp_path / "input"
    inputs.mkdir()
    done = run_kernel(one_session, working, inputs)
    assert done.returncode == 0, done.stdout[-4000:]

    name = layout.checkpoint_dir_name(chain.total_timesteps)
    chained_dir = ledger.pulled_path(ledger.get("tiny-chain-s3")) / layout.CHECKPOINTS_DIR / name
    alone_dir = working / layout.CHECKPOINTS_DIR / name
    chained, alone = read_policy_tensors(chained_dir), read_policy_tensors(alone_dir)
    assert {"policy.pth", "policy.optimizer.pth"} <= chained.keys()
    compared = assert_bit_identical(chained, alone, "model.zip")
    # Every optimizer value was compared, not only the top-level dict (whose values are the
    # nested `state` and `param_groups`): Adam's step, exp_avg and exp_avg_sq per parameter.
    optimizer = [c for c in compared if c.startswith("model.zip.policy.optimizer.pth.")]
    n_params = len(chained["policy.optimizer.pth"]["param_groups"][0]["params"])
    assert (
        n_params
        and len([c for c in optimizer if c.startswith("model.zip.policy.optimizer.pth.state.")])
        == 3 * n_params
    ), optimizer
    buffer = read_replay_buffer(chained_dir)
    assert buffer is not None and len(buffer["observations"]) == 2000  # the buffer is full
    assert_bit_identical(buffer, read_replay_buffer(alone_dir), "replay_buffer")


def test_report_stitches_segments_and_renders_in_a_browser(finished_chain, tmp_path) -> None:
    report = build_report(finished_chain["ledger"], CHAIN, tmp_path / "report")
    assert [p.name for p in report.images] == [
        "learning_curve.png",
        "segment_time.png",
        "evaluation.png",
    ]
    assert [s.start for s in report.segments] == [0, 1000, 2000]
    assert report.steps_redone == 0
    curve = (tmp_path / "report" / "learning_curve.csv").read_text().splitlines()
    steps = [int(float(line.split(",")[0])) for line in curve[1:]]
    assert steps == sorted(set(steps)) and steps[-1] <= 3000 and steps[0] <= 1000
    assert {"agent"} <= {row["controller"] for row in report.evaluation}
    html = report.html.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained
    assert_renders_in_chromium(
        report.html, images=3, tables=["segments", "evaluation"], tmp_path=tmp_path
    )


def test_status_and_report_commands(finished_chain) -> None:
    project, emulator = finished_chain["project"], finished_chain["emulator"]
    env = {
        **emulator.subprocess_env("alice"),
        "KAGGLE_KEY": USERS["alice"],
        "PYTHONPATH": str(REPO_ROOT),
    }
    status = subprocess.run(
        [sys.executable, "-m", "orchestrator", "chain", "status", CHAIN, "--json"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["state"] == "done" and data["timesteps_done"] == 3000
    assert [s["slug"] for s in data["segments"]] == [
        "tiny-chain-s1",
        "tiny-chain-s2",
        "tiny-chain-s3",
    ]
    # Nothing is left to do: a step is a no-op that says so, and pushes nothing.
    step = subprocess.run(
        [sys.executable, "-m", "orchestrator", "chain", "step", CHAIN],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert step.returncode == 0 and "done" in step.stdout
    assert emulator.call_counts()["SaveKernel.accepted"] == 3
    missing = subprocess.run(
        [sys.executable, "-m", "orchestrator", "chain", "report", "no-such-chain"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: no chain 'no-such-chain'")
