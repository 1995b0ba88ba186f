"""A checkpoint's size follows the transitions stored, not the replay buffer's allocation."""

from __future__ import annotations

import numpy as np
from kernel_helpers import DQN_CONFIG, config_with

from kernel_template.checkpoint import BUFFER_DIR, CheckpointWriter, read_replay_buffer
from kernel_template.config import RunConfig

ALLOCATED = 200_000
EVERY = 1000


def _chunk_bytes(checkpoint) -> int:
    return sum(
        entry.size
        for name, entry in checkpoint.files.items()
        if name.startswith(BUFFER_DIR + "/chunk-")
    )


def test_checkpoint_size_grows_with_rows_added_not_the_allocation(tmp_path):
    import torch

    from kernel_template.layout import read_manifest
    from kernel_template.train import build_model, build_vec_env

    torch.set_num_threads(1)
    hyperparams = {**DQN_CONFIG["hyperparams"], "buffer_size": ALLOCATED, "learning_starts": 10**6}
    config = RunConfig.model_validate(config_with(DQN_CONFIG, hyperparams=hyperparams))
    model = build_model(config, build_vec_env(config), "cpu")  # no updates: only env steps
    writer = CheckpointWriter(tmp_path / "out", config_hash="x", algo="DQN", keep=3)
    chunk_bytes = []
    for _ in range(3):
        model.learn(EVERY, reset_num_timesteps=False)
        written = writer.write(model, episode_count=0, state={})
        chunk_bytes.append(_chunk_bytes(read_manifest(writer.root / written.ref.path)))
    writer.close()

    sb3_path = tmp_path / "sb3_buffer.pkl"
    model.save_replay_buffer(sb3_path)
    sb3_bytes = sb3_path.stat().st_size
    # 3000 of 200k rows stored: the chunks are ~1.5% of what save_replay_buffer writes.
    assert chunk_bytes[-1] * 20 < sb3_bytes, (chunk_bytes, sb3_bytes)
    # Each checkpoint adds one interval's rows: the total grows linearly with rows added
    # (within 5%: merged chunks save the per-file npz headers).
    assert chunk_bytes[0] > 0
    for count, total in enumerate(chunk_bytes, start=1):
        assert abs(total - count * chunk_bytes[0]) < 0.05 * count * chunk_bytes[0], chunk_bytes
    # And the chunks hold exactly the rows added.
    stored = read_replay_buffer(writer.root / written.ref.path)
    buffer = model.replay_buffer
    assert stored["observations"].shape[0] == model.num_timesteps == 3 * EVERY
    assert np.array_equal(stored["observations"], buffer.observations[: 3 * EVERY])
    assert np.array_equal(stored["actions"], buffer.actions[: 3 * EVERY])
