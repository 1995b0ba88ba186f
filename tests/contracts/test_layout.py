"""Shared file formats: events, manifests, checksums, atomic writes."""

import subprocess

from hypothesis import given
from hypothesis import strategies as st

from kernel_template.layout import (
    CheckpointManifest,
    FileEntry,
    atomic_write_text,
    format_event,
    parse_event,
    read_sha256sum,
    sha256_file,
    write_sha256sum,
)

json_scalars = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.text(), st.booleans(), st.none()
)


@given(
    st.dictionaries(st.text(min_size=1).filter(lambda k: k != "event"), json_scalars, max_size=5)
)
def test_events_round_trip_inside_any_log_line(fields):
    line = "2026-01-01T00:00:00Z stdout " + format_event("progress", **fields)
    assert parse_event(line) == {"event": "progress", **fields}


def test_non_event_lines_are_ignored():
    assert parse_event("plain log line") is None
    assert parse_event("@@orchestrate {broken") is None
    assert parse_event('@@orchestrate ["no", "event"]') is None


def test_sha256sum_sidecar_is_accepted_by_sha256sum(tmp_path):
    target = tmp_path / "artifacts.zip"
    target.write_bytes(b"payload" * 1000)
    digest = write_sha256sum(target)
    assert read_sha256sum(tmp_path / "artifacts.zip.sha256") == (digest, "artifacts.zip")
    subprocess.run(["sha256sum", "-c", "artifacts.zip.sha256"], cwd=tmp_path, check=True)


def test_manifest_problems_detect_truncation_and_bit_flips(tmp_path):
    data = tmp_path / "model.zip"
    data.write_bytes(bytes(range(256)) * 4)
    manifest = CheckpointManifest(
        config_hash="x",
        num_timesteps=10,
        episode_count=1,
        created_at="now",
        algo="DQN",
        files={"model.zip": FileEntry(sha256=sha256_file(data), size=1024)},
    )
    assert manifest.problems(tmp_path) == []
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0x01
    data.write_bytes(bytes(raw))
    assert manifest.problems(tmp_path) == ["model.zip: sha256 mismatch"]
    data.write_bytes(bytes(raw[:500]))
    assert "size" in manifest.problems(tmp_path)[0]
    data.unlink()
    assert manifest.problems(tmp_path) == ["model.zip: missing"]


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "file.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]
