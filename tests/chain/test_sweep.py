"""Sweeps: seeds x variants as chains, stepped round-robin within the GPU session cap."""

from __future__ import annotations

import json

import pytest

from orchestrator.chain import machine
from orchestrator.chain.scheduler import run_chains
from orchestrator.chain.step import ChainStepper
from orchestrator.chain.sweep import plan_sweep, start_sweep
from orchestrator.errors import UserError
from orchestrator.ledger import Ledger
from orchestrator.settings import settings_from_dict


def test_plan_sweep_names_and_configs(tmp_path) -> None:
    settings = settings_from_dict({"run": {"total_timesteps": 1000}})
    members = plan_sweep(
        settings,
        "lr",
        "0,1",
        ["run.hyperparams.learning_rate=0.001", "run.hyperparams.learning_rate=0.01"],
    )
    assert [m.chain for m in members] == [
        "lr-v0-seed0",
        "lr-v0-seed1",
        "lr-v1-seed0",
        "lr-v1-seed1",
    ]
    assert [m.settings.run.seed for m in members] == [0, 1, 0, 1]
    assert members[2].settings.run.hyperparams == {"learning_rate": 0.01}
    assert len({m.settings.run.config_hash() for m in members}) == 4
    with pytest.raises(UserError, match="--seeds"):
        plan_sweep(settings, "lr", "zero", [])

    ledger = Ledger(tmp_path)
    names = start_sweep(settings, ledger, members, owner="alice", count=2)
    assert names == [m.chain for m in members]
    assert (
        start_sweep(settings, ledger, members, owner="alice", count=2) == names
    )  # continued, not duplicated
    changed = plan_sweep(settings, "lr", "0", ["run.hyperparams.learning_rate=0.5"])
    changed[0] = type(changed[0])("lr-v0-seed0", changed[0].settings)
    with pytest.raises(UserError, match="already exists with another run config"):
        start_sweep(settings, ledger, changed[:1], owner="alice", count=2)


@pytest.mark.slow
def test_sweep_never_exceeds_the_gpu_session_cap(emulator, chain_project) -> None:
    project = chain_project(emulator, accelerator="NvidiaTeslaT4", total=500, gpu_session_cap=1)
    members = plan_sweep(project.settings, "sw", "0,1", [])
    names = start_sweep(project.settings, project.ledger, members, owner="alice", count=1)
    with project.client() as client:
        results = run_chains(
            ChainStepper(project.settings, client, project.ledger),
            names,
            poll_interval=0.2,
            follow=False,
        )
    assert {r.outcome for r in results.values()} == {"done"}
    runs = [r for name in names for r in project.ledger.runs(name)]
    assert len(runs) == 2 and emulator.call_counts()["SaveKernel.accepted"] == 2
    first, second = sorted(runs, key=lambda r: r.pushed_at)
    # The second chain's segment went out only after the first one's session had ended.
    assert machine.parse_time(second.pushed_at) >= machine.parse_time(first.terminal_at)
    assert {r.summary.config_hash for r in runs} == {
        project.ledger.get_chain(n).config_hash for n in names
    }


def test_sweep_command_start_only(emulator, chain_project) -> None:
    project = chain_project(emulator, total=1000)
    done = project.cli("sweep", "cli", "--seeds", "3,4", "--count", "1", "--start-only", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["chains"] == ["cli-seed3", "cli-seed4"]
    assert [c.name for c in project.ledger.chains()] == ["cli-seed3", "cli-seed4"]
    assert "SaveKernel" not in emulator.call_counts()
