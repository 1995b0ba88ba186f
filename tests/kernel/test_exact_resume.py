"""A run chained over fresh processes ends bit-identical to the same run done in one go."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys

import numpy as np
import pytest
from kernel_helpers import (
    DQN_CONFIG,
    PPO_CONFIG,
    SAC_CONFIG,
    assert_same,
    config_with,
    kernel_env,
    newest_checkpoint,
    run_kernel,
    summary_of,
    training_result,
    tree_digest,
)

# Segments of odd lengths so boundaries land off any round number.
SEGMENTS = {"DQN": [1037, 1001], "PPO": [517, 771], "SAC": [301, 287]}


def run_chain(base: dict, segments: list[int], root):
    """Segments as fresh processes; each reads only its parent's output dir (checked untouched)."""
    parent = root / "no-input"
    parent.mkdir()
    summaries = []
    for index, length in enumerate([*segments, None]):
        working = root / f"segment-{index}"
        config = config_with(base, segment_index=index, segment_timesteps=length)
        before = tree_digest(parent)
        result = run_kernel(config, working, parent)
        assert result.returncode == 0, result.stdout[-3000:]
        assert tree_digest(parent) == before, "a segment modified its parent's outputs"
        summaries.append(summary_of(working))
        parent = working
    return parent, summaries


def run_single(base: dict, root):
    working = root / "single"
    result = run_kernel(base, working, root / "none")
    assert result.returncode == 0, result.stdout[-3000:]
    return working


BARE_SCRIPT = """
import json, sys, numpy as np, torch
from kernel_template.config import RunConfig
from kernel_template.train import bare_learn
model = bare_learn(RunConfig.model_validate(json.loads(sys.argv[1])))
out = {"policy": model.policy.state_dict(), "optimizer": model.policy.optimizer.state_dict()}
buffer = getattr(model, "replay_buffer", None)
if buffer is not None:
    from kernel_template.checkpoint import buffer_arrays
    rows = model.num_timesteps // buffer.n_envs
    order = np.arange(max(0, rows - buffer.buffer_size), rows) % buffer.buffer_size
    out["buffer"] = {k: v[order] for k, v in buffer_arrays(buffer).items()}
out["episodes"] = model._episode_num
torch.save(out, sys.argv[2])
"""


def run_bare(base: dict, root):
    """Plain SB3 `learn(total)` in a fresh process: the runtime must not change the result."""
    out = root / "bare.pt"
    subprocess.run(
        [sys.executable, "-c", BARE_SCRIPT, json.dumps(base), str(out)],
        check=True,
        env=kernel_env(),
        timeout=300,
    )
    import torch

    return torch.load(out, weights_only=False)


@pytest.mark.parametrize(
    "base",
    [DQN_CONFIG, PPO_CONFIG, SAC_CONFIG],
    ids=lambda c: c["algo"],
)
def test_chained_segments_equal_single_run(base, tmp_path):
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        single_future = pool.submit(run_single, base, tmp_path)
        chain_end, summaries = run_chain(base, SEGMENTS[base["algo"]], tmp_path)
        single = single_future.result()

    assert [s.status for s in summaries] == ["budget_stop", "budget_stop", "complete"]
    for previous, current in zip(summaries, summaries[1:], strict=False):
        assert current.timesteps_start == previous.timesteps_end
        assert current.resumed_from is not None
        assert current.resumed_from.manifest_sha256 == previous.left_checkpoint.manifest_sha256
        assert current.steps_redone == 0

    chained = training_result(newest_checkpoint(chain_end))
    alone = training_result(newest_checkpoint(single))
    assert_same(chained, alone, "chained vs single")
    assert summaries[-1].timesteps_end == summary_of(single).timesteps_end
    assert summaries[-1].episodes == summary_of(single).episodes

    if base["algo"] == "DQN":  # and the runtime reproduces plain SB3 learn() exactly
        bare = run_bare(base, tmp_path)
        assert_same(alone["tensors"]["policy.pth"], bare["policy"], "policy vs bare")
        assert_same(
            alone["tensors"]["policy.optimizer.pth"], bare["optimizer"], "optimizer vs bare"
        )
        assert_same(alone["buffer"], bare["buffer"], "buffer vs bare")
        assert summary_of(single).episodes == bare["episodes"]
        assert alone["buffer"]["rewards"].shape[0] == 1000  # the buffer wrapped around
        assert np.all(alone["buffer"]["rewards"] == 1.0)
