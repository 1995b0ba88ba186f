"""The torch-loop example chained over 3 segments on the emulator ends bit-identical to the
same loop run in one session: weights, optimizer and scheduler state, the loader's position
(and so the next batch it draws) and the RNG streams."""

from __future__ import annotations

import pytest

from kernel_template import layout
from orchestrator.chain.step import segment_run_config
from orchestrator.demo import LOOP_CHAIN, write_loop_project
from orchestrator.ledger import Ledger
from tests.support.compare import assert_bit_identical
from tests.support.loop import run_loop_kernel, training_end
from tests.support.project import emulated_project, run_chain_to_end

USERS = {"alice": "alice-loop-key"}
TOTAL = 600


@pytest.fixture(scope="module")
def finished_chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop-chain")

    def write(directory, api_url: str) -> None:
        write_loop_project(directory, user="alice", api_url=api_url, total=TOTAL, segments=3)

    with emulated_project(root, USERS, write) as (_, project, client):
        _, ledger, result = run_chain_to_end(project, client, LOOP_CHAIN, follow=True)
        yield {"ledger": ledger, "result": result, "root": root}


@pytest.mark.slow  # one 3-segment chain shared by both tests; make test runs them
def test_the_loop_chains_like_an_sb3_run(finished_chain) -> None:
    ledger: Ledger = finished_chain["ledger"]
    assert finished_chain["result"].outcome == "done", finished_chain["result"].message
    runs = ledger.runs(LOOP_CHAIN)
    assert [r.checkpoint.step for r in runs] == [200, 400, 600]
    for parent, child in zip(runs, runs[1:], strict=False):
        assert child.summary.resumed_from.manifest_sha256 == parent.checkpoint.manifest_sha256
    assert [r.summary.status for r in runs] == ["budget_stop", "budget_stop", "complete"]


@pytest.mark.slow
def test_three_segments_end_bit_identical_to_one_session(finished_chain, tmp_path) -> None:
    ledger: Ledger = finished_chain["ledger"]
    chain = ledger.get_chain(LOOP_CHAIN)
    one_session = segment_run_config(chain, 0, chain.total_timesteps).model_copy(
        update={"segment_timesteps": None, "segment_index": 0}
    )
    config = one_session.model_dump(mode="json")
    run_loop_kernel(config, tmp_path / "working", tmp_path / "input")

    name = layout.checkpoint_dir_name(TOTAL)
    last = ledger.runs(LOOP_CHAIN)[-1]
    chained = training_end(ledger.pulled_path(last) / layout.CHECKPOINTS_DIR / name, config)
    alone = training_end(tmp_path / "working" / layout.CHECKPOINTS_DIR / name, config)
    compared = assert_bit_identical(chained, alone, "end")
    assert chained["state"]["loader"]["epoch"] > 0  # the epochs were split across sessions
    assert len(compared) > 20, compared
