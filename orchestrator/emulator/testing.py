"""Start the emulator as a subprocess on a free loopback port, for tests and `make demo`.

with start_emulator(tmp_path / "emu", {"alice": "key-a"}) as emu:
    env = emu.env("alice")  # ORCHESTRATE_KAGGLE_API, KAGGLE_USERNAME/KEY, ...

TEST_TIMINGS (short delays, a generous rate limit) apply unless a caller overrides them;
every harsh behaviour stays on: 403s and the read-after-write lag, COMPLETE after a crash,
SIGKILL at the limit, notebooks/ mounts only, no stable-baselines3, session caps, unknown
images refused, rate limiting.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from orchestrator.emulator.faults import FaultRule

READY_TIMEOUT_S = 30.0

# Short timings for tests and demos; every faithful behaviour stays on. The rate limit is
# sized so that poll loops at 0.05-0.5 s, even several at once, never meet it.
TEST_TIMINGS = {
    "queue_delay": 0.1,
    "gpu_queue_delay": 0.1,
    "boot_time": 0.1,
    "read_lag": "0.2:0.8",
    "dataset_processing": 1.0,
    "rate_limit": "1000/1",
}

# Option name (as start_emulator takes it) -> command-line flag. Booleans are bare flags
# (given when true); lists are joined with commas.
_FLAGS = {
    "max_session": "--max-session",
    "gpu_slots": "--gpu-slots",
    "cpu_slots": "--cpu-slots",
    "tpu_slots": "--tpu-slots",
    "weekly_gpu_quota": "--weekly-gpu-quota",
    "queue_delay": "--queue-delay",
    "gpu_queue_delay": "--gpu-queue-delay",
    "boot_time": "--boot-time",
    "kill_grace": "--kill-grace",
    "read_lag": "--read-lag",
    "seed": "--seed",
    "rate_limit": "--rate-limit",
    "image_lacks": "--image-lacks",
    "known_images": "--known-images",
    "honest_exit_status": "--honest-exit-status",
    "legacy_mounts": "--legacy-mounts",
    "dataset_processing": "--dataset-processing",
    "faults": "--faults",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmulatorError(RuntimeError):
    pass


def _server_env() -> dict[str, str]:
    """Our environment minus Kaggle credentials and minus a loopback HTTP proxy.

    A test that applied another emulator's env() has HTTP_PROXY pointing at that emulator;
    kernels run by this one must not inherit it (their pip installs would go there).
    """
    env = {}
    for name, value in os.environ.items():
        if name.startswith("KAGGLE_"):
            continue
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy") and value.startswith(
            ("http://127.0.0.1", "http://localhost")
        ):
            continue
        env[name] = value
    return env


class EmulatorHandle:
    """A running emulator subprocess and the ways a test drives it."""

    def __init__(self, root: Path, users: dict[str, str], options: dict, test_api: bool = True):
        self.root = Path(root)
        self.users = dict(users)
        self.options = {**TEST_TIMINGS, **options}
        self.test_api = test_api
        self.host = "127.0.0.1"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._stderr_path = self.root.parent / f".{self.root.name}-emulator-{self.port}.stderr"
        self._config_dir = self.root.parent / f".{self.root.name}-kaggle-config"

    # -- addresses ---------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v1"

    def env(self, user: str = "alice") -> dict[str, str]:
        """Env vars (merge into os.environ) that point our client and the official CLI here.

        The official CLI only knows `http://localhost` (KAGGLE_API_ENVIRONMENT=LOCALHOST);
        HTTP_PROXY routes those requests to our port, which accepts proxy-style targets.
        """
        if user not in self.users:
            raise KeyError(f"unknown emulator user {user!r}; known: {sorted(self.users)}")
        return {
            "ORCHESTRATE_KAGGLE_API": self.api_url,
            "KAGGLE_USERNAME": user,
            "KAGGLE_KEY": self.users[user],
            "KAGGLE_CONFIG_DIR": str(self._config_dir),
            "KAGGLE_API_TOKEN": "",
            "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
            "HTTP_PROXY": self.base_url,
            "http_proxy": self.base_url,
            "NO_PROXY": "",
            "no_proxy": "",
        }

    def subprocess_env(self, user: str = "alice") -> dict[str, str]:
        """os.environ overlaid with env(user), minus a stray KAGGLE_API_TOKEN."""
        env = {**os.environ, **self.env(user)}
        env.pop(
            "KAGGLE_API_TOKEN", None
        )  # an empty value would still be read as "set" by some tools
        return env

    # -- lifecycle ---------------------------------------------------------------------
    def command(self) -> list[str]:
        users = ",".join(f"{name}:{key}" for name, key in self.users.items())
        cmd = [sys.executable, "-m", "orchestrator.emulator", "serve"]
        cmd += ["--host", self.host, "--port", str(self.port), "--root", str(self.root)]
        cmd += ["--users", users]
        for name, value in self.options.items():
            if name not in _FLAGS:
                raise TypeError(f"unknown emulator option {name!r}; known: {sorted(_FLAGS)}")
            if isinstance(value, bool):
                if value:
                    cmd.append(_FLAGS[name])
            elif value is None:
                continue
            elif isinstance(value, list | tuple | set):
                cmd += [_FLAGS[name], ",".join(value)]
            else:
                cmd += [_FLAGS[name], str(value)]
        if self.test_api:
            cmd.append("--test-api")
        return cmd

    def start(self) -> EmulatorHandle:
        self.root.mkdir(parents=True, exist_ok=True)
        self._config_dir.mkdir(parents=True, exist_ok=True)  # an empty KAGGLE_CONFIG_DIR
        stderr = self._stderr_path.open("wb")
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[2],
            env=_server_env(),
        )
        stderr.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmulatorError(
                    f"emulator exited with code {self.process.returncode} before it was ready:\n"
                    + self.stderr()
                )
            try:
                if httpx.get(f"{self.base_url}/_emulator/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise EmulatorError(f"emulator not ready after {READY_TIMEOUT_S:g}s:\n{self.stderr()}")

    def stderr(self) -> str:
        try:
            return self._stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (it kills its kernels), then kill any kernel it left behind."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._kill_leftover_kernels()

    def crash(self) -> None:
        """SIGKILL the server, as a crash would (kernels keep running until restart or stop)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> EmulatorHandle:
        """Stop and start again on the same port and root (state persists)."""
        self.stop()
        return self.start()

    def _kill_leftover_kernels(self) -> None:
        from orchestrator.emulator.executor import kill_orphaned_session
        from orchestrator.emulator.state import ACTIVE_STATUSES, Store

        store = Store(self.root)
        for kernel in store.all():
            for version in kernel.versions:
                if version.status in ACTIVE_STATUSES:
                    kill_orphaned_session(store, kernel, version)

    # -- test API ----------------------------------------------------------------------
    def _control(self, method: str, path: str, **kwargs) -> dict:
        response = httpx.request(method, f"{self.base_url}/_emulator/{path}", timeout=10, **kwargs)
        if response.status_code >= 400:
            raise EmulatorError(
                f"{method} /_emulator/{path}: {response.status_code} {response.text}"
            )
        return response.json()

    def set_faults(
        self,
        spec: str | None = None,
        *,
        rules: list[FaultRule | dict] | None = None,
        seed: int | None = None,
        append: bool = False,
    ) -> None:
        """Replace (or append to) the fault rules: a spec string or FaultRule/dicts."""
        if spec is not None:
            body = {"spec": spec, "append": append}
        else:
            body = {
                "rules": [r.model_dump() if isinstance(r, FaultRule) else r for r in rules or []],
                "seed": seed,
                "append": append,
            }
        self._control("POST", "faults", json=body)

    def clear_faults(self) -> None:
        self._control("DELETE", "faults")

    def call_counts(self) -> dict[str, int]:
        """Calls per method since start (`SaveKernel.accepted` counts pushes that made a version)."""
        return self._control("GET", "calls")

    def kill_kernel(
        self, owner: str, slug: str, *, as_timeout: bool = False, at_session_s: float | None = None
    ) -> None:
        """Kill the slug's session: ERROR (a crash), or CANCEL_ACKNOWLEDGED if `as_timeout`.

        Now, or when its session has run `at_session_s` seconds (if no session is active,
        the next one pushed to the slug). A timeout is the session limit's kill: SIGKILL at
        once (SIGTERM first only with a positive kill_grace), `Exit code: 137` in the log.
        """
        body = {
            "owner": owner,
            "slug": slug,
            "as_timeout": as_timeout,
            "at_session_s": at_session_s,
        }
        self._control("POST", "kill", json=body)

    def set_gpu_used(self, user: str, seconds: float) -> None:
        self._control("POST", "gpu-used", json={"user": user, "seconds": seconds})

    def force_docker_image(self, image: str | None) -> None:
        """Run every later push on `image` whatever its dockerImage asked for (a retired pin,
        an updated "latest"); None goes back to honouring the push."""
        self._control("POST", "docker-image", json={"image": image})

    def kernel_versions(self, owner: str, slug: str) -> list[dict]:
        """The emulator's stored record of each version of a kernel (pushed_docker_image,
        docker_image, status, ...), read from its state files; [] for an unknown kernel."""
        from orchestrator.emulator.state import Store

        kernel = Store(self.root).get(owner, slug)
        return [version.model_dump() for version in kernel.versions] if kernel else []

    def kernel_record(self, owner: str, slug: str) -> dict | None:
        """The emulator's stored record of a kernel (visible_at: the end of its
        read-after-write lag, epoch seconds; versions; ...), or None if unknown."""
        from orchestrator.emulator.state import Store

        kernel = Store(self.root).get(owner, slug)
        return kernel.model_dump() if kernel else None

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def start_emulator(
    root: Path,
    users: dict[str, str] | None = None,
    *,
    test_api: bool = True,
    **options,
) -> Iterator[EmulatorHandle]:
    """A running emulator (subprocess) for the duration of the block.

    `users` defaults to alice and bob with random keys. `options` (see _FLAGS; TEST_TIMINGS
    are the defaults): max_session, gpu_slots, cpu_slots, tpu_slots, weekly_gpu_quota,
    queue_delay, gpu_queue_delay, boot_time, kill_grace, read_lag ("MIN:MAX"), seed,
    rate_limit ("N/S" or "off"), image_lacks, known_images (str or list),
    honest_exit_status, legacy_mounts (bools), dataset_processing (seconds), faults.
    """
    if users is None:
        users = {"alice": secrets.token_hex(8), "bob": secrets.token_hex(8)}
    handle = EmulatorHandle(Path(root), users, options, test_api=test_api)
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()
