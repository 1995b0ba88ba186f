"""A chain's runtime bundle: rendered once at `chain start`, kept beside the ledger.

Every segment embeds these same bytes (exact resume wants the same code in every session),
and `chain step` swaps only the run config, so a machine with the core install alone (a
cron box, a GitHub runner: no stable-baselines3 to embed) can push the next segment.
Files: `.orchestrate/chains/<name>/runtime.zip` and `runtime.json` (the rest of the
runtime: embedded package versions, user module names, pip installs).
"""

from __future__ import annotations

import json
from pathlib import Path

from kernel_template.layout import atomic_write_bytes, atomic_write_text
from orchestrator.build import RuntimeBundle
from orchestrator.errors import UserError
from orchestrator.ledger import ChainRecord, Ledger

CHAINS_DIR = "chains"
BUNDLE_ZIP = "runtime.zip"
BUNDLE_INFO = "runtime.json"


def bundle_dir(ledger: Ledger, name: str) -> Path:
    return ledger.dir / CHAINS_DIR / name


def store_bundle(ledger: Ledger, name: str, bundle: RuntimeBundle) -> None:
    directory = bundle_dir(ledger, name)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / BUNDLE_ZIP, bundle.data)
    info = {
        "sha256": bundle.sha256,
        "user_modules": list(bundle.user_modules),
        "embedded_packages": bundle.embedded_packages,
        "pip_install": list(bundle.pip_install),
    }
    atomic_write_text(directory / BUNDLE_INFO, json.dumps(info, indent=1, sort_keys=True) + "\n")


def load_bundle(ledger: Ledger, chain: ChainRecord) -> RuntimeBundle | None:
    """The bundle the chain started with; None for a chain started before chains kept one
    (each push renders its own then, which needs the `[kernel]` extra)."""
    if chain.runtime_sha256 is None:
        return None
    directory = bundle_dir(ledger, chain.name)
    fix = (
        f"restore {directory} from where the ledger came from, or start a new chain from the "
        f"last checkpoint (`orchestrate chain start NEW --from RUN`)"
    )
    try:
        data = (directory / BUNDLE_ZIP).read_bytes()
        info = json.loads((directory / BUNDLE_INFO).read_text())
    except (OSError, ValueError) as error:
        raise UserError(
            f"chain {chain.name}: its runtime bundle, rendered at chain start, is unreadable "
            f"({error}); {fix}"
        ) from None
    bundle = RuntimeBundle(
        data=data,
        user_modules=tuple(info.get("user_modules", ())),
        embedded_packages=dict(info.get("embedded_packages", {})),
        pip_install=tuple(info.get("pip_install", ())),
    )
    if bundle.sha256 != chain.runtime_sha256 or info.get("sha256") != chain.runtime_sha256:
        raise UserError(
            f"chain {chain.name}: its runtime bundle in {directory} is not the one it started "
            f"with (sha256 {bundle.sha256[:12]}, the ledger says {chain.runtime_sha256[:12]}); {fix}"
        )
    return bundle
