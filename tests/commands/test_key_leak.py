"""The API key never leaves the credentials: pushed through `launch`, `pull-artifacts`,
`chain run` and `chain report` (real CLI subprocesses against the emulator, whose only user
has a unique random key), it appears in no file and no output.

Searched: every file of the project folder (ledger, rendered kernel folders, pulled outputs,
report), every file of the emulator's root (the pushed bodies and scripts it stored, the
kernels' working dirs and logs), the emulator's own stderr, and every command's stdout and
stderr. Zip archives are searched inside too. The key is looked for as is and inside the
HTTP Basic header value (base64 of `user:key`).
"""

from __future__ import annotations

import base64
import io
import secrets
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.cli import emulator_cli_env
from tests.support.project import project_toml


def needles(user: str, key: str) -> dict[str, bytes]:
    basic = base64.b64encode(f"{user}:{key}".encode())
    return {"key": key.encode(), "basic-auth header": basic}


def leaks_in_bytes(data: bytes, where: str, wanted: dict[str, bytes]) -> list[str]:
    found = [f"{where}: {name}" for name, needle in wanted.items() if needle in data]
    if data[:4] == b"PK\x03\x04":  # an archive: its members are compressed, search them too
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.namelist():
                    found += leaks_in_bytes(archive.read(member), f"{where}!{member}", wanted)
        except (zipfile.BadZipFile, OSError, EOFError):
            pass
    return found


def leaks_in_tree(root: Path, wanted: dict[str, bytes]) -> tuple[list[str], int]:
    found, searched = [], 0
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            searched += 1
            found += leaks_in_bytes(path.read_bytes(), str(path), wanted)
    return found, searched


@pytest.mark.slow
def test_the_key_appears_in_no_file_and_no_output(emulator_factory, tmp_path):
    key = "leakcheck" + secrets.token_hex(16)
    wanted = needles("alice", key)
    emulator = emulator_factory(users={"alice": key})
    project = tmp_path / "project"
    project.mkdir()
    (project / "orchestrate.toml").write_text(
        project_toml(emulator.api_url, slug="leak-run", total=600, checkpoint_every=200)
    )
    env = emulator_cli_env(emulator, tmp_path)

    outputs: list[tuple[str, subprocess.CompletedProcess]] = []

    def orchestrate(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        outputs.append((" ".join(args), done))
        assert done.returncode == 0, f"orchestrate {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    orchestrate("launch", "--watch")  # preflight included: it checks the credentials
    orchestrate("pull-artifacts", "leak-run")
    orchestrate("chain", "start", "leak-chain", "--segments", "300,300")
    orchestrate("chain", "run", "leak-chain", "--poll-interval", "0.3")
    orchestrate("chain", "report", "leak-chain")
    orchestrate("chain", "status", "leak-chain", "--json")
    orchestrate("runs")

    # What the commands made is there to be searched (so an empty search cannot pass).
    assert (project / ".orchestrate" / "ledger.json").is_file()
    assert list((project / "build" / "kernels").glob("*/kernel-metadata.json"))
    assert (project / "runs" / "leak-run" / "session_summary.json").is_file()
    assert (project / "reports" / "leak-chain" / "report.html").is_file()
    assert list(emulator.root.rglob("artifacts.zip"))

    found, searched = leaks_in_tree(project, wanted)
    more, searched_root = leaks_in_tree(emulator.root, wanted)
    found += more
    found += leaks_in_bytes(emulator.stderr().encode(), "emulator stderr", wanted)
    for command, done in outputs:
        found += leaks_in_bytes(done.stdout.encode(), f"`{command}` stdout", wanted)
        found += leaks_in_bytes(done.stderr.encode(), f"`{command}` stderr", wanted)
    assert searched > 20 and searched_root > 20
    assert not found, "the API key leaked:\n" + "\n".join(found)
