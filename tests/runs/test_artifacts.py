"""pull-artifacts against the real emulator: real kernels write outputs, we pull and verify them."""

from __future__ import annotations

import json
import textwrap
import time
import zipfile

import pytest

from kernel_template import layout
from orchestrator.artifacts import MARKER_NAME, pull_artifacts, read_summary
from orchestrator.emulator.testing import start_emulator
from orchestrator.errors import UserError
from orchestrator.kaggle import (
    CapacityRefused,
    Credentials,
    KaggleClient,
    KernelNotVisible,
    PushSpec,
    RetryPolicy,
)
from tests.support.emulator import use_emulator_env, wait_terminal

# A kernel that leaves what the runtime leaves: two checkpoints with manifests, a summary,
# metrics, and artifacts.zip + artifacts.zip.sha256, all made with the layout helpers.
# MODE changes one thing: "ok", "wrong-sha" (a sidecar that does not match), "evil-zip"
# (an entry with ../ in a zip whose sidecar matches), "bad-checkpoint" (a manifest whose
# file was altered after it was written), "no-zip" (killed before finalizing), "extra"
# (a file written after the zip, outside it).
KERNEL = textwrap.dedent(
    """
    import hashlib, json, os, zipfile
    from pathlib import Path
    from kernel_template import layout
    MODE = {mode!r}
    work = Path(os.environ["ORCHESTRATE_WORKING_DIR"])
    parent = None
    for step in (100, 200):
        ck = work / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(step)
        ck.mkdir(parents=True)
        (ck / "model.zip").write_bytes(os.urandom(2000))
        (ck / "replay.bin").write_bytes(bytes(range(256)) * 40)
        files = {{n: layout.FileEntry(sha256=layout.sha256_file(ck / n), size=(ck / n).stat().st_size)
                 for n in ("model.zip", "replay.bin")}}
        manifest = layout.CheckpointManifest(config_hash="c" * 64, num_timesteps=step, episode_count=step // 10,
            created_at=layout.utc_now_iso(), algo="DQN", files=files, parent=parent)
        layout.atomic_write_text(ck / layout.MANIFEST_NAME, manifest.model_dump_json())
        parent = layout.manifest_hash(ck / layout.MANIFEST_NAME)
    if MODE == "bad-checkpoint":
        (work / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(200) / "replay.bin").write_bytes(b"x" * 10240)
    (work / "metrics").mkdir()
    (work / layout.METRICS_CSV).write_text("step,sps\\n100,50\\n200,55\\n")
    summary = layout.SessionSummary(status="complete", reason="trained all steps", config_hash="c" * 64,
        total_timesteps=200, timesteps_start=0, timesteps_end=200,
        wall=layout.WallClock(setup=1.5, training=4.0, checkpointing=0.2, evaluation=0.5, finalization=0.1,
                              total=6.3),
        seconds_per_step=0.02, started_at=layout.utc_now_iso(), ended_at=layout.utc_now_iso(),
        session_limit_s=43200)
    layout.atomic_write_text(work / layout.SESSION_SUMMARY_JSON, summary.model_dump_json())
    print("outputs written", flush=True)
    if MODE != "no-zip":
        with zipfile.ZipFile(work / layout.ARTIFACTS_ZIP, "w") as archive:
            for path in sorted(work.rglob("*")):
                if path.is_file() and path.name != layout.ARTIFACTS_ZIP:
                    archive.write(path, path.relative_to(work).as_posix())
            if MODE == "evil-zip":
                archive.writestr("../escaped.txt", "gotcha")
        digest = layout.write_sha256sum(work / layout.ARTIFACTS_ZIP)
        if MODE == "wrong-sha":
            (work / layout.ARTIFACTS_SHA256).write_text("0" * 64 + "  artifacts.zip\\n")
    if MODE == "extra":
        (work / "late.txt").write_text("written after the zip")
    """
)


# Every kernel of this file, pushed at once when the module's emulator starts (they run in parallel).
KERNELS = {
    "art-ok": "ok",
    "art-wrong-sha": "wrong-sha",
    "art-corrupt": "ok",
    "art-drop": "ok",
    "art-evil": "evil-zip",
    "art-bad-ck": "bad-checkpoint",
    "art-nozip": "no-zip",
    "art-extra": "extra",
    "art-guard": "ok",
}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """One emulator for the module (starting one costs ~3 s); faults are cleared after each test."""
    root = tmp_path_factory.mktemp("artifacts-emulator")
    with start_emulator(root, {"alice": "alice-key-artifacts"}) as handle:
        credentials = Credentials(username="alice", key=handle.users["alice"])
        with KaggleClient(handle.api_url, credentials, retry=RetryPolicy.fast(6)) as pusher:
            for slug, mode in KERNELS.items():
                spec = PushSpec(
                    id=f"alice/{slug}", title=f"Artifacts {slug}", text=KERNEL.format(mode=mode)
                )
                deadline = time.monotonic() + 90
                while True:  # Kaggle runs 5 CPU sessions at once: wait for a free one
                    try:
                        pusher.push(spec)
                        break
                    except CapacityRefused:
                        assert time.monotonic() < deadline, "no CPU session freed up in 90 s"
                        time.sleep(0.2)
        yield handle


@pytest.fixture
def client(emulator):
    credentials = Credentials(username="alice", key=emulator.users["alice"])
    with KaggleClient(emulator.api_url, credentials, retry=RetryPolicy.fast(6)) as made:
        yield made
    emulator.clear_faults()


def run_kernel(client, slug: str, mode: str = "ok") -> None:
    """Wait for the module's kernel `slug` (pushed with `mode`) to finish."""
    assert KERNELS[slug] == mode
    assert wait_terminal(client, "alice", slug, timeout=90) == "COMPLETE"


def pull_refused(client, tmp_path, slug: str):
    """Pull `slug` into runs/<slug>, which must be refused with nothing left there."""
    dest = tmp_path / "runs" / slug
    result = pull_artifacts(client, "alice", slug, dest)
    assert not result.verified
    assert not dest.exists(), "nothing unverified may reach runs/<run>/"
    return result


def downloads(emulator) -> int:
    return emulator.call_counts().get("download", 0)


def test_pull_verifies_extracts_and_is_idempotent(emulator, client, tmp_path):
    run_kernel(client, "art-ok")
    dest = tmp_path / "runs" / "art-ok"
    result = pull_artifacts(client, "alice", "art-ok", dest)
    assert result.verified and not result.problems and not result.skipped
    assert result.dir == dest
    assert (dest / layout.METRICS_CSV).read_text().startswith("step,sps")
    zip_sha, _ = layout.read_sha256sum(dest / layout.ARTIFACTS_SHA256)
    assert result.artifacts_sha256 == zip_sha == layout.sha256_file(dest / layout.ARTIFACTS_ZIP)
    newest = dest / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(200) / layout.MANIFEST_NAME
    assert result.checkpoint == layout.CheckpointRef(
        step=200, manifest_sha256=layout.manifest_hash(newest)
    )
    assert result.summary is not None and result.summary.timesteps_end == 200
    # Only the zip and its sidecar were fetched: everything else was inside the zip, and the
    # notebook runner's own files (__results__.html, ...) are not ours.
    assert {f.name for f in result.files if f.source == "download"} == {
        layout.ARTIFACTS_ZIP,
        layout.ARTIFACTS_SHA256,
    }
    assert json.loads((dest / MARKER_NAME).read_text())["artifacts_sha256"] == zip_sha
    assert sorted(p.name for p in dest.parent.iterdir()) == ["art-ok"], "staging is cleaned up"

    counts = emulator.call_counts()
    again = pull_artifacts(client, "alice", "art-ok", dest)
    assert again.skipped and again.verified
    assert again.checkpoint == result.checkpoint
    after = emulator.call_counts()
    assert after.get("download", 0) == counts.get("download", 0)
    assert after.get("ListKernelSessionOutput", 0) == counts.get("ListKernelSessionOutput", 0)


def test_force_downloads_again_and_replaces_the_pull(emulator, client, tmp_path):
    run_kernel(client, "art-ok")
    dest = tmp_path / "runs" / "art-ok"
    first = pull_artifacts(client, "alice", "art-ok", dest)
    (dest / "stale.txt").write_text("left from before")
    before = downloads(emulator)
    again = pull_artifacts(client, "alice", "art-ok", dest, force=True)
    assert again.verified and not again.skipped
    assert downloads(emulator) == before + 2  # the zip and its sidecar
    assert again.artifacts_sha256 == first.artifacts_sha256
    assert not (dest / "stale.txt").exists(), "the new pull replaces the old directory whole"
    assert not list(dest.parent.glob(".art-ok.*"))


def test_a_wrong_sha256_is_refused_and_kept_aside(client, tmp_path):
    run_kernel(client, "art-wrong-sha", "wrong-sha")
    result = pull_refused(client, tmp_path, "art-wrong-sha")
    assert any("sha256" in p and "!=" in p for p in result.problems)
    rejected = tmp_path / "runs" / "art-wrong-sha.rejected"
    assert result.dir.parent == rejected
    assert (result.dir / layout.ARTIFACTS_ZIP).is_file()
    assert "sha256" in (result.dir / "PROBLEMS.txt").read_text()


def test_a_corrupted_download_is_refused(emulator, client, tmp_path):
    run_kernel(client, "art-corrupt")
    emulator.set_faults("download=corrupt*1")  # the first download (artifacts.zip) is altered
    result = pull_refused(client, tmp_path, "art-corrupt")
    assert any("artifacts.zip sha256" in p for p in result.problems)
    # Once the fault is gone a pull succeeds (no marker was written by the failed one).
    emulator.clear_faults()
    assert pull_artifacts(
        client, "alice", "art-corrupt", tmp_path / "runs" / "art-corrupt"
    ).verified


def test_a_dropped_download_resumes_and_verifies(emulator, client, tmp_path):
    run_kernel(client, "art-drop")
    emulator.set_faults("download=truncate*1")
    result = pull_artifacts(client, "alice", "art-drop", tmp_path / "runs" / "art-drop")
    assert result.verified


def test_an_archive_escaping_its_directory_is_refused(client, tmp_path):
    run_kernel(client, "art-evil", "evil-zip")
    result = pull_refused(client, tmp_path, "art-evil")
    assert any("'..'" in p for p in result.problems)
    assert not (tmp_path / "runs" / "escaped.txt").exists()
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_checkpoint_that_fails_its_manifest_is_refused(client, tmp_path):
    run_kernel(client, "art-bad-ck", "bad-checkpoint")
    result = pull_refused(client, tmp_path, "art-bad-ck")
    assert any("replay.bin" in p for p in result.problems)
    # The older checkpoint still verifies: it is the one the run could resume from.
    older = result.dir / "extracted" / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(100)
    assert result.checkpoint.manifest_sha256 == layout.manifest_hash(older / layout.MANIFEST_NAME)


def test_without_a_zip_the_raw_outputs_are_pulled_unverified(client, tmp_path):
    run_kernel(client, "art-nozip", "no-zip")
    dest = tmp_path / "runs" / "art-nozip"
    result = pull_artifacts(client, "alice", "art-nozip", dest)
    assert not result.verified
    assert any("no artifacts.zip" in p for p in result.problems)
    assert (dest / layout.METRICS_CSV).is_file()
    assert result.checkpoint is not None
    assert not (dest / MARKER_NAME).exists(), "an unverified pull must be redone next time"


def test_files_outside_the_zip_are_downloaded_too(client, tmp_path):
    run_kernel(client, "art-extra", "extra")
    dest = tmp_path / "runs" / "art-extra"
    result = pull_artifacts(client, "alice", "art-extra", dest)
    assert result.verified
    assert (dest / "late.txt").read_text() == "written after the zip"
    assert "late.txt" in {f.name for f in result.files if f.source == "download"}


def test_a_running_kernel_cannot_be_pulled(client, tmp_path):
    client.push(
        PushSpec(
            id="alice/art-running", title="Artifacts running", text="import time\ntime.sleep(30)\n"
        )
    )
    dest = tmp_path / "runs" / "art-running"
    deadline = time.monotonic() + 30
    while True:
        try:
            client.status("alice", "art-running")
            break
        except KernelNotVisible:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    with pytest.raises(UserError, match="its outputs exist once it ends; wait with"):
        pull_artifacts(client, "alice", "art-running", dest)
    client.delete_kernel("alice", "art-running")  # frees its CPU session


def test_the_zip_really_holds_the_checkpoints(client, tmp_path):
    # Guards the test kernel itself: the pull above is only meaningful if the zip is complete.
    run_kernel(client, "art-guard")
    result = pull_artifacts(client, "alice", "art-guard", tmp_path / "r")
    with zipfile.ZipFile(result.dir / layout.ARTIFACTS_ZIP) as archive:
        names = set(archive.namelist())
    assert (
        f"{layout.CHECKPOINTS_DIR}/{layout.checkpoint_dir_name(200)}/{layout.MANIFEST_NAME}"
        in names
    )


# -- the command ----------------------------------------------------------------------------


@pytest.fixture
def project(emulator, monkeypatch, tmp_path):
    return use_emulator_env(monkeypatch, emulator, tmp_path)


def test_command_pulls_a_ledger_run_and_records_it(client, project, capsys):
    from orchestrator.commands import main
    from orchestrator.ledger import Ledger, RunRecord

    run_kernel(client, "art-guard")
    Ledger(project).record_intent(RunRecord(slug="art-guard", owner="alice"))
    code = main(["pull-artifacts", "art-guard"])
    out = capsys.readouterr().out
    assert code == 0
    assert "alice/art-guard: verified" in out
    assert "steps 0 -> 200 of 200" in out
    record = Ledger(project).get("art-guard")
    assert record.state == "pulled"
    assert record.pulled_dir == "runs/art-guard"  # relative: the project may move
    assert record.artifacts_sha256 == layout.sha256_file(
        project / "runs" / "art-guard" / layout.ARTIFACTS_ZIP
    )
    newest = (
        project / "runs" / "art-guard" / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(200)
    )
    assert record.checkpoint == layout.CheckpointRef(
        step=200, manifest_sha256=layout.manifest_hash(newest / layout.MANIFEST_NAME)
    )
    assert record.summary == read_summary(project / "runs" / "art-guard")  # the whole summary


def test_command_json_and_exit_1_on_a_mismatch(client, project, capsys):
    from orchestrator.commands import main

    run_kernel(client, "art-wrong-sha", "wrong-sha")
    code = main(["pull-artifacts", "alice/art-wrong-sha", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    document = json.loads(captured.out)
    assert document["verified"] is False and document["problems"]
    assert ".rejected" in document["dir"]
    assert not (project / "runs" / "art-wrong-sha").exists()
