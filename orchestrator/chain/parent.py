"""A chain's resume source: the kernel whose output holds the checkpoint its next segment
resumes from. `delete` must not remove it unasked, and a chain whose source is gone stops
and asks the user, never restarting from scratch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kernel_template import layout
from kernel_template.layout import CheckpointRef
from orchestrator.chain import machine
from orchestrator.ledger import Ledger, StartPoint

if TYPE_CHECKING:
    from orchestrator.kaggle import KaggleClient


def chains_resuming_from(ledger: Ledger, slug: str) -> list[tuple[str, StartPoint]]:
    """(chain name, start point) of each live chain whose next segment resumes from `slug`."""
    found = []
    for chain in ledger.chains():
        if chain.state.finished:
            continue
        point = machine.start_point(ledger.runs(chain.name), start=chain.start_from)
        if point is not None and point.kind == "kernel" and point.slug == slug:
            found.append((chain.name, point))
    return found


def refusal(ledger: Ledger, owner: str, slug: str) -> str | None:
    """Why `orchestrate delete` must not remove `owner/slug` without --force, or None."""
    holders = [(n, p) for n, p in chains_resuming_from(ledger, slug) if p.owner == owner]
    if not holders:
        return None
    name, point = holders[0]
    return (
        f"{owner}/{slug} holds the checkpoint (step {point.step}) that chain {name} resumes from "
        "next; deleting it would leave the chain nothing to resume from. Delete it once a later "
        f"segment is pulled, or pass --force (chain {name} then stops and asks you what to do)"
    )


def tell_chains(ledger: Ledger, owner: str, slug: str) -> list[str]:
    """After a forced delete: note an ALERT on each chain that resumed from it; their names."""
    told = []
    for name, point in chains_resuming_from(ledger, slug):
        if point.owner != owner:
            continue
        ledger.note(
            name,
            f"{point.ref}, which holds the checkpoint this chain resumes from (step "
            f"{point.step}), was deleted with `orchestrate delete --force`: the next step stops "
            "the chain and names the choices",
            "alert",
        )
        told.append(name)
    return told


def is_gone(ledger: Ledger, client: KaggleClient, point: StartPoint) -> bool:
    """Whether the kernel holding the resume point is gone: deleted through this ledger, or
    missing from the account's own listing (never judged by a 403, which also answers for a
    kernel that exists). Another owner's kernel cannot be listed, and a dataset start point
    is not a kernel: both taken as present."""
    if point.kind != "kernel":
        return False
    record = ledger.get(point.slug)
    if record is not None and getattr(record, "deleted_at", None):
        return True
    if point.owner != client.username:
        return False
    return client.find_own_kernel(point.owner, point.slug) is None


def local_checkpoint(pulled_dir: Path | None, checkpoint: CheckpointRef) -> Path | None:
    """The pulled dir of this checkpoint, if its manifest has the hash and its files verify."""
    if pulled_dir is None:
        return None
    directory = layout.SessionPaths(pulled_dir).checkpoint(checkpoint.step)
    manifest, manifest_sha256, problems = layout.verify_checkpoint(directory)
    if manifest is None or problems or manifest_sha256 != checkpoint.manifest_sha256:
        return None
    return directory


def gone_message(ledger: Ledger, name: str, point: StartPoint) -> str:
    """The ALERT of a chain whose start point is gone: what happened and the choices."""
    record = ledger.get(point.slug)
    local = local_checkpoint(ledger.pulled_path(record) if record else None, point.checkpoint)
    head = (
        f"{point.ref}, which holds the checkpoint this chain resumes from (step {point.step}, "
        f"manifest {point.checkpoint.manifest_sha256[:12]}), is gone from Kaggle; the chain stopped rather "
        "than train from scratch. Choose: "
    )
    cancel = f"`orchestrate chain cancel {name}`"
    if local is None:
        return head + (
            f"no verified local copy of it is left here, so {cancel}, or resume from a copy "
            f"you keep elsewhere: `orchestrate chain resume {name} --from <checkpoint dir>`"
        )
    return head + (
        f"`orchestrate chain resume {name} --from {_shown(local)}` (re-uploads that verified "
        f"local checkpoint as a Kaggle dataset and resumes from it), or {cancel}"
    )


def _shown(path: Path) -> str:
    """The path as the user would type it: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
