"""Datasets created through the API, as kaggle.com makes them: private, denied (403) during the
read-after-write lag, processed for a while before READY, and attached to a kernel only once
READY, at `<input>/datasets/<owner>/<slug>/` with an uploaded zip decompressed into a folder."""

from __future__ import annotations

import io
import json
import time
import zipfile

from orchestrator.emulator.testing import start_emulator
from orchestrator.kaggle import Credentials, KaggleClient
from orchestrator.kaggle.datasets import NOT_VISIBLE, READY
from tests.support.emulator import TEST_USERS

# Lists the dataset mount (one level below it, too) into the log, as JSON.
LIST_INPUT = """
import json, os
root = os.path.join(os.environ.get("ORCHESTRATE_INPUT_DIR", "/kaggle/input"), "datasets")
found = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
print("INPUT " + json.dumps(found))
"""


def _client(emulator, user: str) -> KaggleClient:
    return KaggleClient(emulator.api_url, Credentials(user, TEST_USERS[user]))


def _archive(tmp_path):
    path = tmp_path / "artifacts.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("checkpoints/000000001000/MANIFEST.json", "{}")
    path.write_bytes(buffer.getvalue())
    return path


def _input_seen(client: KaggleClient, slug: str) -> list[str]:
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.status("alice", slug).is_terminal:
                break
        except Exception:  # noqa: BLE001 - the 403 of the read-after-write lag
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for entry in client.list_output("alice", slug).log:
        if entry.data.startswith("INPUT "):
            return json.loads(entry.data.removeprefix("INPUT "))
    raise AssertionError("the kernel printed no INPUT line")


def _push(client: KaggleClient, slug: str, dataset: str) -> None:
    from orchestrator.kaggle import PushSpec

    client.push(
        PushSpec(
            id=f"alice/{slug}",
            title=slug,
            text=LIST_INPUT,
            dataset_sources=[dataset],
            enable_internet=False,
        )
    )


def test_a_new_dataset_is_denied_then_processed_then_attached(tmp_path) -> None:
    with start_emulator(tmp_path / "emu", TEST_USERS, dataset_processing=8.0) as emulator:
        alice, bob = _client(emulator, "alice"), _client(emulator, "bob")
        assert alice.dataset_status("alice", "ckpt-test-one") == NOT_VISIBLE  # unknown: 403
        ref = alice.create_dataset("alice", "ckpt-test-one", "A checkpoint", [_archive(tmp_path)])
        assert ref.created and ref.ref == "alice/ckpt-test-one"
        # Pushed at once, the kernel gets nothing: the dataset is still being processed.
        _push(alice, "too-early", ref.ref)
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while (status := alice.dataset_status("alice", "ckpt-test-one")) != READY:
            seen.append(status)
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "BLOBS_RECEIVED" in seen  # processed for a while before READY
        assert bob.dataset_status("alice", "ckpt-test-one") == NOT_VISIBLE  # private
        assert _input_seen(alice, "too-early") == []
        _push(alice, "when-ready", ref.ref)
        assert _input_seen(alice, "when-ready") == [
            "alice/ckpt-test-one/artifacts/checkpoints/000000001000/MANIFEST.json"
        ]
        # The same slug again is the earlier upload (names are derived from content).
        again = alice.create_dataset("alice", "ckpt-test-one", "A checkpoint", [_archive(tmp_path)])
        assert not again.created
        calls = emulator.call_counts()
        assert calls["CreateDataset"] == 2 and calls["StartBlobUpload"] == 2
