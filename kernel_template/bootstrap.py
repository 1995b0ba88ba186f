"""Make sure the training libraries are importable before anything imports them.

Nothing is installed unless the user asks (`[kernel] pip_install`, carried into the rendered
script and passed here): Kaggle kernels often have no internet, and an unpinned install can
drag in another torch. stable-baselines3, which Kaggle's image lacks, travels embedded in the
script instead. A module that is still missing stops the kernel with one line naming it and
the fix. Torch is never installed: a wrong wheel costs gigabytes.
"""

from __future__ import annotations

import importlib
import importlib.util
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence

# What the runtime imports (the env's own module comes on top, checked by `orchestrate preflight`).
REQUIRED_MODULES = (
    "torch",
    "numpy",
    "gymnasium",
    "stable_baselines3",
    "cloudpickle",
    "pandas",
    "matplotlib",
    "pydantic",
)


class DependencyError(RuntimeError):
    """A required library is missing and cannot be installed here; the message says how to fix it."""


def module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def internet_available(host: str = "pypi.org", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pip_install(requirements: Sequence[str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-input", *requirements],
        check=True,
    )


def missing_modules(
    is_available: Callable[[str], bool] = module_available,
    required: Sequence[str] = REQUIRED_MODULES,
) -> list[str]:
    if "torch" in required and not is_available("torch"):
        raise DependencyError(
            "torch is not importable in this image; use a Kaggle Python image "
            "(torch is preinstalled there) — this kernel never installs torch itself"
        )
    return [name for name in required if not is_available(name)]


def ensure_dependencies(
    *,
    pip_requirements: Sequence[str] = (),
    is_available: Callable[[str], bool] = module_available,
    has_internet: Callable[[], bool] = internet_available,
    install: Callable[[Sequence[str]], None] = pip_install,
    required: Sequence[str] = REQUIRED_MODULES,
) -> list[str]:
    """Install what the user asked for (only that), then check every required module;
    returns the requirements installed (empty unless `pip_requirements` named some)."""
    requirements = [r for r in pip_requirements if r.strip()]
    if requirements:
        if not has_internet():
            raise DependencyError(
                f"[kernel] pip_install asks for {' '.join(requirements)} but the kernel has no "
                "internet; set [kernel] enable_internet = true, or embed pure-Python code with "
                "[kernel] user_modules instead"
            )
        try:
            install(requirements)
        except (subprocess.CalledProcessError, OSError) as error:
            raise DependencyError(
                f"pip install {' '.join(requirements)} failed ({error}); check the requirement "
                "strings in [kernel] pip_install and the kernel's internet access"
            ) from error
        importlib.invalidate_caches()
    missing = missing_modules(is_available, required)
    if missing:
        raise DependencyError(
            f"module {', '.join(missing)} is not importable in this kernel (not in the image and "
            "not embedded); fix: add it to [kernel] user_modules if it is pure Python, or to "
            "[kernel] pip_install with [kernel] enable_internet = true, then rebuild"
        )
    return requirements
