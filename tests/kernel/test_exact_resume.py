"""A run chained over fresh processes ends bit-identical to the same run done in one go."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest

from tests.support.compare import assert_bit_identical as assert_same
from tests.support.kernel import (
    DQN_CONFIG,
    PPO_CONFIG,
    SAC_CONFIG,
    newest_checkpoint,
    run_bare,
    run_chain,
    run_kernel,
    summary_of,
    training_result,
)

# Segments of odd lengths so boundaries land off any round number. DQN crosses two
# boundaries; PPO and SAC one each in the default suite (each process costs seconds) and
# two in the reliability run.
SEGMENTS = {"DQN": [537, 501], "PPO": [517], "SAC": [187]}
LONGER_SEGMENTS = {"PPO": [261, 387], "SAC": [151, 137]}


def run_single(base: dict, root):
    working = root / "single"
    result = run_kernel(base, working, root / "none")
    assert result.returncode == 0, result.stdout[-3000:]
    return working


@pytest.mark.slow
def test_dqn_chained_segments_equal_bare_learn(tmp_path):
    """DQN's reference is plain SB3 `learn(total)`: the chained runtime must match it exactly
    (and so must an unbroken runtime session, which the kill test compares against)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        bare_future = pool.submit(run_bare, DQN_CONFIG, tmp_path)
        chain_end, summaries = run_chain(DQN_CONFIG, SEGMENTS["DQN"], tmp_path)
        bare = bare_future.result()
    check_boundaries(summaries, SEGMENTS["DQN"])

    chained = training_result(newest_checkpoint(chain_end))
    assert_same(chained["tensors"]["policy.pth"], bare["policy"], "policy vs bare")
    assert_same(chained["tensors"]["policy.optimizer.pth"], bare["optimizer"], "optimizer vs bare")
    assert_same(chained["buffer"], bare["buffer"], "buffer vs bare")
    assert summaries[-1].episodes == bare["episodes"]
    assert summaries[-1].timesteps_end == DQN_CONFIG["total_timesteps"]
    buffer_size = DQN_CONFIG["hyperparams"]["buffer_size"]
    assert chained["buffer"]["rewards"].shape[0] == buffer_size  # the buffer wrapped around
    assert np.all(chained["buffer"]["rewards"] == 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("base", [PPO_CONFIG, SAC_CONFIG], ids=lambda c: c["algo"])
def test_chained_segments_equal_single_run(base, tmp_path):
    check_chain_equals_single_run(base, SEGMENTS[base["algo"]], tmp_path)


@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.parametrize("base", [PPO_CONFIG, SAC_CONFIG], ids=lambda c: c["algo"])
def test_three_segments_equal_single_run(base, tmp_path):
    check_chain_equals_single_run(base, LONGER_SEGMENTS[base["algo"]], tmp_path)


def check_chain_equals_single_run(base: dict, segments: list[int], tmp_path) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        single_future = pool.submit(run_single, base, tmp_path)
        chain_end, summaries = run_chain(base, segments, tmp_path)
        single = single_future.result()

    check_boundaries(summaries, segments)

    chained = training_result(newest_checkpoint(chain_end))
    alone = training_result(newest_checkpoint(single))
    assert_same(chained, alone, "chained vs single")
    assert summaries[-1].timesteps_end == summary_of(single).timesteps_end
    assert summaries[-1].episodes == summary_of(single).episodes


def check_boundaries(summaries, segments: list[int]) -> None:
    """Each segment continued exactly where its parent's checkpoint left off."""
    assert [s.status for s in summaries] == ["budget_stop"] * len(segments) + ["complete"]
    for previous, current in zip(summaries, summaries[1:], strict=False):
        assert current.timesteps_start == previous.timesteps_end
        assert current.resumed_from is not None
        assert current.resumed_from.manifest_sha256 == previous.left_checkpoint.manifest_sha256
        assert current.steps_redone == 0
