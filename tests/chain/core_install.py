"""The core install (no `[kernel]` extra) stood in for by an import blocker.

`core_only_env(tmp)` gives env vars under which a Python of this (full) venv cannot find
what the `[kernel]` extra installs, as if it had never been installed there: a
`sitecustomize` on PYTHONPATH puts a meta-path finder first that raises ModuleNotFoundError
for those packages when they would come from this venv's site-packages. A copy elsewhere on
PYTHONPATH (the source of stable-baselines3 a workflow fetches for `chain start`) stays
visible, as it would be on a real core install.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from chain_helpers import REPO_ROOT

# The [kernel] extra (pyproject.toml) and what it brings in, by import name.
KERNEL_EXTRA_MODULES = ("torch", "stable_baselines3", "gymnasium", "starlette", "uvicorn")
# Dev-only, but the kernel imports it when present: hide it too.
ALSO_HIDDEN = ("tensorboard",)

_BLOCKER = '''\
import sys
from importlib.machinery import PathFinder

HIDDEN = {hidden!r}
SITE_PACKAGES = {site_packages!r}


class CoreInstallOnly:
    """Hides the [kernel] extra's packages installed in this venv (tests: a core install)."""

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in HIDDEN:
            return None
        if "." not in name:
            spec = PathFinder.find_spec(name, path, target)
            if spec is not None and not (spec.origin or "").startswith(SITE_PACKAGES):
                return None  # a copy outside the venv: visible
        elif top in sys.modules:
            return None  # its package was found outside the venv
        raise ModuleNotFoundError(f"No module named {{name!r}} (core install)", name=name)


sys.meta_path.insert(0, CoreInstallOnly())
'''


def write_blocker(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    site_packages = sysconfig.get_paths()["purelib"]
    (directory / "sitecustomize.py").write_text(
        _BLOCKER.format(hidden=(*KERNEL_EXTRA_MODULES, *ALSO_HIDDEN), site_packages=site_packages)
    )
    return directory


def core_only_env(directory: Path, *, pythonpath: tuple[str, ...] = ()) -> dict[str, str]:
    """PYTHONPATH for a core-install process of this repository (`pythonpath` goes first)."""
    blocker = write_blocker(directory)
    return {"PYTHONPATH": ":".join([*pythonpath, str(blocker), str(REPO_ROOT)])}
