"""Make sure the training libraries are importable before anything imports them.

Kaggle images ship torch; stable-baselines3 and gymnasium are usually there too but
not always at a usable version. Missing ones are pip-installed at pinned versions when
the kernel has internet. Torch is never installed: a wrong wheel costs gigabytes.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence

PINNED_REQUIREMENTS = {
    "stable_baselines3": "stable-baselines3==2.9.2",
    "gymnasium": "gymnasium==1.4.0",
}


class DependencyError(RuntimeError):
    """A required library is missing and cannot be installed here; the message says how to fix it."""


def module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


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


def missing_modules(is_available: Callable[[str], bool] = module_available) -> list[str]:
    if not is_available("torch"):
        raise DependencyError(
            "torch is not importable in this image; use a Kaggle Python image "
            "(torch is preinstalled there) — this kernel never installs torch itself"
        )
    return [name for name in PINNED_REQUIREMENTS if not is_available(name)]


def ensure_dependencies(
    *,
    is_available: Callable[[str], bool] = module_available,
    has_internet: Callable[[], bool] = internet_available,
    install: Callable[[Sequence[str]], None] = pip_install,
) -> list[str]:
    """Install what is missing; returns the requirements installed (empty when all were present)."""
    missing = missing_modules(is_available)
    if not missing:
        return []
    requirements = [PINNED_REQUIREMENTS[name] for name in missing]
    if not has_internet():
        raise DependencyError(
            f"missing {', '.join(missing)} and the kernel has no internet; enable internet in "
            "the kernel settings (enable_internet) or attach a dataset with the wheels "
            f"({' '.join(requirements)}) and pip install them from it"
        )
    try:
        install(requirements)
    except (subprocess.CalledProcessError, OSError) as error:
        raise DependencyError(
            f"pip install {' '.join(requirements)} failed ({error}); check the kernel's internet "
            "access or attach a dataset with the wheels"
        ) from error
    importlib.invalidate_caches()
    still_missing = [name for name in missing if not is_available(name)]
    if still_missing:
        raise DependencyError(f"{', '.join(still_missing)} still not importable after pip install")
    return requirements
