"""Render a kernel folder: kernel-metadata.json plus one self-contained script.

The script carries `kernel_template`, the user's own modules, the pure-Python libraries
Kaggle's image lacks (`EMBEDDED_PACKAGES`: stable-baselines3, taken from this machine's
install) and the run config as a base64 zip. At start it unpacks them under /tmp (never
/kaggle/working, which is the output), puts them first on sys.path, checks that the
embedded copies are the ones imported, logs which kernel_template it imported and runs it.
No internet is needed; `[kernel] pip_install` is the only thing ever pip-installed. Same
input, same bytes: the zip has fixed timestamps and a sorted file order.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kernel_template
from kernel_template.config import RunConfig

from .errors import UserError
from .kernel_extra import KERNEL_EXTRA_HINT
from .settings import (
    MIN_TITLE_LENGTH,
    Settings,
    check_slug,
    is_gpu_shape,
    is_tpu_shape,
    retired_shape_warning,
)

METADATA_FILE = "kernel-metadata.json"
RUNTIME_PACKAGE = "kernel_template"
SELFCHECK_FLAG = "--orchestrate-selfcheck"
IMPORT_LOG_PREFIX = "orchestrate: kernel_template imported from "
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# Pure-Python packages the kernel needs and Kaggle's image lacks: import name -> distribution.
EMBEDDED_PACKAGES = {"stable_baselines3": "stable-baselines3"}
_SKIPPED_DIRS = {"__pycache__", "tests", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


@dataclass(frozen=True)
class RuntimeBundle:
    """What a kernel runs besides its run config: kernel_template, the embedded packages and
    the user modules as one deterministic zip, and what the kernel pip-installs. A chain
    renders it once, at `chain start`, so every segment runs the same code (and a stepper
    without stable-baselines3 installed can still push segments)."""

    data: bytes
    user_modules: tuple[str, ...] = ()  # top-level import names of the user modules
    embedded_packages: dict[str, str] = field(default_factory=dict)  # import name -> version
    pip_install: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def files(self) -> tuple[str, ...]:
        with zipfile.ZipFile(io.BytesIO(self.data)) as archive:
            return tuple(sorted(archive.namelist()))


@dataclass(frozen=True)
class KernelFolder:
    path: Path
    metadata: dict[str, Any]
    script_path: Path
    bundle_sha256: str = ""
    config_hash: str = ""
    embedded_files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    embedded_packages: dict[str, str] = field(default_factory=dict)  # import name -> version
    pip_install: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return self.metadata["id"]


def title_from_slug(slug: str) -> str:
    return " ".join(word.capitalize() for word in slug.split("-"))


def title_for_slug(title: str | None, slug: str, *, strict: bool = True) -> str:
    """A title that slugifies to `slug`, as Kaggle expects (the URL is derived from the title).

    A configured title that names a prefix of the slug (a segment `run-s2` of title "Run")
    gets the rest of the slug appended. A title that does not fit is an error for the slug it
    was configured with (`strict`); for a derived slug (a chain segment, a quick test) the
    title is made from the slug instead.
    """
    from slugify import slugify

    if not title:
        return title_from_slug(slug)
    base = slugify(title)
    if base == slug:
        return title
    if slug.startswith(base + "-"):
        return f"{title} {slug[len(base) + 1 :].replace('-', ' ')}"
    if not strict:
        return title_from_slug(slug)
    raise UserError(
        f"title {title!r} slugifies to {base!r}, not to the slug {slug!r}; "
        "change [kernel] title (or --title) to match the slug, or drop it"
    )


def _check_owner_slash(kind: str, values: list[str], parts: tuple[int, ...]) -> None:
    for value in values:
        pieces = value.split("/")
        if len(pieces) not in parts or not all(pieces):
            shape = {"dataset": "owner/dataset-slug", "kernel": "owner/kernel-slug"}.get(
                kind, "owner/model-slug/framework/instance-slug/version"
            )
            raise UserError(
                f"{kind} source {value!r} must read {shape}; fix [kernel] {kind}_sources"
            )
        if kind == "kernel" and len(pieces[1]) < 5:
            raise UserError(f"kernel source {value!r}: a kernel slug has at least five characters")
        if kind == "model" and not pieces[4].isdigit():
            raise UserError(f"model source {value!r}: the version (last part) must be a number")


def kernel_metadata(
    settings: Settings, *, owner: str, slug: str, kernel_sources: tuple[str, ...] | list[str] = ()
) -> dict[str, Any]:
    """kernel-metadata.json as `kaggle kernels push` reads it; raises UserError as it would."""
    check_slug(slug, error=UserError)
    kernel = settings.kernel
    # Strict only for the slug the title was configured with; segments get titles of their own.
    title = title_for_slug(kernel.title, slug, strict=kernel.slug in (None, slug))
    if len(title) < MIN_TITLE_LENGTH:
        raise UserError(
            f"title {title!r} is shorter than {MIN_TITLE_LENGTH} characters; lengthen it"
        )
    sources = list(dict.fromkeys([*kernel.kernel_sources, *kernel_sources]))
    _check_owner_slash("dataset", kernel.dataset_sources, (2, 3))
    _check_owner_slash("kernel", sources, (2,))
    _check_owner_slash("model", kernel.model_sources, (5,))
    shape = kernel.machine_shape
    metadata: dict[str, Any] = {
        "id": f"{owner}/{slug}",
        "title": title,
        "code_file": f"{slug}.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": kernel.is_private,
        "enable_gpu": is_gpu_shape(shape),
        "enable_tpu": is_tpu_shape(shape),
        "enable_internet": kernel.enable_internet,
        "dataset_sources": list(kernel.dataset_sources),
        "competition_sources": [],
        "kernel_sources": sources,
        "model_sources": list(kernel.model_sources),
        "keywords": list(kernel.keywords),
    }
    if shape:
        metadata["machine_shape"] = shape
    if kernel.docker_image_pinning_type:
        metadata["docker_image_pinning_type"] = kernel.docker_image_pinning_type
    if kernel.docker_image:  # `kaggle kernels push` reads this key into SaveKernel's dockerImage
        metadata["docker_image"] = kernel.docker_image
    return metadata


# ---------------------------------------------------------------------------- the bundle


def _package_files(root: Path, arc_prefix: str, *, python_only: bool) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in _SKIPPED_DIRS or part.startswith(".") for part in relative.parts):
            continue
        if not path.is_file() or path.suffix in (".pyc", ".pyo"):
            continue
        if python_only and path.suffix != ".py":
            continue
        files[f"{arc_prefix}/{relative.as_posix()}"] = path.read_bytes()
    return files


def runtime_files() -> dict[str, bytes]:
    """Every .py file of kernel_template (its tests excluded), keyed by archive path."""
    root = Path(kernel_template.__file__).resolve().parent
    return _package_files(root, RUNTIME_PACKAGE, python_only=True)


def embedded_package_files(name: str) -> tuple[dict[str, bytes], str]:
    """(archive files, version) of an installed pure-Python package: its .py files and
    package data (e.g. stable_baselines3/version.txt), no bytecode."""
    try:
        spec = importlib.util.find_spec(name)
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"{name} is not installed here, and the kernel must carry it (Kaggle's image lacks it); "
            f"{KERNEL_EXTRA_HINT} in this environment"
        )
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    files = _package_files(root, name, python_only=False)
    if any(path.endswith((".so", ".pyd", ".dylib")) for path in files):
        raise UserError(f"{name} has compiled extensions; it cannot be embedded as source")
    try:
        version = importlib.metadata.version(EMBEDDED_PACKAGES.get(name, name))
    except importlib.metadata.PackageNotFoundError:
        version = (
            (root / "version.txt").read_text().strip()
            if (root / "version.txt").is_file()
            else "unknown"
        )
    return files, version


def embedded_packages_files() -> tuple[dict[str, bytes], dict[str, str]]:
    files: dict[str, bytes] = {}
    versions: dict[str, str] = {}
    for name in sorted(EMBEDDED_PACKAGES):
        package_files, versions[name] = embedded_package_files(name)
        files.update(package_files)
    return files, versions


def _locate_user_module(entry: str, project_dir: Path) -> tuple[str, Path]:
    """(top-level import name, file or package dir) for a `user_modules` entry."""
    if "/" in entry or entry.endswith(".py"):
        path = (project_dir / entry).resolve()
        name = path.stem if path.suffix == ".py" else path.name
    else:
        name = entry.split(".")[0]
        if not all(part.isidentifier() for part in entry.split(".")):
            raise UserError(
                f"user_modules entry {entry!r} is not a module name; write e.g. 'myenvs'"
            )
        path = next(
            (
                candidate
                for base in (project_dir, project_dir / "src")
                for candidate in (base / name, base / f"{name}.py")
                if candidate.exists()
            ),
            None,
        )
        if path is None:
            spec = importlib.util.find_spec(name)
            origin = spec.origin if spec else None
            if spec and spec.submodule_search_locations:
                path = Path(next(iter(spec.submodule_search_locations)))
            elif origin and origin.endswith(".py"):
                path = Path(origin)
    if path is None or not path.exists():
        raise UserError(
            f"user module {entry!r} not found in {project_dir} (or src/, or installed); "
            "fix [kernel] user_modules"
        )
    if name == RUNTIME_PACKAGE or name in EMBEDDED_PACKAGES:
        raise UserError(f"user module {entry!r} shadows the runtime's {name!r}; rename it")
    if path.is_dir() and not (path / "__init__.py").is_file():
        raise UserError(f"user module {entry!r}: {path} has no __init__.py; make it a package")
    return name, path


def user_module_files(entries: list[str], project_dir: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    seen: set[str] = set()
    for entry in entries:
        name, path = _locate_user_module(entry, project_dir)
        if name in seen:
            continue
        seen.add(name)
        if path.is_dir():
            files.update(_package_files(path, name, python_only=False))
        else:
            files[f"{name}.py"] = path.read_bytes()
    return files


def deterministic_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            archive.writestr(info, files[name], compresslevel=9)
    return buffer.getvalue()


# ---------------------------------------------------------------------------- the script

_SCRIPT = """\
# Generated by kaggle-orchestrate: do not edit; change orchestrate.toml and rebuild.
# Kernel {ref}, run config hash {config_hash}.
# Embedded packages (imported before the image's own): {embedded_note}.
# Below: kernel_template{user_note} and those packages as a base64 zip ({n_files} files,
# sha256 {bundle_sha256}), unpacked under /tmp at start (never into /kaggle/working), and the
# run config JSON. Nothing is pip-installed{pip_note}.
import base64
import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile

BUNDLE_SHA256 = "{bundle_sha256}"
USER_MODULES = {user_modules!r}
EMBEDDED_PACKAGES = {embedded_packages!r}
PIP_INSTALL = {pip_install!r}
RUN_CONFIG_JSON = {run_config_json!r}
BUNDLE = (
{bundle_lines}
)


def unpack_runtime():
    data = base64.b64decode(BUNDLE)
    if hashlib.sha256(data).hexdigest() != BUNDLE_SHA256:
        raise SystemExit("orchestrate: the embedded runtime is corrupt; rebuild the kernel")
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    root = os.path.realpath(tempfile.mkdtemp(prefix="orchestrate-runtime-", dir=base))
    working = os.path.realpath(os.environ.get("ORCHESTRATE_WORKING_DIR", "/kaggle/working"))
    if root == working or root.startswith(working + os.sep):
        raise SystemExit("orchestrate: refusing to unpack the runtime inside the working dir " + working)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(root)
    return root


def main(argv):
    root = unpack_runtime()
    config_path = os.path.join(root, "run_config.json")
    with open(config_path, "w") as handle:
        handle.write(RUN_CONFIG_JSON)
    sys.path.insert(0, root)
    import importlib.util

    import kernel_template

    where = os.path.realpath(kernel_template.__file__)
    print("{import_log_prefix}" + where, flush=True)
    if not where.startswith(root + os.sep):
        raise SystemExit("orchestrate: imported a kernel_template outside the embedded runtime: " + where)
    embedded = {{}}
    for name in sorted(EMBEDDED_PACKAGES):
        spec = importlib.util.find_spec(name)
        origin = os.path.realpath(spec.origin) if spec is not None and spec.origin else ""
        if not origin.startswith(root + os.sep):
            raise SystemExit("orchestrate: " + name + " would not be imported from the embedded copy: " + (origin or "not found"))
        embedded[name] = origin
    os.environ["ORCHESTRATE_EMBEDDED_PACKAGES"] = json.dumps(EMBEDDED_PACKAGES, sort_keys=True)
    if "{selfcheck_flag}" in argv:
        from kernel_template.config import parse_run_config

        config = parse_run_config(json.loads(RUN_CONFIG_JSON), source="embedded run config")
        for name in USER_MODULES:
            __import__(name)
        report = {{
            "kernel_template": where,
            "runtime_dir": root,
            "config_hash": config.config_hash(),
            "user_modules": USER_MODULES,
            "embedded": embedded,
            "embedded_packages": EMBEDDED_PACKAGES,
        }}
        print(json.dumps(report), flush=True)
        return 0
    from kernel_template.__main__ import main as run

    return run(["--config", config_path] + ["--pip-install=" + item for item in PIP_INSTALL])


if __name__ == "__main__":
    exit_code = main(sys.argv[1:])
    if exit_code:
        sys.exit(exit_code)
"""


def render_script(
    run_config: RunConfig,
    *,
    ref: str,
    bundle: bytes,
    user_modules: list[str],
    n_files: int,
    embedded_packages: dict[str, str] | None = None,
    pip_install: list[str] | tuple[str, ...] = (),
    config_hash: str | None = None,
) -> str:
    embedded_packages = dict(sorted((embedded_packages or {}).items()))
    encoded = base64.b64encode(bundle).decode("ascii")
    lines = "\n".join(f'    "{encoded[i : i + 96]}"' for i in range(0, len(encoded), 96))
    # Only the fields the config was given: a chain's runtime is frozen at `chain start`, and
    # an orchestrator upgraded since must not send it fields its RunConfig does not know.
    shipped = run_config.model_dump(mode="json", exclude_unset=True)
    config_json = json.dumps(shipped, sort_keys=True, indent=2) + "\n"
    return _SCRIPT.format(
        ref=ref,
        config_hash=config_hash or run_config.config_hash(),
        user_note=f" + {', '.join(user_modules)}" if user_modules else "",
        n_files=n_files,
        bundle_sha256=hashlib.sha256(bundle).hexdigest(),
        user_modules=user_modules,
        embedded_packages=embedded_packages,
        embedded_note=", ".join(f"{k}=={v}" for k, v in embedded_packages.items()) or "none",
        pip_install=list(pip_install),
        pip_note=f" but [kernel] pip_install: {' '.join(pip_install)}" if pip_install else "",
        run_config_json=config_json,
        bundle_lines=lines,
        import_log_prefix=IMPORT_LOG_PREFIX,
        selfcheck_flag=SELFCHECK_FLAG,
    )


def render_bundle(settings: Settings) -> RuntimeBundle:
    """The runtime from this install: needs the embedded packages' source (the `[kernel]` extra)."""
    user_files = user_module_files(settings.kernel.user_modules, settings.project_dir)
    user_tops = sorted({name.split("/")[0].removesuffix(".py") for name in user_files})
    package_files, package_versions = embedded_packages_files()
    files = {**runtime_files(), **package_files, **user_files}
    return RuntimeBundle(
        data=deterministic_zip(files),
        user_modules=tuple(user_tops),
        embedded_packages=dict(sorted(package_versions.items())),
        pip_install=tuple(settings.kernel.pip_install),
    )


# ---------------------------------------------------------------------------- the folder


def resolve_owner(settings: Settings, owner: str | None = None) -> str:
    """The kernels' owner: the flag, [kaggle] owner, else the credentials' username."""
    chosen = owner or settings.kaggle.owner
    if chosen:
        return chosen
    from .kaggle.credentials import discover_credentials
    from .kaggle.errors import CredentialsNotFound

    try:
        credentials = discover_credentials(include_token=False)
    except (CredentialsNotFound, ValueError):
        credentials = None
    if credentials is None or not credentials.username:
        raise UserError(
            "no kernel owner: set [kaggle] owner in orchestrate.toml, pass --owner, or set up Kaggle credentials"
        )
    return credentials.username


def render_kernel(
    settings: Settings,
    run_config: RunConfig,
    *,
    slug: str,
    kernel_sources: tuple[str, ...] | list[str] = (),
    out_dir: str | Path,
    owner: str | None = None,
    bundle: RuntimeBundle | None = None,
) -> KernelFolder:
    """Write `out_dir` (replacing an earlier rendering) with kernel-metadata.json and the script.

    `bundle`: the runtime to embed (a chain's, rendered at its start); by default rendered
    now from this install."""
    out_dir = Path(out_dir)
    owner = resolve_owner(settings, owner)
    metadata = kernel_metadata(settings, owner=owner, slug=slug, kernel_sources=kernel_sources)
    warnings = [w for w in (retired_shape_warning(settings.kernel.machine_shape),) if w]

    bundle = bundle or render_bundle(settings)
    config_hash = run_config.config_hash()  # once: the script and the folder carry it
    script = render_script(
        run_config,
        config_hash=config_hash,
        ref=metadata["id"],
        bundle=bundle.data,
        user_modules=list(bundle.user_modules),
        n_files=len(bundle.files),
        embedded_packages=bundle.embedded_packages,
        pip_install=bundle.pip_install,
    )
    metadata_text = json.dumps(metadata, indent=2) + "\n"

    if out_dir.exists() and not (out_dir / METADATA_FILE).is_file() and any(out_dir.iterdir()):
        raise UserError(
            f"{out_dir} is a non-empty folder that is not a kernel folder; choose another --out"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        (staging / METADATA_FILE).write_text(metadata_text, encoding="utf-8")
        (staging / metadata["code_file"]).write_text(script, encoding="utf-8")
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return KernelFolder(
        path=out_dir,
        metadata=metadata,
        script_path=out_dir / metadata["code_file"],
        bundle_sha256=bundle.sha256,
        config_hash=config_hash,
        embedded_files=bundle.files,
        warnings=tuple(warnings),
        embedded_packages=dict(bundle.embedded_packages),
        pip_install=bundle.pip_install,
    )


def _replace_dir(new: Path, target: Path) -> None:
    if not target.exists():
        new.rename(target)
        return
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def default_build_dir(settings: Settings, slug: str) -> Path:
    return settings.project_dir / "build" / "kernels" / slug
