"""`chain resume`, `chain extend` and `chain start --from` refusing bad input: one line, exit 2,
nothing written (no chain recorded, no dataset uploaded); and the machine's reading of a
chain's `start_from` and `forgiven_runs`."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone

from kernel_template import layout
from kernel_template.layout import CheckpointRef
from orchestrator.chain import machine
from orchestrator.ledger import ChainRecord, RunRecord, StartPoint

HASH_A, HASH_B = "a" * 64, "b" * 64


def _fake_checkpoint(directory, config_hash: str, step: int = 500) -> None:
    directory.mkdir(parents=True)
    (directory / "model.zip").write_bytes(b"weights")
    manifest = layout.CheckpointManifest(
        config_hash=config_hash,
        num_timesteps=step,
        episode_count=1,
        created_at="2026-01-01T00:00:00Z",
        algo="DQN",
        files={"model.zip": {"sha256": layout.sha256_file(directory / "model.zip"), "size": 7}},
    )
    (directory / layout.MANIFEST_NAME).write_text(manifest.model_dump_json())


def test_bad_input_exits_2_and_writes_nothing(emulator, chain_project, tmp_path) -> None:
    project = chain_project(emulator, total=1000)
    config_hash = project.settings.run.config_hash()
    good = tmp_path / "good" / layout.checkpoint_dir_name(500)
    _fake_checkpoint(good, config_hash)
    corrupt = tmp_path / "corrupt" / layout.checkpoint_dir_name(500)
    shutil.copytree(good, corrupt)
    (corrupt / "model.zip").write_bytes(b"changed")
    other = tmp_path / "other" / layout.checkpoint_dir_name(500)
    _fake_checkpoint(other, HASH_B)
    assert project.cli("chain", "start", "live-chain", "--segments", "1000").returncode == 0
    for args, message in [
        (("chain", "start", "new-chain", "--from", "no-such-run"), "neither a run"),
        (("chain", "start", "new-chain", "--from", str(corrupt)), "does not verify"),
        (("chain", "start", "new-chain", "--from", str(tmp_path)), "not a checkpoint dir"),
        (("chain", "start", "new-chain", "--from", str(other), "--count", "1"), "config hash"),
        (
            ("chain", "start", "new-chain", "--from", str(good), "--timesteps", "500"),
            "already at or past",
        ),
        (("chain", "start", "live-chain", "--from", str(good), "--count", "1"), "already exists"),
        (("chain", "resume", "live-chain"), "is active, not failed or cancelled"),
        (("chain", "resume", "missing-chain"), "no chain 'missing-chain'"),
        (("chain", "extend", "live-chain", "--to", "1000"), "must be more than"),
        (("chain", "extend", "live-chain", "--to", "1500", "--segments", "400"), "add up to 400"),
    ]:
        done = project.cli(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (
            args,
            done.stderr,
        )
    ledger = json.loads((project.dir / ".orchestrate" / "ledger.json").read_text())
    assert list(ledger["chains"]) == ["live-chain"]
    assert ledger["chains"]["live-chain"]["total_timesteps"] == 1000
    assert emulator.call_counts().get("CreateDataset", 0) == 0


def test_extend_plans_the_rest_and_warns_when_exploration_would_rise(
    emulator, chain_project
) -> None:
    project = chain_project(emulator, total=1000)
    assert project.cli("chain", "start", "ext-chain", "--segments", "500,500").returncode == 0
    done = project.cli("chain", "extend", "ext-chain", "--to", "1100", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["segments"] == [500, 500, 100] and record["total_timesteps"] == 1100
    assert record["run_config"]["allow_config_change"] == ["total_timesteps"]
    # 1000 of 1100 is past DQN's default exploration window (0.1): no warning.
    assert "warning" not in done.stderr
    done = project.cli("chain", "extend", "ext-chain", "--to", "20000")
    assert done.returncode == 0 and "epsilon rises again" in done.stderr, done.stderr


def _run(name: str, segment: int, step: int | None, digest: str | None, attempt: int = 0):
    return RunRecord(
        slug=name,
        owner="alice",
        chain="c",
        segment=segment,
        attempt=attempt,
        state="pulled",
        checkpoint=CheckpointRef(step=step, manifest_sha256=digest) if digest else None,
    )


def test_machine_starts_from_start_from_and_forgets_forgiven_failures() -> None:
    start = StartPoint(
        kind="dataset",
        owner="alice",
        slug="ckpt-x",
        checkpoint=CheckpointRef(step=1000, manifest_sha256=HASH_A),
        source="d",
    )
    chain = ChainRecord(
        name="c", run_config={}, config_hash="h", total_timesteps=3000, segments=[1000, 1000],
        max_retries=0, start_from=start,
    )  # fmt: skip
    now = datetime.now(timezone.utc)
    push = machine.next_action(chain, [], now)
    assert isinstance(push, machine.Push) and push.start.kind == "dataset"
    assert push.dataset_sources == ["alice/ckpt-x"] and push.kernel_sources == []
    # A segment that left nothing new failed; resumed (forgiven), it gets a new attempt.
    runs = [_run("c-s1", 1, 1000, HASH_B)]
    assert isinstance(machine.next_action(chain, runs, now), machine.Finish)
    forgiven = chain.model_copy(update={"forgiven_runs": ["c-s1"]})
    again = machine.next_action(forgiven, runs, now)
    assert isinstance(again, machine.Push) and again.slug == "c-s1-r1"
    # At the same step, the start point wins over a run's checkpoint (the user named it).
    assert machine.start_point(runs, start=start).kind == "dataset"
    assert machine.start_point([_run("c-s1", 1, 2000, HASH_B)], start=start).slug == "c-s1"
