"""Where this kernel session runs: one object instead of scattered `os.environ` reads.

Like submitit's JobEnvironment: the working and input dirs, when the session started,
how long it may last, which device to train on, and the library versions.
Importing this module loads only the standard library; torch is imported on demand.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from kernel_template import layout


def process_start_time() -> float:
    """Epoch seconds when this process started (from /proc), or now when /proc is unavailable.

    The platform's session clock starts with the process, not with our first line of
    Python, so imports and dependency installs count against the budget.
    """
    try:
        stat = Path("/proc/self/stat").read_text()
        # The command name (field 2) may contain spaces; fields after it are space-separated.
        fields_after_name = stat.rsplit(")", 1)[1].split()
        start_ticks = int(fields_after_name[19])  # field 22 overall: starttime
        boot_time = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        started = boot_time + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()
    # btime has one-second resolution: never claim a start in the future.
    return min(started, time.time())


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
    ) -> RuntimeEnvironment:
        """Explicit arguments first, then ORCHESTRATE_* variables, then Kaggle's paths."""
        working = (
            working_dir or os.environ.get(layout.WORKING_DIR_ENV) or layout.DEFAULT_WORKING_DIR
        )
        inputs = input_dir or os.environ.get(layout.INPUT_DIR_ENV) or layout.DEFAULT_INPUT_DIR
        return cls(
            working_dir=Path(working).resolve(),
            input_dir=Path(inputs).resolve(),
            session_limit_s=session_limit_s,
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
