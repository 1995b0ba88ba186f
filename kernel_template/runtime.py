"""Where this kernel session runs: one object instead of scattered `os.environ` reads.

Like submitit's JobEnvironment: the working and input dirs, when the session started,
how long it may last, which device to train on, and the library versions.
Importing this module loads only the standard library; torch is imported on demand.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernel_template import layout

PROC_DIR = Path("/proc")
# Epoch seconds of the session's start, set by the local emulator (it has no container).
SESSION_START_ENV = "ORCHESTRATE_SESSION_START"
# Set by Kaggle inside every kernel session (e.g. "Batch").
KAGGLE_RUN_TYPE_ENV = "KAGGLE_KERNEL_RUN_TYPE"
# Set by the rendered script: JSON {package: version} of the libraries it embeds.
EMBEDDED_PACKAGES_ENV = "ORCHESTRATE_EMBEDDED_PACKAGES"


def _clock_ticks() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, OSError, ValueError):
        return 100.0


def proc_start_time(pid: str | int = "self", proc: Path = PROC_DIR) -> float:
    """Epoch seconds when process `pid` started, from `<proc>/<pid>/stat` and the boot time
    in `<proc>/stat`; raises OSError/ValueError when /proc cannot say."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        # The command name (field 2) may contain spaces; fields after it are space-separated.
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22 overall: starttime
        boot_time = next(
            int(line.split()[1])
            for line in (proc / "stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (IndexError, StopIteration) as error:
        raise ValueError(f"unexpected format under {proc}: {error!r}") from None
    return boot_time + start_ticks / _clock_ticks()


def process_start_time(proc: Path = PROC_DIR) -> float:
    """Epoch seconds when this process started (from /proc), or now when /proc is unavailable.

    Imports and dependency installs count against the budget, so the clock starts with the
    process, not with our first line of Python.
    """
    try:
        started = proc_start_time("self", proc)
    except (OSError, ValueError):
        return time.time()
    # btime has one-second resolution: never claim a start in the future.
    return min(started, time.time())


def session_start_time(
    *,
    environ: Mapping[str, str] | None = None,
    proc: Path = PROC_DIR,
    session_limit_s: float | None = None,
    warn: Callable[[str], Any] | None = None,
) -> float:
    """When the platform's session clock started, in epoch seconds.

    1. `ORCHESTRATE_SESSION_START` (epoch seconds) when set: the local emulator has no
       container, so it says when its session began. A bad value is ignored with a warning.
    2. On Kaggle (`KAGGLE_KERNEL_RUN_TYPE` set) the clock starts with the container, before
       this script: boot and queue seconds count. The container's PID 1 is the earliest
       process visible in /proc, so its start (or ours, if earlier) is the session start;
       unreadable -> our own start.
    3. Elsewhere (a local run): this process's start.
    """
    environ = os.environ if environ is None else environ
    warn = warn or _warn_stderr
    own = process_start_time(proc)
    raw = environ.get(SESSION_START_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
            if not math.isfinite(value) or value <= 0 or value > time.time() + 60:
                raise ValueError("not a past epoch time")
            return value
        except ValueError:
            warn(
                f"ignoring {SESSION_START_ENV}={raw[:40]!r}: not epoch seconds in the past; "
                "the session clock starts with this process instead"
            )
    if not environ.get(KAGGLE_RUN_TYPE_ENV):
        return own
    try:
        container = proc_start_time(1, proc)
    except (OSError, ValueError) as error:
        warn(f"cannot read the container's start from {proc}/1/stat ({error}); using ours")
        return own
    earliest = min(container, own)
    if session_limit_s is not None and time.time() - earliest > session_limit_s:
        # Past the whole limit already: PID 1 cannot be this session's container.
        warn(
            f"{proc}/1 started {time.time() - earliest:.0f} s ago, more than the session limit; "
            "using this process's start"
        )
        return own
    return earliest


def _warn_stderr(message: str) -> None:
    print(f"orchestrate: warning: {message}", file=sys.stderr, flush=True)


def choose_device(requested: str, policy: str) -> str:
    """ "auto" trains MLP policies on the CPU (SB3's advice: the GPU is slower for them)
    and CNN/multi-input policies on CUDA when it is available."""
    if requested == "cpu":
        return "cpu"
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cuda":
        if not has_cuda:
            raise RuntimeError(
                "device 'cuda' was requested but no GPU is visible; enable a GPU accelerator "
                "in the kernel settings or set device to 'auto'"
            )
        return "cuda"
    return "cuda" if has_cuda and policy != "MlpPolicy" else "cpu"


# Kaggle names the image a session runs on here (name@sha256:digest); a chain pins it.
DOCKER_IMAGE_ENV = "KAGGLE_DOCKER_IMAGE"


def library_versions() -> dict[str, str]:
    """Python and library versions, plus `docker_image` when the platform names its image.

    Pickled checkpoints depend on these, so the orchestrator compares them across a chain.
    """
    versions = {"python": platform.python_version()}
    for name in ("numpy", "torch", "stable_baselines3", "gymnasium", "pandas"):
        try:
            module = __import__(name)
            versions[name] = str(getattr(module, "__version__", "unknown"))
        except ImportError:
            continue
    image = os.environ.get(DOCKER_IMAGE_ENV, "").strip()
    if image:
        versions["docker_image"] = image
    return versions


def embedded_packages(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{package: version} the rendered script embedded (and imports first), from
    `ORCHESTRATE_EMBEDDED_PACKAGES`; empty when run from a checkout."""
    raw = (os.environ if environ is None else environ).get(EMBEDDED_PACKAGES_ENV, "")
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(name): str(version) for name, version in sorted(data.items())}


@dataclass
class RuntimeEnvironment:
    working_dir: Path
    input_dir: Path
    session_limit_s: float
    session_start: float = field(default_factory=process_start_time)
    device: str = "cpu"

    @classmethod
    def discover(
        cls,
        *,
        working_dir: str | Path | None,
        input_dir: str | Path | None,
        session_limit_s: float,
        environ: Mapping[str, str] | None = None,
        proc: Path = PROC_DIR,
        warn: Callable[[str], Any] | None = None,
    ) -> RuntimeEnvironment:
        """Explicit arguments first, then ORCHESTRATE_* variables, then Kaggle's paths.
        The session start comes from `session_start_time` (see there)."""
        working = (
            working_dir or os.environ.get(layout.WORKING_DIR_ENV) or layout.DEFAULT_WORKING_DIR
        )
        inputs = input_dir or os.environ.get(layout.INPUT_DIR_ENV) or layout.DEFAULT_INPUT_DIR
        return cls(
            working_dir=Path(working).resolve(),
            input_dir=Path(inputs).resolve(),
            session_limit_s=session_limit_s,
            session_start=session_start_time(
                environ=environ, proc=proc, session_limit_s=session_limit_s, warn=warn
            ),
        )

    @property
    def deadline(self) -> float:
        """Epoch seconds when the platform ends the session."""
        return self.session_start + self.session_limit_s

    def elapsed(self) -> float:
        return time.time() - self.session_start

    def seconds_left(self) -> float:
        return self.deadline - time.time()

    def versions(self) -> dict[str, str]:
        return library_versions()

    def embedded(self) -> dict[str, str]:
        return embedded_packages()
