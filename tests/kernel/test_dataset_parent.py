"""A parent checkpoint uploaded as a dataset (`chain ... --from DIR`) is found at the dataset
mounts, `<input>/datasets/<owner>/<slug>/` or the legacy `<input>/<slug>/`, whether Kaggle
kept the uploaded artifacts.zip, decompressed it at the top, or into `artifacts/`."""

from __future__ import annotations

import shutil
import zipfile

import pytest

from kernel_template import layout
from kernel_template.config import RunConfig
from kernel_template.resume import ParentMissing, find_parent_checkpoint

STEP = 500


def _checkpoint(directory, config: RunConfig) -> str:
    directory.mkdir(parents=True)
    (directory / "model.zip").write_bytes(b"weights")
    (directory / "buffer").mkdir()
    (directory / "buffer" / "chunk-0.npz").write_bytes(b"rows")
    files = {
        name: {
            "sha256": layout.sha256_file(directory / name),
            "size": (directory / name).stat().st_size,
        }
        for name in ("model.zip", "buffer/chunk-0.npz")
    }
    manifest = layout.CheckpointManifest(
        config_hash=config.config_hash(), num_timesteps=STEP, episode_count=1,
        created_at="2026-01-01T00:00:00Z", algo="DQN", files=files,
    )  # fmt: skip
    (directory / layout.MANIFEST_NAME).write_text(manifest.model_dump_json())
    return layout.manifest_hash(directory / layout.MANIFEST_NAME)


@pytest.mark.parametrize("shape", ["kept-zip", "top", "artifacts-dir", "legacy"])
def test_dataset_parent_found_in_each_layout(tmp_path, shape) -> None:
    base = RunConfig(total_timesteps=1000, segment_index=1)
    source = tmp_path / "local" / layout.checkpoint_dir_name(STEP)
    digest = _checkpoint(source, base)
    inputs = tmp_path / "input"
    mount = inputs / ("ckpt-x" if shape == "legacy" else "datasets/alice/ckpt-x")
    if shape == "kept-zip":
        mount.mkdir(parents=True)
        with zipfile.ZipFile(mount / layout.ARTIFACTS_ZIP, "w") as archive:
            for path in source.rglob("*"):
                if path.is_file():
                    name = f"checkpoints/{source.name}/{path.relative_to(source).as_posix()}"
                    archive.write(path, name)
    else:
        top = mount / "artifacts" if shape == "artifacts-dir" else mount
        shutil.copytree(source, top / layout.CHECKPOINTS_DIR / source.name)
    parent = {"owner": "alice", "slug": "ckpt-x", "step": STEP, "manifest_sha256": digest}
    config = RunConfig.model_validate(
        {**base.model_dump(), "parent": {**parent, "kind": "dataset"}, "parent_wait_s": 0.0}
    )
    point = find_parent_checkpoint(tmp_path / "working", inputs, config, warn=lambda _: None)
    assert point.manifest_sha256 == digest and point.manifest.num_timesteps == STEP
    assert (point.directory / "buffer" / "chunk-0.npz").read_bytes() == b"rows"
    # The same checkpoint named as a kernel's output is not looked for under datasets/.
    if shape != "legacy":
        as_kernel = RunConfig.model_validate({**config.model_dump(), "parent": parent})
        with pytest.raises(ParentMissing, match="kernel_sources"):
            find_parent_checkpoint(tmp_path / "w2", inputs, as_kernel, warn=lambda _: None)
