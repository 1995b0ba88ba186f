"""Finalisation: evaluation, session summary, artifacts.zip and a checksum sha256sum accepts."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
import zipfile

import pandas as pd
import pytest

from kernel_template import layout
from kernel_template.config import EvaluationConfig, LoggingConfig, RunConfig
from kernel_template.exports import MetricsWriter
from kernel_template.finalize import artifact_files, finalize_session, write_artifacts_zip
from kernel_template.throttle import ThrottledLogger

CARTPOLE = RunConfig(env="CartPole-v1", evaluation=EvaluationConfig(final_episodes=2))


def make_summary(status="complete", start=0, end=300) -> layout.SessionSummary:
    now = layout.utc_now_iso()
    return layout.SessionSummary(
        status=status,
        reason="test",
        config_hash=CARTPOLE.config_hash(),
        total_timesteps=CARTPOLE.total_timesteps,
        timesteps_start=start,
        timesteps_end=end,
        wall=layout.WallClock(training=1.0),
        started_at=now,
        ended_at=now,
        session_limit_s=CARTPOLE.session_limit_s,
    )


def populate(working_dir, logger):
    """A working dir as a session leaves it: a checkpoint, metrics, a run config, a log."""
    checkpoint = working_dir / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(300)
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.zip").write_bytes(b"PK not really")
    (checkpoint / "buffer-000000.npy").write_bytes(bytes(range(256)) * 10)
    (checkpoint / layout.MANIFEST_NAME).write_text("{}")
    older = working_dir / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(200)
    older.mkdir()
    (older / "buffer-000000.npy").write_bytes(bytes(range(256)) * 10)  # shared chunk
    (older / layout.MANIFEST_NAME).write_text("{}")
    unfinished = working_dir / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(400)
    unfinished.mkdir()  # no manifest: not a checkpoint
    (unfinished / "model.zip").write_bytes(b"half written")
    writer = MetricsWriter(working_dir)
    for step in range(10, 301, 10):
        writer.append({"step": step, "segment": 0, "episode_reward": step / 10})
    (working_dir / layout.RUN_CONFIG_JSON).write_text(CARTPOLE.model_dump_json())
    logger.log("train", "trained", step=300)


def make_logger(working_dir):
    return ThrottledLogger(LoggingConfig(), working_dir / layout.EVENTS_JSONL, stream=io.StringIO())


def check_sha256sum(working_dir):
    return subprocess.run(
        ["sha256sum", "-c", layout.ARTIFACTS_SHA256],
        cwd=working_dir,
        capture_output=True,
        text=True,
    )


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs the sha256sum command")
def test_finalize_writes_a_verified_zip_of_the_session(tmp_path, tiny_model):
    logger = make_logger(tmp_path)
    populate(tmp_path, logger)
    summary = make_summary()
    digest = finalize_session(tmp_path, summary, tiny_model, CARTPOLE, logger)

    result = check_sha256sum(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{layout.ARTIFACTS_ZIP}: OK" in result.stdout
    assert layout.read_sha256sum(tmp_path / layout.ARTIFACTS_SHA256) == (
        digest,
        layout.ARTIFACTS_ZIP,
    )

    with zipfile.ZipFile(tmp_path / layout.ARTIFACTS_ZIP) as archive:
        names = archive.namelist()
        assert archive.testzip() is None
        written = layout.SessionSummary.model_validate_json(
            archive.read(layout.SESSION_SUMMARY_JSON)
        )
        assert (
            archive.getinfo("checkpoints/000000000300/buffer-000000.npy").compress_type
            == zipfile.ZIP_STORED
        )
        assert archive.getinfo(layout.METRICS_CSV).compress_type == zipfile.ZIP_DEFLATED
    assert names == sorted(names)
    for expected in (
        layout.SESSION_SUMMARY_JSON,
        layout.METRICS_CSV,
        layout.RUN_CONFIG_JSON,
        layout.EVENTS_JSONL,
        layout.EVALUATION_CSV,
        layout.EVALUATION_PNG,
        layout.LEARNING_CURVE_PNG,
        "checkpoints/000000000300/MANIFEST.json",
        "checkpoints/000000000300/model.zip",
    ):
        assert expected in names
    assert layout.ARTIFACTS_ZIP not in names and layout.ARTIFACTS_SHA256 not in names
    # Only the newest complete checkpoint travels: the zip cannot share its buffer chunks.
    assert {n.split("/")[1] for n in names if n.startswith("checkpoints/")} == {"000000000300"}
    assert not [n for n in names if ".tmp-" in n]

    on_disk = layout.SessionSummary.model_validate_json(
        (tmp_path / layout.SESSION_SUMMARY_JSON).read_text()
    )
    assert on_disk == written == summary
    assert set(on_disk.evaluation["controllers"]) == {"agent", "random"}
    assert on_disk.evaluation["seeds"] == [10_000, 10_001]
    assert on_disk.log_lines >= 2 and on_disk.log_lines_per_step == on_disk.log_lines / 300
    assert on_disk.wall.finalization > 0 and on_disk.wall.evaluation > 0
    frame = pd.read_csv(tmp_path / layout.EVALUATION_CSV)
    assert frame["controller"].tolist() == ["agent", "agent", "random", "random"]


def test_finalize_without_a_model(tmp_path):
    logger = make_logger(tmp_path)
    (tmp_path / layout.RUN_CONFIG_JSON).write_text(CARTPOLE.model_dump_json())
    summary = make_summary(status="error", end=0)
    digest = finalize_session(tmp_path, summary, None, CARTPOLE, logger)
    assert digest == layout.sha256_file(tmp_path / layout.ARTIFACTS_ZIP)
    written = json.loads((tmp_path / layout.SESSION_SUMMARY_JSON).read_text())
    layout.SessionSummary.model_validate(written)
    assert set(written["evaluation"]["controllers"]) == {"random"}
    with zipfile.ZipFile(tmp_path / layout.ARTIFACTS_ZIP) as archive:
        assert layout.SESSION_SUMMARY_JSON in archive.namelist()


def test_finalize_records_a_failed_evaluation_and_still_zips(tmp_path, tiny_model):
    logger = make_logger(tmp_path)
    broken = RunConfig(env="no_such_module:Env")
    digest = finalize_session(tmp_path, make_summary(), tiny_model, broken, logger)
    summary = layout.SessionSummary.model_validate_json(
        (tmp_path / layout.SESSION_SUMMARY_JSON).read_text()
    )
    assert "no_such_module" in summary.evaluation["error"]
    assert layout.read_sha256sum(tmp_path / layout.ARTIFACTS_SHA256)[0] == digest
    errors = [
        json.loads(line) for line in (tmp_path / layout.EVENTS_JSONL).read_text().splitlines()
    ]
    assert any(r["level"] == "error" and "final evaluation failed" in r["message"] for r in errors)


def test_finalize_without_logger_config_or_evaluation(tmp_path):
    digest = finalize_session(
        tmp_path, make_summary(status="error"), None, None, None, evaluate=False
    )
    summary = layout.SessionSummary.model_validate_json(
        (tmp_path / layout.SESSION_SUMMARY_JSON).read_text()
    )
    assert summary.evaluation is None
    assert digest == layout.sha256_file(tmp_path / layout.ARTIFACTS_ZIP)


def test_zip_is_replaced_not_nested_and_skips_temp_files(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    (tmp_path / "sub" / ".b.txt.tmp-123").write_text("half")
    (tmp_path / "download.part").write_text("half")
    write_artifacts_zip(tmp_path)
    layout.write_sha256sum(tmp_path / layout.ARTIFACTS_ZIP)
    write_artifacts_zip(tmp_path)  # a second finalisation: the old zip is not archived
    with zipfile.ZipFile(tmp_path / layout.ARTIFACTS_ZIP) as archive:
        assert archive.namelist() == ["a.txt", "sub/b.txt"]
    assert [p.as_posix() for p in artifact_files(tmp_path)] == ["a.txt", "sub/b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.txt",
        "artifacts.zip",
        "artifacts.zip.sha256",
        "download.part",
        "sub",
    ]


@pytest.mark.bench
def test_bench_finalize_cost(tmp_path, tiny_model, bench_record):
    """Targets: finalization (figures, summary, zip) <= 1 s without the evaluation and <= 2 s
    with it: end-of-session work the budget must reserve, kept small (DESIGN: a figure costs
    0.1-0.3 s)."""
    logger = make_logger(tmp_path)
    populate(tmp_path, logger)
    finalize_session(
        tmp_path, make_summary(), tiny_model, CARTPOLE, logger
    )  # warm imports and fonts
    started = time.perf_counter()
    finalize_session(tmp_path, make_summary(), tiny_model, CARTPOLE, logger, evaluate=False)
    bare = time.perf_counter() - started
    started = time.perf_counter()
    finalize_session(tmp_path, make_summary(), tiny_model, CARTPOLE, logger)
    full = time.perf_counter() - started
    checks = [
        bench_record(
            "finalize_without_evaluation_s",
            bare,
            unit=" s",
            target="<= 1.0 s",
            met=bare <= 1.0,
        ),
        bench_record(
            "finalize_with_evaluation_s",
            full,
            unit=" s",
            baseline=bare,
            ratio=full / bare,
            target="<= 2.0 s",
            met=full <= 2.0,
        ),
    ]
    assert all(checks)
