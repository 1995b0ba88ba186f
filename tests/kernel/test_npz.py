"""The replay buffer's chunk files: `write_npz` writes what `np.savez` writes, hashed on the
way out, and `read_npz` reads both back as views, exactly what `np.load` reads."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest

from kernel_template.checkpoint import read_npz, write_npz

ARRAYS = {
    "observations": np.arange(60, dtype=np.float32).reshape(5, 3, 4),
    "actions": np.arange(5, dtype=np.int64)[:, None],
    "fortran": np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
    "scalar": np.array(7.5),
    "empty": np.zeros((0, 2), dtype=np.uint8),
    "flags": np.array([True, False, True]),
}


def _assert_same(read: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert read.keys() == expected.keys()
    for name, array in expected.items():
        assert read[name].dtype == array.dtype, name
        assert read[name].shape == array.shape, name
        assert np.array_equal(read[name], array), name


def test_read_npz_reads_what_np_savez_wrote():
    raw = io.BytesIO()
    np.savez(raw, **ARRAYS)
    _assert_same(read_npz(raw.getvalue()), dict(np.load(io.BytesIO(raw.getvalue()))))


def test_write_npz_is_what_np_load_reads_and_its_hash_is_the_files(tmp_path):
    path = tmp_path / "chunk.npz"
    entry = write_npz(path, ARRAYS)
    data = path.read_bytes()
    assert (entry.sha256, entry.size) == (hashlib.sha256(data).hexdigest(), len(data))
    with np.load(path) as loaded:
        _assert_same(dict(loaded), ARRAYS)
    _assert_same(read_npz(data), ARRAYS)


def test_read_npz_views_share_the_bytes_and_are_read_only():
    raw = io.BytesIO()
    np.savez(raw, rows=np.arange(1000, dtype=np.float32))
    data = raw.getvalue()
    rows = read_npz(data)["rows"]
    assert not rows.flags.writeable
    assert np.shares_memory(rows, np.frombuffer(data, dtype=np.uint8))


def test_read_npz_reads_format_2_headers():
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as archive:
        for name, array in ARRAYS.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, array, version=(2, 0))
    _assert_same(read_npz(raw.getvalue()), ARRAYS)


def test_read_npz_falls_back_for_compressed_members():
    raw = io.BytesIO()
    np.savez_compressed(raw, **ARRAYS)
    _assert_same(read_npz(raw.getvalue()), ARRAYS)


def test_read_npz_refuses_what_is_not_a_zip():
    with pytest.raises(zipfile.BadZipFile):
        read_npz(b"not an npz")
