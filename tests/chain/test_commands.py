"""The chain commands as a user types them: start, step --json, cancel, bad input."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_start_step_cancel(emulator, chain_project) -> None:
    project = chain_project(emulator, total=1000)
    started = project.cli("chain", "start", "cli-chain", "--segments", "600,400", "--json")
    assert started.returncode == 0, started.stderr
    record = json.loads(started.stdout)
    assert record["segments"] == [600, 400] and record["state"] == "active"

    step = project.cli("chain", "step", "cli-chain", "--json")
    assert step.returncode == 0, step.stderr
    [result] = json.loads(step.stdout)
    assert result["outcome"] == "advanced" and result["pushed"] == ["cli-chain-s1"]

    # Status while the first segment is pushed but not yet pulled: the moment users look.
    for args in (("chain", "status", "cli-chain", "--json"), ("chain", "status")):
        status = project.cli(*args)
        assert status.returncode == 0, status.stderr
    [segment] = json.loads(project.cli("chain", "status", "cli-chain", "--json").stdout)["segments"]
    assert segment["slug"] == "cli-chain-s1" and segment["checkpoint_step"] is None

    cancel = project.cli("chain", "cancel", "cli-chain", "--json")
    assert cancel.returncode == 0
    message = json.loads(cancel.stdout)["message"]
    assert "Kaggle has no usable cancel" in message and "alice/cli-chain-s1" in message
    again = project.cli("chain", "step", "cli-chain")
    assert again.returncode == 0 and "cancelled" in again.stdout
    assert emulator.call_counts()["SaveKernel.accepted"] == 1


def test_bad_input_exits_2_with_one_line(emulator, chain_project) -> None:
    project = chain_project(emulator, total=1000)
    for args, message in [
        (
            ("chain", "start", "cli-chain", "--segments", "600,300", "--timesteps", "1000"),
            "add up to 900",
        ),
        (("chain", "start", "cli-chain"), "no segment plan"),
        (("chain", "step"), "name a chain"),
        (("chain", "step", "missing-chain"), "no chain 'missing-chain'"),
        (("chain", "report"), "name a chain"),
        (("chain", "report", "cli-chain", "--all"), "not both"),
        (("chain", "report", "missing-chain"), "no chain 'missing-chain'"),
    ]:
        done = project.cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (
            done.stderr
        )


def test_a_misspelt_chain_name_never_starts_a_training(emulator, chain_project) -> None:
    """Issue #9 item 5: `chain run my-chian` said `started chain my-chian ... pushed segment 1`.
    Only `chain start` creates a chain; `run` and `step` exit 2 naming the closest chains."""
    project = chain_project(emulator, total=1000)
    assert project.cli("chain", "start", "my-chain", "--count", "1").returncode == 0
    assert project.cli("chain", "start", "other-chain", "--count", "1").returncode == 0
    for args in (
        ("chain", "run", "my-chian", "--poll-interval", "0.3", "--no-follow"),
        ("chain", "step", "my-chian"),
        ("chain", "step", "my-chain", "my-chian"),  # checked before any chain is stepped
        ("chain", "status", "my-chian"),
    ):
        done = project.cli(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("error: no chain 'my-chian'") and "did you mean my-chain?" in line
        assert "orchestrate chain start my-chian" in line and done.stdout == ""
    assert sorted(c.name for c in project.ledger.chains()) == ["my-chain", "other-chain"]
    assert project.ledger.runs() == []
    assert emulator.call_counts().get("SaveKernel", 0) == 0
    # Far from every name: the chains there are listed instead.
    far = project.cli("chain", "run", "zzz-unrelated")
    assert far.returncode == 2 and "its chains are my-chain, other-chain" in far.stderr
