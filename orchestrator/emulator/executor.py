"""Runs each pushed kernel version as a local process, the way a Kaggle batch session would.

One thread per session walks it through NEW_SCRIPT -> QUEUED -> RUNNING -> a terminal
status. The script runs with the current interpreter in its own process group (so a
kill reaches its children), with cwd = its working dir, and its stdout/stderr appended
line by line to `log.jsonl` so the live log stream can follow it.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import site
import stat
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.capacity import SESSION_LIMIT_S
from orchestrator.emulator.state import (
    ACTIVE_STATUSES,
    Kernel,
    Store,
    Version,
    remove_tree,
)
from orchestrator.kaggle.models import TERMINAL_STATUSES

TIMEOUT_MESSAGE = (
    "Your notebook was stopped because it exceeded the max allowed execution duration "
    "({limit:g} seconds)."
)
KILLED_MESSAGE = "The kernel session was terminated unexpectedly (emulated fault)."
SERVER_DIED_MESSAGE = "The kernel session was lost because the emulator stopped while it ran."
# Files Kaggle's notebook runner adds to every session's outputs.
RUNNER_FILES = ("__results__.html", "__output__.json", "custom.css")
# A proxy nobody listens on (the discard port): with internet off, nothing gets out.
CLOSED_PROXY = "http://127.0.0.1:9"

SITECUSTOMIZE = '''"""Written by the Kaggle emulator: Kaggle's image lacks some packages the host has.

A top-level module named in ORCHESTRATE_EMULATOR_IMAGE_LACKS is looked up everywhere on
sys.path except the host interpreter's site-packages (ORCHESTRATE_EMULATOR_HOST_SITE):
importing it from there fails as on Kaggle, while a copy the kernel brings imports fine.
"""

import os as _os
import sys as _sys
from importlib.machinery import PathFinder as _PathFinder


def _install():
    lacks = frozenset(
        filter(None, _os.environ.get("ORCHESTRATE_EMULATOR_IMAGE_LACKS", "").split(","))
    )
    host = tuple(
        _os.path.realpath(p)
        for p in _os.environ.get("ORCHESTRATE_EMULATOR_HOST_SITE", "").split(_os.pathsep)
        if p
    )
    if not lacks or not host:
        return

    def in_host(entry):
        real = _os.path.realpath(entry or _os.getcwd())
        return any(real == h or real.startswith(h + _os.sep) for h in host)

    class ImageFinder(_PathFinder):
        """sys.path's finder, blind to the host's copy of what the image lacks."""

        @classmethod
        def find_spec(cls, fullname, path=None, target=None):
            if path is None and fullname in lacks:
                path = [entry for entry in _sys.path if not in_host(entry)]
            return _PathFinder.find_spec(fullname, path, target)

    finders = _sys.meta_path
    if _PathFinder in finders:
        finders[finders.index(_PathFinder)] = ImageFinder
    else:
        finders.append(ImageFinder)
    for name in list(_sys.modules):  # nothing the image lacks may be imported already
        if name.partition(".")[0] in lacks:
            del _sys.modules[name]


_install()
del _install
'''


def host_site_dirs() -> list[str]:
    """The host interpreter's site-packages directories."""
    dirs = set(site.getsitepackages())
    with contextlib.suppress(Exception):
        dirs.add(site.getusersitepackages())
    for key in ("purelib", "platlib"):
        with contextlib.suppress(KeyError):
            dirs.add(sysconfig.get_paths()[key])
    return sorted(dirs)


def image_lacks_modules(distributions: list[str]) -> list[str]:
    """Top-level module names of the distributions the image lacks (as installed here)."""
    from importlib.metadata import packages_distributions

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    wanted = {norm(d) for d in distributions if d.strip()}
    modules = {
        module
        for module, dists in packages_distributions().items()
        if module.isidentifier() and any(norm(d) in wanted for d in dists)
    }
    modules |= {d.replace("-", "_") for d in wanted}  # the usual name when not installed here
    return sorted(modules)


def write_runner_files(working: Path, log_path: Path, session, exit_code: int | None) -> None:
    """The notebook runner's own outputs, next to the script's."""
    entries, _ = read_log(log_path)
    body = "".join(html.escape(e.get("data", "")) for e in entries)
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(session.slug)}</title>"
        "<link rel='stylesheet' href='custom.css'></head>"
        f"<body><pre>{body}</pre></body></html>\n"
    )
    output = {
        "cells": [],
        "metadata": {"kaggle": {"isInternetEnabled": None}, "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 4,
        "exit_code": exit_code,
    }
    with contextlib.suppress(OSError):
        working.mkdir(parents=True, exist_ok=True)
        (working / "__results__.html").write_text(page, encoding="utf-8")
        (working / "__output__.json").write_text(json.dumps(output), encoding="utf-8")
        (working / "custom.css").write_text("pre { white-space: pre-wrap; }\n", encoding="utf-8")


@dataclass
class ExecutorOptions:
    max_session_s: float = SESSION_LIMIT_S
    queue_delay_s: float = 60.0
    gpu_queue_delay_s: float = 300.0
    kill_grace_s: float = 0.0
    boot_time_s: float = 20.0
    honest_exit_status: bool = False
    legacy_mounts: bool = False
    image_lacks_modules: tuple[str, ...] = ()
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


def session_kind(version: Version) -> str:
    return "gpu" if version.gpu else "tpu" if version.tpu else "cpu"


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
        self.datasets = None  # DatasetsService, set by the app: where dataset sources come from
        # sitecustomize.py that hides from kernels the host packages Kaggle's image lacks
        self.image_dir = store.root / "image-runtime"
        self.image_dir.mkdir(parents=True, exist_ok=True)
        (self.image_dir / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")

    # -- queries -----------------------------------------------------------------------
    def active_gpu_sessions(self, user: str) -> int:
        """GPU versions of this user not yet ended (read under the store lock by SaveKernel)."""
        return self.active_sessions(user, "gpu")

    def active_sessions(self, user: str, kind: str) -> int:
        """Versions of this user on `kind` ("gpu", "tpu" or "cpu") not yet ended."""
        return sum(
            1
            for kernel in self.store.all()
            if kernel.owner == user
            for version in kernel.versions
            if version.run and version.status in ACTIVE_STATUSES and session_kind(version) == kind
        )

    def running_gpu_seconds(self, user: str, kind: str = "gpu") -> float:
        """GPU (or `kind`) seconds of sessions still running (billed when they end)."""
        total = 0.0
        now = time.time()
        for kernel in self.store.all():
            if kernel.owner != user:
                continue
            for version in kernel.versions:
                if (
                    session_kind(version) == kind
                    and version.status == "RUNNING"
                    and version.started_at
                ):
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
        delay = self.options.gpu_queue_delay_s if session.gpu else self.options.queue_delay_s
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
        version_dir = self.store.version_dir(session.owner, session.slug, session.number)
        working = self.store.working_dir(session.owner, session.slug, session.number)
        input_dir = self.store.input_dir(session.owner, session.slug, session.number)
        working.mkdir(parents=True, exist_ok=True)
        input_dir.mkdir(parents=True, exist_ok=True)
        # The container starts: the session clock (limit, GPU billing, log times) runs from here.
        started = time.time()
        self._set(session, status="RUNNING", started_at=started)
        self._mount_sources(version.kernel_sources, input_dir)
        self._mount_datasets(version.dataset_sources, input_dir, session.owner)
        env = self._kernel_env(session, version, version_dir, working, input_dir, started)
        log_path = self.store.log_path(session.owner, session.slug, session.number)
        log = _LogWriter(log_path, started)
        limit = version.session_limit_s
        deadline = started + limit

        # Boot: the script starts boot_time after the container, unless the session ends first.
        reason = self._watch(session, started, deadline, started + self.options.boot_time_s)
        process = None
        exit_code = None
        readers: list[threading.Thread] = []
        if reason is None:
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
            self._set(session, pid=process.pid)
            readers = [
                threading.Thread(target=log.pump, args=(process.stdout, "stdout"), daemon=True),
                threading.Thread(target=log.pump, args=(process.stderr, "stderr"), daemon=True),
            ]
            for reader in readers:
                reader.start()
            reason = self._watch(session, started, deadline, None, process)
            if reason == "timeout":
                self._terminate(process)
            elif reason is not None:
                _kill_group(process.pid, signal.SIGKILL)
            exit_code = process.wait()
            # The session's container is gone, and with it any children left in the group.
            _kill_group(process.pid, signal.SIGKILL)
            for reader in readers:
                reader.join(timeout=5)
        else:
            log.close()
        ended = time.time()

        if reason == "shutdown":
            return  # left active on purpose: the restart marks it ERROR
        if reason == "timeout":
            # Kaggle's log ends with the runner's note of the SIGKILL.
            log.append("stderr", "Exit code: 137", ended)
            exit_code = -signal.SIGKILL if exit_code is None else exit_code
        self._bill_gpu(session.user, version, ended, started)
        write_runner_files(working, log_path, session, exit_code)
        if reason == "timeout":
            status, message = "CANCEL_ACKNOWLEDGED", TIMEOUT_MESSAGE.format(limit=limit)
        elif reason == "killed":
            status, message = "ERROR", KILLED_MESSAGE
        elif exit_code == 0 or not self.options.honest_exit_status:
            # Kaggle's runner reports a script that crashed as COMPLETE: the traceback is
            # only in the log.
            status, message = "COMPLETE", None
        else:
            status, message = "ERROR", _exit_message(exit_code, log.last_stderr_line)
        self._set(
            session, status=status, failure_message=message, ended_at=ended, exit_code=exit_code
        )

    def _watch(
        self,
        session: _Session,
        started: float,
        deadline: float,
        until: float | None,
        process: subprocess.Popen | None = None,
    ) -> str | None:
        """Wait until `until` (or the process exits); why the session must stop, else None."""
        while process is None or process.poll() is None:
            now = time.time()
            if until is not None and now >= until:
                return None
            if session.planned_kill and now - started >= session.planned_kill[0]:
                return "timeout" if session.planned_kill[1] else "killed"
            remaining = deadline - now
            if remaining <= 0:
                return "timeout"
            step = min(remaining, 0.05)
            if until is not None:
                step = min(step, max(until - now, 0.0))
            if self._wait(session, step):
                return session.stop_reason
        return None

    def _kernel_env(
        self,
        session: _Session,
        version: Version,
        version_dir: Path,
        working: Path,
        input_dir: Path,
        started: float,
    ) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
            env.pop(name, None)  # a kernel never sees the pusher's credentials
        for name in ("PIP_USER", "PIP_PREFIX", "PIP_ROOT", "PYTHONUSERBASE"):
            env.pop(name, None)  # nothing may point pip at the host's environment
        pip_target = version_dir / "pip-target"
        pip_target.mkdir(parents=True, exist_ok=True)
        python_path = [str(self.image_dir), str(pip_target)]
        if env.get("PYTHONPATH"):
            python_path.append(env["PYTHONPATH"])
        env.update(
            ORCHESTRATE_WORKING_DIR=str(working),
            ORCHESTRATE_INPUT_DIR=str(input_dir),
            ORCHESTRATE_SESSION_START=repr(started),
            KAGGLE_KERNEL_RUN_TYPE="Batch",
            PYTHONUNBUFFERED="1",
            ORCHESTRATE_EMULATOR_GPU="1" if session.gpu else "0",
            PYTHONPATH=os.pathsep.join(python_path),
            ORCHESTRATE_EMULATOR_IMAGE_LACKS=",".join(self.options.image_lacks_modules),
            ORCHESTRATE_EMULATOR_HOST_SITE=os.pathsep.join(host_site_dirs()),
            # pip installs into the session, never into the host interpreter.
            PIP_TARGET=str(pip_target),
            PIP_DISABLE_PIP_VERSION_CHECK="1",
        )
        if not version.internet:
            # No internet: pip has no index, no links, and a proxy nobody listens on.
            env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS="", PIP_RETRIES="0", PIP_TIMEOUT="2")
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                env[name] = CLOSED_PROXY
            env["NO_PROXY"] = env["no_proxy"] = ""
        env.pop("KAGGLE_DOCKER_IMAGE", None)  # the version's own image, never the host's
        if version.docker_image:
            env["KAGGLE_DOCKER_IMAGE"] = version.docker_image
        return env

    def _end_before_start(self, session: _Session) -> None:
        if session.stop_reason == "shutdown":
            return
        status = "CANCEL_ACKNOWLEDGED" if session.stop_reason == "timeout" else "ERROR"
        message = (
            TIMEOUT_MESSAGE.format(limit=0) if status == "CANCEL_ACKNOWLEDGED" else KILLED_MESSAGE
        )
        self._set(session, status=status, failure_message=message, ended_at=time.time())

    def _terminate(self, process: subprocess.Popen) -> None:
        """Kaggle kills at the limit: SIGKILL at once, or SIGTERM first with a positive grace."""
        if self.options.kill_grace_s <= 0:
            _kill_group(process.pid, signal.SIGKILL)
            return
        _kill_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=self.options.kill_grace_s)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid, signal.SIGKILL)

    def _bill_gpu(self, user: str, version: Version, ended: float, started: float | None = None):
        started = started or version.started_at
        if version.gpu and started:
            self.store.add_gpu_seconds(user, max(0.0, ended - started))
        elif session_kind(version) == "tpu" and started:  # Kaggle's TPU quota is separate
            self.store.add_tpu_seconds(user, max(0.0, ended - started))

    def _mount_sources(self, sources: list[str], input_dir: Path) -> None:
        """Each source's latest finished output under notebooks/<owner>/<slug>/ (and the
        legacy <slug>/ with legacy_mounts). A source with no finished run mounts nothing."""
        for ref in sources:
            owner, _, slug = ref.partition("/")
            parent = self.store.get(owner, slug)
            if parent is None:
                continue
            finished = [v for v in parent.versions if v.run and v.status in TERMINAL_STATUSES]
            if not finished:
                continue
            output = self.store.working_dir(owner, slug, finished[-1].number)
            if not output.is_dir():
                continue
            copy_read_only(output, input_dir / "notebooks" / owner / slug)
            if self.options.legacy_mounts:
                copy_read_only(output, input_dir / slug)

    def _mount_datasets(self, sources: list[str], input_dir: Path, viewer: str) -> None:
        """Each ready dataset under datasets/<owner>/<slug>/ (and the legacy <slug>/ with
        legacy_mounts). One still processing, or not the viewer's to see, mounts nothing."""
        for ref in sources:
            files = self.datasets.ready_files(ref, viewer) if self.datasets else None
            if files is None or not files.is_dir():
                continue
            owner, _, slug = ref.partition("/")
            slug = slug.split("/")[0]
            copy_read_only(files, input_dir / "datasets" / owner / slug)
            if self.options.legacy_mounts:
                copy_read_only(files, input_dir / slug)


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
        self.path = path
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

    def close(self) -> None:
        """No process ever ran (the session ended during boot)."""
        with self.lock:
            self.open_pumps = 0
            self.file.close()

    def append(self, stream_name: str, data: str, at: float) -> None:
        """One more entry once the pumps are done (the file is reopened)."""
        entry = {"stream_name": stream_name, "time": round(at - self.started, 3), "data": data}
        with self.lock, self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


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
