"""A chain followed live counts to its segment's end; `chain list`; a sweep's closing table."""

from __future__ import annotations

import json
import re

import pytest

from orchestrator.chain.overview import ChangedResults
from orchestrator.chain.states import StepResult

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.mark.slow
def test_progress_counts_to_the_segment_end_and_the_bar_ends_at_the_last_step(
    emulator, chain_project
) -> None:
    project = chain_project(emulator, total=3000)
    # Progress events far apart: only the kernel's final event can bring a bar to the end.
    env = {"FORCE_COLOR": "1", "COLUMNS": "120"}  # rich draws its bar as on a terminal
    started = project.cli(
        "chain", "start", "bar-chain", "--segments", "1500,1500",
        "--set", "run.logging.progress_every_s=1000",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    done = project.cli("chain", "run", "bar-chain", "--poll-interval", "0.5", extra_env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    text = ANSI.sub("", done.stdout)
    assert "1500/1500" in text and "3000/3000" in text  # each segment's bar ends at its end
    # The first segment's bar counts to 1500, not to the chain's 3000.
    assert all(int(step) >= 1500 for step in re.findall(r"(\d+)/3000", text)), text

    listed = project.cli("chain", "list")
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    assert line.startswith("bar-chain  done  3000/3000 steps (100%)  segments 2/2")
    [row] = json.loads(project.cli("chain", "list", "--json").stdout)
    assert row["name"] == "bar-chain" and row["segments_done"] == 2
    assert row["final_evaluation"] is not None


def test_chain_list_without_chains(emulator, chain_project) -> None:
    project = chain_project(emulator)
    done = project.cli("chain", "list")
    assert done.returncode == 0 and done.stdout.startswith("no chains yet")
    assert json.loads(project.cli("chain", "list", "--json").stdout) == []


@pytest.mark.slow
def test_sweep_says_each_wait_once_and_ends_with_a_comparison_table(
    emulator, chain_project
) -> None:
    # One GPU slot for three chains: two of them wait at every poll.
    project = chain_project(emulator, accelerator="NvidiaTeslaT4", total=400, gpu_session_cap=1)
    done = project.cli(
        "sweep", "compare", "--seeds", "0,1,2", "--count", "1", "--poll-interval", "0.2"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    results = [line for line in lines if line.startswith("compare-seed")]
    assert any(": waiting: " in line for line in results), done.stdout
    assert len(results) == len(set(results)), "a chain's unchanged result was printed again"
    assert len([line for line in results if ": waiting: " in line]) <= 4, done.stdout
    header = lines.index("chain\tstate\tfinal evaluation\tsteps\tGPU h")
    table = [line.split("\t") for line in lines[header + 1 :]]
    assert sorted(row[0] for row in table) == ["compare-seed0", "compare-seed1", "compare-seed2"]
    for _, state, evaluation, steps, gpu_hours in table:
        assert state == "done" and steps == "400/400"
        float(evaluation), float(gpu_hours)
    scores = [float(row[2]) for row in table]
    assert scores == sorted(scores, reverse=True)  # best first


def test_a_result_is_printed_again_only_when_it_changed() -> None:
    shown = []
    printer = ChangedResults(shown.append)
    waiting = StepResult("a", "waiting", "GPU slots full")
    for result in (waiting, StepResult("b", "waiting", "GPU slots full"), waiting, waiting):
        printer(result)
    printer(StepResult("b", "running", "pushed 0 s ago, not visible yet"))
    printer(StepResult("b", "running", "pushed 1 s ago, not visible yet"))
    printer(StepResult("a", "advanced", "pushed segment 1"))
    printer(waiting)
    assert [(r.chain, r.outcome) for r in shown] == [
        ("a", "waiting"), ("b", "waiting"), ("b", "running"), ("a", "advanced"), ("a", "waiting"),
    ]  # fmt: skip
