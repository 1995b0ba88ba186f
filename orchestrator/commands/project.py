"""`orchestrate init` and `orchestrate build`: a project's config, and its kernel rendered."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.errors import UserError

from .shared import (
    AcceleratorOpt,
    ConfigOpt,
    JsonOpt,
    KernelSourceOpt,
    OwnerOpt,
    SetOpt,
    SlugOpt,
    TitleOpt,
    console,
    emit_json,
    load,
)


def init_command(
    slug: Annotated[
        str, typer.Option("--slug", help="the kernel slug to start with")
    ] = "my-training-run",
    directory: Annotated[
        Path, typer.Option("--dir", help="where to write orchestrate.toml")
    ] = Path("."),
    force: Annotated[
        bool, typer.Option("--force", help="overwrite an existing orchestrate.toml")
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Write a commented starter orchestrate.toml.

    Example: `orchestrate init --slug ppo-traffic`
    """
    from kernel_template.layout import atomic_write_text
    from orchestrator.settings import CONFIG_FILE_NAME, starter_toml

    target = directory / CONFIG_FILE_NAME
    if target.exists() and not force:
        raise UserError(f"{target} already exists; edit it, or pass --force to overwrite it")
    text = starter_toml(slug)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, text)
    if json_mode:
        emit_json({"path": str(target)})
    else:
        console().print(
            f"wrote {target}; edit it, then run `orchestrate build` or `orchestrate launch --quick-test`"
        )


def build_command(
    config: ConfigOpt = None,
    slug: SlugOpt = None,
    title: TitleOpt = None,
    accelerator: AcceleratorOpt = None,
    owner: OwnerOpt = None,
    sets: SetOpt = None,
    kernel_source: KernelSourceOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="kernel folder to write (default build/kernels/SLUG)"),
    ] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Render the kernel folder (kernel-metadata.json + one self-contained script) without pushing.

    Example: `orchestrate build --slug ppo-traffic --out kernel/` then `kaggle kernels push -p kernel/`
    """
    from orchestrator.build import default_build_dir, render_kernel

    settings = load(config, sets, slug=slug, title=title, accelerator=accelerator, owner=owner)
    chosen = settings.require_slug()
    folder = render_kernel(
        settings,
        settings.run,
        slug=chosen,
        kernel_sources=tuple(kernel_source or ()),
        out_dir=out or default_build_dir(settings, chosen),
    )
    for warning in folder.warnings:
        typer.echo(warning, err=True)
    if json_mode:
        emit_json(
            {
                "path": str(folder.path),
                "script": str(folder.script_path),
                "metadata": folder.metadata,
                "config_hash": folder.config_hash,
                "bundle_sha256": folder.bundle_sha256,
                "embedded_files": list(folder.embedded_files),
            }
        )
    else:
        out_console = console()
        out_console.print(f"kernel {folder.ref} rendered in {folder.path}")
        out_console.print(
            f"  script      {folder.script_path.name} ({folder.script_path.stat().st_size:,} bytes)"
        )
        out_console.print(f"  config hash {folder.config_hash[:16]}")
        out_console.print(f"  embedded    {len(folder.embedded_files)} files")
