"""What every command shares: its options, declared once, and the few steps every command
takes (load settings, open a client and the ledger, print a result).

One flag, one parameter name, one help text: `--json` is `json_mode` everywhere, `--config`
is `config`, `--set` is `sets`. Nothing heavy is imported at module level, so --help is quick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.errors import UserError

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="orchestrate.toml (default: the nearest one)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="override any setting: section.key=value, e.g. run.total_timesteps=2000"
    ),
]
ApiUrlOpt = Annotated[
    str | None, typer.Option("--api-url", help="Kaggle API root, e.g. http://127.0.0.1:7777/api/v1")
]
SlugOpt = Annotated[
    str | None, typer.Option("--slug", help="kernel slug (overrides [kernel] slug)")
]
TitleOpt = Annotated[
    str | None, typer.Option("--title", help="kernel title; must slugify to the slug")
]
AcceleratorOpt = Annotated[
    str | None,
    typer.Option("--accelerator", help="NvidiaTeslaT4, TpuV5E8 or 'none' (overrides [kernel])"),
]
OwnerOpt = Annotated[str | None, typer.Option("--owner", help="Kaggle user that owns the kernel")]
KernelSourceOpt = Annotated[
    list[str] | None,
    typer.Option("--kernel-source", help="extra kernel source owner/slug (repeatable)"),
]
RunArg = Annotated[
    str | None,
    typer.Argument(
        help="ledger run name, or owner/slug for a run started elsewhere; default: the newest run"
    ),
]


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def console(json_mode: bool = False):
    """Human output: stdout normally, stderr under --json (stdout then holds only the document)."""
    from rich.console import Console

    return Console(stderr=json_mode, highlight=False, soft_wrap=True)


def load(
    config: Path | None,
    sets: list[str] | None = None,
    *,
    slug: str | None = None,
    title: str | None = None,
    accelerator: str | None = None,
    owner: str | None = None,
    api_url: str | None = None,
):
    """Settings from the config file with every given flag laid over it."""
    from orchestrator.settings import apply_overrides, load_settings, with_kernel_overrides

    settings = load_settings(config)
    if sets:
        settings = apply_overrides(settings, sets)
    if slug is not None and title is None:
        title = derived_title(settings.kernel.title, slug)
    return with_kernel_overrides(
        settings, slug=slug, title=title, machine_shape=accelerator, owner=owner, api_url=api_url
    )


def derived_title(configured: str | None, slug: str) -> str | None:
    """The title for a `--slug` given without `--title`: the configured one when it fits the
    slug (or names its prefix), else one made from the slug (Kaggle wants them to match)."""
    from orchestrator.build import title_for_slug
    from orchestrator.settings import check_slug

    try:
        check_slug(slug, error=UserError)
    except UserError:
        return None  # the slug's own error is the one to show
    return title_for_slug(configured, slug, strict=False)


def make_client(settings):
    """A KaggleClient for these settings ([kaggle] api_url, else the environment)."""
    from orchestrator.kaggle import KaggleClient

    return KaggleClient(settings.kaggle.api_url)


def make_ledger(settings):
    from orchestrator.ledger import Ledger

    return Ledger(settings.project_dir)
