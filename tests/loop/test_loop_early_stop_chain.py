"""A chained user loop that calls `stop_early` in segment 2 of a 3-segment plan: the chain
is done after segment 2, says why, and `pull-artifacts` verifies that segment's zip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from orchestrator.chain.scheduler import run_chains
from orchestrator.chain.start import start_chain
from orchestrator.chain.step import ChainStepper
from orchestrator.demo import write_loop_project
from orchestrator.kaggle import Credentials, KaggleClient
from orchestrator.ledger import Ledger
from orchestrator.settings import load_settings
from tests.support import REPO_ROOT
from tests.support.cli import run_main

CHAIN = "plateau"
REASON = "validation loss flat for 40 steps"
STOPPED_AT = 120  # the loss is flat from step 80 (plateau_loop), patience 40


def plateau_project(project, api_url: str) -> None:
    """The torch-loop example's project with its loop swapped for plateau_loop's."""
    write_loop_project(project, user="alice", api_url=api_url, total=300, segments=3)
    shutil.copyfile(REPO_ROOT / "tests" / "support" / "plateau_loop.py", project / "plateau.py")
    toml = (project / "orchestrate.toml").read_text()
    toml = toml.replace('user_modules = ["regression"]', 'user_modules = ["plateau"]')
    toml = toml.replace('entrypoint = "regression:train"', 'entrypoint = "plateau:train"')
    toml = toml.replace("[run.params]\n", "[run.params]\npatience = 40\n")
    (project / "orchestrate.toml").write_text(toml)


def test_a_loop_that_stops_early_in_segment_two_ends_the_chain_there(
    emulator, tmp_path, monkeypatch, capsys
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    plateau_project(project, emulator.api_url)
    settings = load_settings(project / "orchestrate.toml")
    ledger = Ledger(project)
    credentials = Credentials(username="alice", key=emulator.users["alice"])
    with KaggleClient(emulator.api_url, credentials) as client:
        start_chain(settings, ledger, CHAIN, owner="alice")
        result = run_chains(ChainStepper(settings, client, ledger), [CHAIN], poll_interval=0.3)[
            CHAIN
        ]

    assert result.outcome == "done", result.message
    runs = ledger.runs(CHAIN)
    assert [r.slug for r in runs] == [f"{CHAIN}-s1", f"{CHAIN}-s2"]  # no third segment
    last = runs[-1].summary
    assert (last.status, last.reason, last.stopped_early) == ("complete", REASON, True)
    assert runs[-1].checkpoint.step == last.timesteps_end == STOPPED_AT

    env = emulator.env("alice")
    code, out, _ = run_main(
        monkeypatch, capsys, "chain", "status", CHAIN, "--json", cwd=project, env=env
    )
    status = json.loads(out)
    assert code == 0 and status["state"] == "done"
    assert status["ended_early"] == {"slug": f"{CHAIN}-s2", "step": STOPPED_AT, "reason": REASON}

    code, out, _ = run_main(
        monkeypatch,
        capsys,
        "pull-artifacts",
        f"{CHAIN}-s2",
        "--force",
        "--json",
        "--dest",
        str(tmp_path / "again"),
        cwd=project,
        env=env,
    )
    pulled = json.loads(out)
    assert code == 0 and pulled["verified"] and not pulled["problems"]
    assert pulled["summary"]["stopped_early"] is True

    code, out, _ = run_main(
        monkeypatch, capsys, "chain", "report", CHAIN, "--json", cwd=project, env=env
    )
    report = json.loads(out)
    assert code == 0 and report["ended_early"] == f"Ended early by {CHAIN}-s2 at step 120: {REASON}"
    assert report["ended_early"] in Path(report["html"]).read_text()
