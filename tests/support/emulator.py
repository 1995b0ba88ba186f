"""The emulator as the tests meet it: the test users, a raw-httpx view of the wire protocol
(`Rpc`), and the kernel processes an emulator left behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from orchestrator.emulator.executor import RUNNER_FILES
from orchestrator.emulator.testing import EmulatorHandle
from orchestrator.kaggle import KernelNotVisible

TEST_USERS = {"alice": "alice-test-key-1", "bob": "bob-test-key-2"}
SERVICE = "kernels.KernelsApiService"
TERMINAL = ("COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED")
DENIED = {"code": 403, "message": "Permission 'kernels.get' was denied"}
# Longer than any read-after-write lag the tests use (TEST_TIMINGS: 0.2-0.8 s).
LAG_BOUND_S = 10.0


def user_files(listing: dict) -> list[dict]:
    """The output files a kernel wrote, without the runner's own (__results__.html, ...)."""
    return [f for f in listing.get("files", []) if f["fileName"] not in RUNNER_FILES]


class Rpc:
    """One user's view of the emulator, with raw httpx (no client library)."""

    def __init__(self, emulator: EmulatorHandle, user: str = "alice"):
        self.emulator = emulator
        self.user = user
        self.http = httpx.Client(
            base_url=emulator.api_url, auth=(user, emulator.users[user]), timeout=30
        )

    def call(self, method: str, body: dict | None = None) -> httpx.Response:
        return self.http.post(f"/{SERVICE}/{method}", json=body or {})

    def push(self, slug: str, text: str, **fields) -> dict:
        body = {
            "slug": f"{self.user}/{slug}",
            "newTitle": slug.replace("-", " ").title(),
            "text": text,
            "language": "python",
            "kernelType": "script",
            "isPrivate": True,
            **fields,
        }
        response = self.call("SaveKernel", body)
        response.raise_for_status()
        return response.json()

    def call_visible(self, method: str, body: dict) -> httpx.Response:
        """`call`, polling through the 403 a new kernel gets during its read-after-write lag."""
        deadline = time.monotonic() + LAG_BOUND_S
        while True:
            response = self.call(method, body)
            if response.status_code != 403 or time.monotonic() > deadline:
                return response
            assert response.json() == DENIED, response.text
            time.sleep(0.05)

    def status(self, slug: str, owner: str | None = None) -> dict:
        response = self.call_visible(
            "GetKernelSessionStatus", {"userName": owner or self.user, "kernelSlug": slug}
        )
        response.raise_for_status()
        return response.json()

    def wait(self, slug: str, statuses=TERMINAL, timeout: float = 60) -> dict:
        """Poll until the status is one of `statuses` (a generous bound, not a timing check)."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.status(slug)
            if body["status"] in statuses:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{slug} still {body} after {timeout}s")
            time.sleep(0.05)

    def output(self, slug: str, owner: str | None = None, **extra) -> dict:
        response = self.call_visible(
            "ListKernelSessionOutput",
            {"userName": owner or self.user, "kernelSlug": slug, **extra},
        )
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self.http.close()


def kernel_processes_left(emulator: EmulatorHandle) -> list[int]:
    """Pids of the emulator's kernels still alive (none should be after a chain ends)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if (
                str(emulator.root / "kernels").encode() in cmdline
            ):  # a kernel script, not the server
                found.append(int(pid))
    return found


def use_emulator_env(monkeypatch, emulator: EmulatorHandle, cwd: Path, user: str = "alice") -> Path:
    """This process talks to `emulator` as `user` (its env, no blank KAGGLE_API_TOKEN) from
    `cwd`: what a user's shell in a project directory has. Returns `cwd`."""
    for name, value in emulator.env(user).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.chdir(cwd)
    return cwd


def wait_terminal(client, owner: str, slug: str, timeout: float = 60) -> str:
    """Poll a KaggleClient until the session ends, through the 403s of Kaggle's
    read-after-write lag (a generous bound, not a timing check); the final status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = client.status(owner, slug)
        except KernelNotVisible:
            time.sleep(0.1)
            continue
        if status.is_terminal:
            return status.status
        time.sleep(0.1)
    raise AssertionError(f"{owner}/{slug} not terminal after {timeout}s")
