"""What Kaggle's Python image has installed, and which modules a run needs beyond it.

The list is `data/kaggle-image-packages.txt`: a pip freeze of Kaggle's CPU image from the
Kaggle/docker-python repository, dated in its header. Preflight uses it to name, before a
push, every module the kernel would import that is neither in the image nor embedded.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from collections.abc import Iterable
from pathlib import Path

DATA_FILE = Path(__file__).resolve().parent / "data" / "kaggle-image-packages.txt"

# Import names whose distribution is named otherwise, for modules not installed here
# (installed ones are mapped by importlib.metadata.packages_distributions()).
IMPORT_ALIASES = {
    "yaml": "pyyaml",
    "cv2": "opencv-python",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "PIL": "pillow",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
    "attr": "attrs",
    "google": "protobuf",
    "jwt": "pyjwt",
    "stable_baselines3": "stable-baselines3",
    "sb3_contrib": "sb3-contrib",
    "ale_py": "ale-py",
    "slugify": "python-slugify",
    "dotenv": "python-dotenv",
}
_GUARDS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def normalize(name: str) -> str:
    """PEP 503 normal form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def image_packages() -> dict[str, str]:
    """{normalized distribution name: version} of Kaggle's image."""
    packages: dict[str, str] = {}
    for line in DATA_FILE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, version = line.partition("==")
        packages[normalize(name)] = version.strip()
    return packages


def image_source() -> str:
    """The data file's header: where the list comes from and when."""
    lines = DATA_FILE.read_text(encoding="utf-8").splitlines()
    return "\n".join(line.lstrip("# ") for line in lines if line.startswith("#"))


@functools.cache
def _installed_distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def distributions_for(module: str) -> list[str]:
    """Normalized distribution names that may provide top-level `module`."""
    found = [normalize(d) for d in _installed_distributions().get(module, [])]
    if module in IMPORT_ALIASES:
        found.append(normalize(IMPORT_ALIASES[module]))
    found.append(normalize(module))
    return list(dict.fromkeys(found))


def in_image(module: str) -> bool:
    packages = image_packages()
    return any(name in packages for name in distributions_for(module))


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside a `try` whose handlers catch ImportError (an optional import)."""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                names = handler.type
                kinds = names.elts if isinstance(names, ast.Tuple) else [names]
                if handler.type is None or any(
                    isinstance(k, ast.Name) and k.id in _GUARDS for k in kinds
                ):
                    return True
        child, parent = parent, parents.get(parent)
    return False


def module_imports(source: str | bytes, filename: str = "<module>") -> set[str]:
    """Top-level names of the absolute imports in `source`, leaving out optional ones
    (inside `try: ... except ImportError`)."""
    tree = ast.parse(source, filename=filename)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if not _guarded(node, parents):
            found.update(name.split(".")[0] for name in names)
    return found


def third_party(modules: Iterable[str], local: Iterable[str] = ()) -> list[str]:
    """The modules that are neither the standard library's nor in `local`, sorted."""
    skip = set(local) | set(sys.stdlib_module_names) | {"__future__"}
    return sorted(m for m in set(modules) if m and m not in skip)


def missing_from_image(
    modules: Iterable[str], *, embedded: Iterable[str] = (), local: Iterable[str] = ()
) -> list[str]:
    """The modules a kernel needs that Kaggle's image does not have and the kernel does not carry."""
    return [m for m in third_party(modules, [*local, *embedded]) if not in_image(m)]
