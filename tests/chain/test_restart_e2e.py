"""`chain resume`, `chain resume --from`, `chain start --from` and `chain extend`, driven
through the CLI against the emulator in its faithful default mode, each checked for
bit-identity (policy, optimizer state, replay buffer) with one unbroken session.

The config explores over 5 % of the total (150 steps of 3000, inside the 200 random
`learning_starts` steps), so DQN's epsilon schedule is over before it is first used
whatever the total: an extended chain can then be compared with a run planned for the
new total from the start.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kernel_template import layout
from kernel_template.checkpoint import read_policy_tensors, read_replay_buffer
from orchestrator.kaggle import KaggleClient
from tests.support.compare import assert_bit_identical
from tests.support.kernel import run_kernel
from tests.support.project import ChainProject, emulated_project, project_toml

pytestmark = pytest.mark.slow  # seven short sessions and two local reference runs

USERS = {"alice": "alice-restart-key"}
STEP_DIR_1000 = layout.checkpoint_dir_name(1000)


def restart_toml(api_url: str) -> str:
    text = project_toml(api_url, slug="restart", total=2000, checkpoint_every=250)
    text = text.replace("batch_size = 32", "batch_size = 32\nexploration_fraction = 0.05")
    # A missing parent is given up on quickly, and retried quickly.
    text = text.replace("min_margin_s = 1", "min_margin_s = 1\nparent_wait_s = 2")
    return text + "\n[chain]\nparent_retry_s = 1\n"


@dataclass
class World:
    project: ChainProject
    client: KaggleClient
    tmp: Path
    references: dict[int, Path] = field(default_factory=dict)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return self.project.cli(*args, timeout=300)

    def run_chain(self, name: str) -> subprocess.CompletedProcess:
        return self.cli("chain", "run", name, "--poll-interval", "0.3", "--no-follow")

    def status(self, name: str) -> dict:
        done = self.cli("chain", "status", name, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def final_checkpoint(self, name: str, total: int) -> Path:
        last = self.status(name)["segments"][-1]
        return (
            self.project.dir
            / last["pulled_dir"]
            / layout.CHECKPOINTS_DIR
            / layout.checkpoint_dir_name(total)
        )

    def reference(self, total: int) -> Path:
        """The same training in one local session of the kernel: the unbroken run."""
        if total not in self.references:
            self.references[total] = one_session(self.project, total, self.tmp / f"one-{total}")
        return self.references[total]


def one_session(project: ChainProject, total: int, where: Path) -> Path:
    config = project.settings.run.model_copy(update={"total_timesteps": total})
    (where / "input").mkdir(parents=True)
    done = run_kernel(config, where / "working", where / "input")
    assert done.returncode == 0, done.stdout[-4000:]
    return where / "working" / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(total)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("restart")

    def write(directory: Path, api_url: str) -> None:
        (directory / "orchestrate.toml").write_text(restart_toml(api_url))

    with emulated_project(root, USERS, write) as (emulator, project_dir, client):
        yield World(ChainProject(project_dir, emulator), client, root)


@pytest.fixture(scope="module")
def resumed(world: World) -> dict[str, Any]:
    """Chain `rchain` (2 x 1000) fails when Kaggle refuses its second push, then is resumed."""
    start = world.cli("chain", "start", "rchain", "--segments", "1000,1000", "--max-retries", "0")
    assert start.returncode == 0, start.stderr
    first = world.cli("chain", "step", "rchain")
    assert first.returncode == 0 and "pushed segment 1" in first.stdout, first.stderr
    world.project.emulator.set_faults("SaveKernel=400*1")  # the push of segment 2, later
    failed = world.run_chain("rchain")
    failed_status = world.status("rchain")
    resume = world.cli("chain", "resume", "rchain")
    finished = world.run_chain("rchain")
    return {
        "failed": failed,
        "failed_status": failed_status,
        "resume": resume,
        "finished": finished,
        "status": world.status("rchain"),
    }


def test_resume_takes_a_failed_chain_on_and_ends_bit_identical(world, resumed) -> None:
    assert resumed["failed"].returncode == 1, resumed["failed"].stderr
    assert resumed["failed_status"]["state"] == "failed"
    assert resumed["failed_status"]["timesteps_done"] == 1000
    assert resumed["resume"].returncode == 0, resumed["resume"].stderr
    assert "from step 1000" in resumed["resume"].stdout
    assert resumed["finished"].returncode == 0, resumed["finished"].stderr
    status = resumed["status"]
    assert status["state"] == "done" and status["timesteps_done"] == 2000
    slugs = [s["slug"] for s in status["segments"]]
    assert slugs == ["rchain-s1", "rchain-s2", "rchain-s2-r1"]  # the refused push spent its slug
    last = status["segments"][-1]
    s1 = status["segments"][0]
    assert last["checkpoint_step"] == 2000
    assert_same_training(world.final_checkpoint("rchain", 2000), world.reference(2000))
    # It resumed from s1's verified checkpoint, as the ledger recorded it.
    summary = json.loads(
        (world.project.dir / last["pulled_dir"] / layout.SESSION_SUMMARY_JSON).read_text()
    )
    assert summary["resumed_from"]["manifest_sha256"] == s1["checkpoint_hash"]


def test_start_from_a_checkpoint_dir_uploads_a_dataset_and_ends_bit_identical(
    world, resumed
) -> None:
    source = (
        world.project.dir
        / resumed["status"]["segments"][0]["pulled_dir"]
        / "checkpoints"
        / STEP_DIR_1000
    )
    start = world.cli("chain", "start", "dchain", "--from", str(source), "--segments", "1000")
    assert start.returncode == 0, start.stderr
    assert "from step 1000 (dataset alice/ckpt-" in start.stdout
    done = world.run_chain("dchain")
    assert done.returncode == 0, done.stderr
    status = world.status("dchain")
    assert status["state"] == "done" and [s["slug"] for s in status["segments"]] == ["dchain-s1"]
    # The segment was pushed with the dataset as its only source, and resumed from it.
    version = world.project.emulator.kernel_versions("alice", "dchain-s1")[0]
    assert version["kernel_sources"] == []
    assert version["dataset_sources"] == [status_start(world, "dchain")["ref"]]
    summary = json.loads(
        (
            world.project.dir / status["segments"][0]["pulled_dir"] / layout.SESSION_SUMMARY_JSON
        ).read_text()
    )
    assert summary["resumed_from"]["manifest_sha256"] == layout.manifest_hash(
        source / layout.MANIFEST_NAME
    )
    assert "/input/datasets/alice/ckpt-" in summary["resumed_from"]["path"]
    assert_same_training(world.final_checkpoint("dchain", 2000), world.reference(2000))


def test_start_from_a_run_attaches_its_kernel_and_ends_bit_identical(world, resumed) -> None:
    start = world.cli("chain", "start", "kchain", "--from", "rchain-s1", "--segments", "1000")
    assert start.returncode == 0, start.stderr
    assert "from step 1000 (kernel alice/rchain-s1)" in start.stdout
    done = world.run_chain("kchain")
    assert done.returncode == 0, done.stderr
    version = world.project.emulator.kernel_versions("alice", "kchain-s1")[0]
    assert version["kernel_sources"] == ["alice/rchain-s1"] and version["dataset_sources"] == []
    assert_same_training(world.final_checkpoint("kchain", 2000), world.reference(2000))


def test_resume_from_a_local_dir_when_the_parent_kernel_is_gone(world, resumed) -> None:
    """The kernel holding the checkpoint was deleted on kaggle.com: the chain stops before
    pushing anything, with an ALERT naming the choices; `chain resume --from` the local copy
    uploads it and the chain ends exactly."""
    start = world.cli("chain", "start", "gchain", "--from", "rchain-s2", "--segments", "1000")
    assert start.returncode == 2 and "left no verified checkpoint" in start.stderr  # refused
    world.client.delete_kernel("alice", "rchain-s1")  # after the test above used it
    start = world.cli("chain", "start", "gchain", "--from", "rchain-s1", "--segments", "1000")
    assert start.returncode == 0, start.stderr
    step = world.cli("chain", "step", "gchain")
    assert step.returncode == 1, step.stdout + step.stderr
    assert "is gone from Kaggle" in step.stdout and "ALERT chain gchain" in step.stderr
    local = (
        world.project.dir
        / world.status("rchain")["segments"][0]["pulled_dir"]
        / "checkpoints"
        / STEP_DIR_1000
    )
    shown = local.relative_to(world.project.dir)  # as typed in the project, where it runs
    assert f"orchestrate chain resume gchain --from {shown}" in step.stdout
    resume = world.cli("chain", "resume", "gchain", "--from", str(local))
    assert resume.returncode == 0, resume.stderr
    assert "dataset alice/ckpt-" in resume.stdout
    done = world.run_chain("gchain")
    assert done.returncode == 0, done.stderr
    status = world.status("gchain")
    assert [s["slug"] for s in status["segments"]] == ["gchain-s1"]  # nothing pushed in vain
    assert world.project.emulator.kernel_versions("alice", "gchain-s1")[0]["dataset_sources"]
    assert_same_training(world.final_checkpoint("gchain", 2000), world.reference(2000))


def test_extend_raises_a_finished_chains_total_and_ends_bit_identical(world, resumed) -> None:
    extend = world.cli("chain", "extend", "rchain", "--to", "3000")
    assert extend.returncode == 0, extend.stderr
    assert "3000 timesteps" in extend.stdout and "warning" not in extend.stderr
    done = world.run_chain("rchain")
    assert done.returncode == 0, done.stderr
    status = world.status("rchain")
    assert status["state"] == "done" and status["timesteps_done"] == 3000
    assert [s["slug"] for s in status["segments"]][-1] == "rchain-s3"
    assert_same_training(world.final_checkpoint("rchain", 3000), world.reference(3000))


def status_start(world: World, name: str) -> dict:
    ledger = json.loads((world.project.dir / ".orchestrate" / "ledger.json").read_text())
    start = ledger["chains"][name]["start_from"]
    return {**start, "ref": f"{start['owner']}/{start['slug']}"}


# -- bitwise comparison ----------------------------------------------------------------------


def assert_same_training(chained_dir: Path, alone_dir: Path) -> None:
    chained, alone = read_policy_tensors(chained_dir), read_policy_tensors(alone_dir)
    assert {"policy.pth", "policy.optimizer.pth"} <= chained.keys()
    compared = assert_bit_identical(chained, alone, "model.zip")
    assert any(".optimizer.pth.state." in c for c in compared), compared  # Adam's moments too
    buffer = read_replay_buffer(chained_dir)
    assert buffer is not None and len(buffer["observations"]) > 0
    assert_bit_identical(buffer, read_replay_buffer(alone_dir), "replay_buffer")
