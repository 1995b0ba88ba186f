"""The official `kaggle` CLI (2.2.x), pointed at the emulator, pushes, polls, downloads, reads logs.

The CLI can only reach `http://localhost` (KAGGLE_API_ENVIRONMENT=LOCALHOST, port 80);
`emulator.env()` sets HTTP_PROXY to the emulator, which accepts proxy-style targets.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.tools import KAGGLE_CLI as KAGGLE
from tests.support.tools import missing_tool


@pytest.fixture(autouse=True)
def official_cli_installed() -> None:
    if not KAGGLE.exists():
        missing_tool("the official kaggle CLI is not installed")


def kaggle(emu, *args: str, user: str = "alice", check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(KAGGLE), *args],
        env=emu.subprocess_env(user),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, (
            f"kaggle {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def kaggle_through_denial(emu, *args: str, user: str = "alice") -> subprocess.CompletedProcess:
    """`kaggle`, repeated while a new kernel is still denied (the read-after-write lag)."""
    deadline = time.monotonic() + 20
    while True:
        result = kaggle(emu, *args, user=user, check=False)
        denied = "Permission 'kernels.get' was denied" in result.stdout + result.stderr
        if result.returncode == 0 or not denied or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result.returncode == 0, (
        f"kaggle {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    )
    return result


def make_kernel_folder(path: Path, slug: str, code: str) -> Path:
    path.mkdir(parents=True)
    metadata = {
        "id": f"alice/{slug}",
        "title": slug.replace("-", " ").title(),
        "code_file": "main.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": False,
        "enable_internet": False,
        "kernel_sources": [],
    }
    (path / "kernel-metadata.json").write_text(json.dumps(metadata))
    (path / "main.py").write_text(code)
    return path


def test_official_cli_push_status_output_logs(emu, tmp_path):
    emulator = emu
    before = emulator.call_counts()
    code = "print('hello from the official cli')\nopen('result.txt', 'w').write('42')\n"
    folder = make_kernel_folder(tmp_path / "kernel", "cli-roundtrip", code)

    pushed = kaggle(emulator, "kernels", "push", "-p", str(folder))
    assert "Kernel version 1 successfully pushed" in pushed.stdout

    deadline = time.monotonic() + 60
    while True:
        status = kaggle_through_denial(emulator, "kernels", "status", "alice/cli-roundtrip").stdout
        if "COMPLETE" in status or "ERROR" in status or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert 'has status "KernelWorkerStatus.COMPLETE"' in status

    out = tmp_path / "out"
    kaggle(emulator, "kernels", "output", "alice/cli-roundtrip", "-p", str(out))
    assert (out / "result.txt").read_text() == "42"
    log = json.loads((out / "cli-roundtrip.log").read_text())
    assert [e["data"] for e in log] == ["hello from the official cli\n"]

    printed = kaggle(emulator, "kernels", "logs", "alice/cli-roundtrip").stdout
    assert "hello from the official cli" in printed
    followed = kaggle(emulator, "kernels", "logs", "alice/cli-roundtrip", "--follow").stdout
    assert followed.strip() == "hello from the official cli"

    listed = kaggle(emulator, "kernels", "list", "--mine").stdout
    assert "alice/cli-roundtrip" in listed
    counts = emulator.call_counts()
    assert counts["SaveKernel.accepted"] - before.get("SaveKernel.accepted", 0) == 1
    assert counts["download"] - before.get("download", 0) == 4  # result.txt + 3 runner files


def test_official_cli_follows_a_live_log(emu, tmp_path):
    emulator = emu
    code = "import time\nfor i in range(3):\n    print(f'tick {i}')\n    time.sleep(0.3)\n"
    folder = make_kernel_folder(tmp_path / "kernel", "cli-follow", code)
    kaggle(emulator, "kernels", "push", "-p", str(folder))
    followed = kaggle_through_denial(
        emulator, "kernels", "logs", "alice/cli-follow", "--follow"
    ).stdout
    assert followed.split() == ["tick", "0", "tick", "1", "tick", "2"]


def test_official_cli_reports_the_denial_of_an_unknown_kernel(emu):
    result = kaggle(emu, "kernels", "status", "alice/no-such-kernel", check=False)
    assert "Permission 'kernels.get' was denied" in result.stdout + result.stderr


def test_official_cli_sees_gpu_refusal(emulator_factory, tmp_path):
    emulator = emulator_factory(gpu_slots=0)
    folder = make_kernel_folder(tmp_path / "kernel", "cli-gpu", "print(1)\n")
    metadata = json.loads((folder / "kernel-metadata.json").read_text())
    (folder / "kernel-metadata.json").write_text(json.dumps({**metadata, "enable_gpu": True}))
    pushed = kaggle(emulator, "kernels", "push", "-p", str(folder))
    assert "Kernel push error: Maximum batch GPU session count of 0 reached." in pushed.stdout
