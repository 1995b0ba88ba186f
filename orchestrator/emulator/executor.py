"""Runs each pushed kernel version as a local process, the way a Kaggle batch session would.

One thread per session walks it through NEW_SCRIPT -> QUEUED -> RUNNING -> a terminal
status. The script runs with the current interpreter in its own process group (so a
kill reaches its children), with cwd = its working dir, and its stdout/stderr appended
line by line to `log.jsonl` so the live log stream can follow it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.emulator.state import ACTIVE_STATUSES, Kernel, Store, Version, remove_tree

TIMEOUT_MESSAGE = (
    "Your notebook was stopped because it exceeded the max allowed execution duration "
    "({limit:g} seconds)."
)
KILLED_MESSAGE = "The kernel session was terminated unexpectedly (emulated fault)."
SERVER_DIED_MESSAGE = "The kernel session was lost because the emulator stopped while it ran."


@dataclass
class ExecutorOptions:
    max_session_s: float = 12 * 3600
    queue_delay_s: float = 0.5
    kill_grace_s: float = 5.0
    # NEW_SCRIPT flashes right after a push (as on Kaggle): a share of the queue delay, capped.
    new_script_share: float = 0.3
    new_script_max_s: float = 2.0


@dataclass
class _Session:
    owner: str
    slug: str
    number: int
    gpu: bool
    user: str
    process: subprocess.Popen | None = None
    stop_reason: str | None = None  # "timeout" | "killed" | "shutdown"
    # An emulated kill planned at this many seconds into the session: (seconds, as_timeout).
    planned_kill: tuple[float, bool] | None = None
    stop_requested: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


def notebook_to_script(text: str) -> str:
    """A notebook's code cells joined into one script (Kaggle runs them in order)."""
    cells = json.loads(text).get("cells", [])
    sources = []
    for cell in cells:
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            sources.append("".join(source) if isinstance(source, list) else source)
    return "\n\n".join(sources) + "\n"


def copy_read_only(source: Path, dest: Path) -> None:
    """A private copy (a later write to `source` must not show through), then read-only."""
    if dest.exists():
        remove_tree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, dest, symlinks=False)
    for dirpath, _, filenames in os.walk(dest, topdown=False):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.chmod(dirpath, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def kill_orphaned_session(store: Store, kernel: Kernel, version: Version) -> None:
    """SIGKILL a session left behind by a dead emulator, if its pid still runs its script.

    The check guards against pid reuse: we never kill a process that is not this kernel.
    """
    if version.pid is None:
        return
    script = str(store.script_path(kernel.owner, kernel.slug, version.number))
    try:
        cmdline = Path(f"/proc/{version.pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return
    if script in cmdline:
        _kill_group(version.pid, signal.SIGKILL)


class Executor:
    def __init__(self, store: Store, options: ExecutorOptions):
        self.store = store
        self.options = options
        self._sessions: dict[tuple[str, str, int], _Session] = {}
        self._planned_kills: dict[tuple[str, str], tuple[float, bool]] = {}
        self._lock = threading.Lock()

    # -- queries -----------------------------------------------------------------------
    def active_gpu_sessions(self, user: str) -> int:
        """GPU versions of this user not yet ended (read under the store lock by SaveKernel)."""
        return sum(
            1
            for kernel in self.store.all()
            if kernel.owner == user
            for version in kernel.versions
            if version.gpu and version.run and version.status in ACTIVE_STATUSES
        )

    def running_gpu_seconds(self, user: str) -> float:
        """GPU seconds of sessions still running (billed to the quota when they end)."""
        total = 0.0
        now = time.time()
        for kernel in self.store.all():
            if kernel.owner != user:
                continue
            for version in kernel.versions:
                if version.gpu and version.status == "RUNNING" and version.started_at:
                    total += now - version.started_at
        return total

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, kernel: Kernel, version: Version, script_text: str) -> None:
        script = self.store.script_path(kernel.owner, kernel.slug, version.number)
        script.parent.mkdir(parents=True, exist_ok=True)
        if kernel.kernel_type == "notebook":
            script_text = notebook_to_script(script_text)
        script.write_text(script_text, encoding="utf-8")
        session = _Session(kernel.owner, kernel.slug, version.number, version.gpu, kernel.owner)
        session.planned_kill = self._planned_kills.pop((kernel.owner, kernel.slug), None)
        session.thread = threading.Thread(
            target=self._run, args=(session,), name=f"kernel-{kernel.ref}-v{version.number}"
        )
        with self._lock:
            self._sessions[(kernel.owner, kernel.slug, version.number)] = session
        session.thread.start()

    def kill(
        self, owner: str, slug: str, *, as_timeout: bool = False, at_session_s: float | None = None
    ) -> bool:
        """An emulated crash (ERROR) or forced timeout (CANCEL_ACKNOWLEDGED) of the slug's session.

        Now, or once its session has run `at_session_s` seconds; with `at_session_s` and no
        active session, the next session pushed to the slug gets it. False: nothing to kill.
        """
        with self._lock:
            candidates = [
                s
                for (o, sl, _), s in self._sessions.items()
                if o == owner and sl == slug and s.thread and s.thread.is_alive()
            ]
            if not candidates:
                if at_session_s is None:
                    return False
                self._planned_kills[(owner, slug)] = (at_session_s, as_timeout)
                return True
        session = max(candidates, key=lambda s: s.number)
        if at_session_s is not None:
            session.planned_kill = (at_session_s, as_timeout)
            return True
        session.stop_reason = "timeout" if as_timeout else "killed"
        session.stop_requested.set()
        return True

    def kill_slug(self, owner: str, slug: str) -> None:
        """Hard-kill every session of a slug (it is being deleted) and wait for them."""
        with self._lock:
            sessions = [s for (o, sl, _), s in self._sessions.items() if (o, sl) == (owner, slug)]
        for session in sessions:
            session.stop_reason = session.stop_reason or "killed"
            session.stop_requested.set()
            if session.process is not None:
                _kill_group(session.process.pid, signal.SIGKILL)
        for session in sessions:
            if session.thread:
                session.thread.join(timeout=10)

    def shutdown(self) -> None:
        """Kill every kernel process group; their records stay active and end as ERROR on restart."""
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.stop_reason = "shutdown"
            session.stop_requested.set()
            if session.process is not None:
                _kill_group(session.process.pid, signal.SIGKILL)

    def recover(self) -> None:
        """After a restart: sessions that were active when the emulator died end as ERROR."""
        for kernel in self.store.all():
            for version in kernel.versions:
                if version.status in ACTIVE_STATUSES:
                    kill_orphaned_session(self.store, kernel, version)
                    self._bill_gpu(kernel.owner, version, time.time())
                    self.store.update_version(
                        kernel.owner,
                        kernel.slug,
                        version.number,
                        status="ERROR",
                        failure_message=SERVER_DIED_MESSAGE,
                        ended_at=time.time(),
                    )

    # -- one session -------------------------------------------------------------------
    def _set(self, session: _Session, **fields) -> Version | None:
        return self.store.update_version(session.owner, session.slug, session.number, **fields)

    def _run(self, session: _Session) -> None:
        try:
            self._run_session(session)
        except Exception as exc:  # never leave a session active because of an emulator bug
            self._set(
                session,
                status="ERROR",
                failure_message=f"Emulator failed to run the kernel: {exc}",
                ended_at=time.time(),
            )

    def _wait(self, session: _Session, seconds: float) -> bool:
        """Sleep, unless a stop is requested (then True)."""
        return session.stop_requested.wait(seconds)

    def _run_session(self, session: _Session) -> None:
        delay = self.options.queue_delay_s
        flash = min(delay * self.options.new_script_share, self.options.new_script_max_s)
        if self._wait(session, flash):
            return self._end_before_start(session)
        if self._set(session, status="QUEUED") is None:
            return
        if self._wait(session, delay - flash):
            return self._end_before_start(session)

        kernel = self.store.get(session.owner, session.slug)
        version = kernel.version(session.number) if kernel else None
        if version is None:
            return
        working = self.store.working_dir(session.owner, session.slug, session.number)
        input_dir = self.store.input_dir(session.owner, session.slug, session.number)
        working.mkdir(parents=True, exist_ok=True)
        input_dir.mkdir(parents=True, exist_ok=True)
        self._mount_sources(version.kernel_sources, input_dir)

        env = dict(os.environ)
        for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
            env.pop(name, None)  # a kernel never sees the pusher's credentials
        env.update(
            ORCHESTRATE_WORKING_DIR=str(working),
            ORCHESTRATE_INPUT_DIR=str(input_dir),
            KAGGLE_KERNEL_RUN_TYPE="Batch",
            PYTHONUNBUFFERED="1",
            ORCHESTRATE_EMULATOR_GPU="1" if session.gpu else "0",
        )
        env.pop("KAGGLE_DOCKER_IMAGE", None)  # the version's own image, never the host's
        if version.docker_image:
            env["KAGGLE_DOCKER_IMAGE"] = version.docker_image
        log_path = self.store.log_path(session.owner, session.slug, session.number)
        started = time.time()
        script = self.store.script_path(session.owner, session.slug, session.number)
        process = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=working,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        session.process = process
        self._set(session, status="RUNNING", started_at=started, pid=process.pid)

        log = _LogWriter(log_path, started)
        readers = [
            threading.Thread(target=log.pump, args=(process.stdout, "stdout"), daemon=True),
            threading.Thread(target=log.pump, args=(process.stderr, "stderr"), daemon=True),
        ]
        for reader in readers:
            reader.start()

        limit = version.session_limit_s
        deadline = started + limit
        reason = None  # why we stop it; None when it exits by itself
        while process.poll() is None:
            if session.planned_kill and time.time() - started >= session.planned_kill[0]:
                reason = "timeout" if session.planned_kill[1] else "killed"
                break
            remaining = deadline - time.time()
            if remaining <= 0:
                reason = "timeout"
                break
            if self._wait(session, min(remaining, 0.05)):
                reason = session.stop_reason
                break
        if reason == "timeout":
            self._terminate(process)
        elif reason is not None:
            _kill_group(process.pid, signal.SIGKILL)
        exit_code = process.wait()
        # The session's container is gone, and with it any children left in the group.
        _kill_group(process.pid, signal.SIGKILL)
        for reader in readers:
            reader.join(timeout=5)
        ended = time.time()

        if reason == "shutdown":
            return  # left active on purpose: the restart marks it ERROR
        self._bill_gpu(session.user, version, ended, started)
        if reason == "timeout":
            status, message = "CANCEL_ACKNOWLEDGED", TIMEOUT_MESSAGE.format(limit=limit)
        elif reason == "killed":
            status, message = "ERROR", KILLED_MESSAGE
        elif exit_code == 0:
            status, message = "COMPLETE", None
        else:
            status, message = "ERROR", _exit_message(exit_code, log.last_stderr_line)
        self._set(
            session, status=status, failure_message=message, ended_at=ended, exit_code=exit_code
        )

    def _end_before_start(self, session: _Session) -> None:
        if session.stop_reason == "shutdown":
            return
        status = "CANCEL_ACKNOWLEDGED" if session.stop_reason == "timeout" else "ERROR"
        message = (
            TIMEOUT_MESSAGE.format(limit=0) if status == "CANCEL_ACKNOWLEDGED" else KILLED_MESSAGE
        )
        self._set(session, status=status, failure_message=message, ended_at=time.time())

    def _terminate(self, process: subprocess.Popen) -> None:
        """SIGTERM the group, then SIGKILL after the grace period (Kaggle kills hard)."""
        _kill_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=self.options.kill_grace_s)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid, signal.SIGKILL)

    def _bill_gpu(self, user: str, version: Version, ended: float, started: float | None = None):
        started = started or version.started_at
        if version.gpu and started:
            self.store.add_gpu_seconds(user, max(0.0, ended - started))

    def _mount_sources(self, sources: list[str], input_dir: Path) -> None:
        """Each source's latest output, under notebooks/<owner>/<slug>/ and the legacy <slug>/."""
        for ref in sources:
            owner, _, slug = ref.partition("/")
            parent = self.store.get(owner, slug)
            if parent is None or not parent.versions:
                continue
            finished = [v for v in parent.versions if v.status not in ACTIVE_STATUSES]
            chosen = (finished or parent.versions)[-1]
            output = self.store.working_dir(owner, slug, chosen.number)
            if not output.is_dir():
                output.mkdir(parents=True, exist_ok=True)
            copy_read_only(output, input_dir / "notebooks" / owner / slug)
            copy_read_only(output, input_dir / slug)


def _exit_message(exit_code: int, last_stderr: str | None) -> str:
    if exit_code < 0:
        head = f"Kernel process was killed by signal {-exit_code}"
    else:
        head = f"Kernel process exited with code {exit_code}"
    return f"{head}: {last_stderr}" if last_stderr else head


class _LogWriter:
    """Appends Kaggle-style `{stream_name, time, data}` entries, one JSON line each, flushed."""

    def __init__(self, path: Path, started: float):
        self.started = started
        self.lock = threading.Lock()
        self.last_stderr_line: str | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a", encoding="utf-8")
        self.open_pumps = 2

    def pump(self, pipe, stream_name: str) -> None:
        with pipe:
            for raw in iter(pipe.readline, b""):
                data = raw.decode("utf-8", errors="replace")
                entry = {
                    "stream_name": stream_name,
                    "time": round(time.time() - self.started, 3),
                    "data": data,
                }
                with self.lock:
                    self.file.write(json.dumps(entry) + "\n")
                    self.file.flush()  # the live log stream reads the file
                if stream_name == "stderr" and data.strip():
                    self.last_stderr_line = data.strip()
        with self.lock:
            self.open_pumps -= 1
            if self.open_pumps == 0:
                self.file.close()


def read_log(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Complete log lines from byte `offset`; returns the entries and the new offset."""
    if not path.exists():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1  # a line being written right now waits for the next read
    entries = [json.loads(line) for line in chunk[:end].splitlines() if line.strip()]
    return entries, offset + end
