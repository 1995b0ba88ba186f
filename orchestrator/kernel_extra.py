"""The `[kernel]` extra: what running kernels on this machine needs, and whether it is here.

The core install only orchestrates (chain step, status, pull-artifacts, report): kernels
train on Kaggle. Rendering a new runtime (stable-baselines3's source goes into every
kernel), preflight's env and model rehearsal, the emulator and `make demo` need the extra.
Checked with `find_spec`, which locates a package without importing it (torch takes seconds).
"""

from __future__ import annotations

import importlib.util

KERNEL_EXTRA_HINT = "pip install 'kaggle-orchestrate[kernel]'"
# What the kernel imports to train (import name -> distribution).
TRAINING_MODULES = {
    "torch": "torch",
    "gymnasium": "gymnasium",
    "stable_baselines3": "stable-baselines3",
}
# What the emulator serves with.
EMULATOR_MODULES = {"starlette": "starlette", "uvicorn": "uvicorn"}


def is_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module whose __spec__ is None
        return False


def missing(modules: dict[str, str]) -> list[str]:
    """The distributions among `modules` this install lacks."""
    return [dist for name, dist in modules.items() if not is_installed(name)]


def require(modules: dict[str, str], what: str) -> None:
    """UserError (exit 2) naming what is missing, for a command that needs the extra."""
    from .errors import UserError

    lacking = missing(modules)
    if lacking:
        raise UserError(
            f"{what} needs {', '.join(lacking)}, not installed here; {KERNEL_EXTRA_HINT}"
        )
