"""Find each segment's pulled outputs for `chain report`; pull the missing ones again.

A CI runner starts without `runs/`, and a project may have moved since its pulls: the ledger
says which segments were pulled, this module finds where their files are now, downloads the
missing ones again (Kaggle keeps each slug's outputs), and names what stays missing and why,
so a report is never silently incomplete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kernel_template import layout
from orchestrator.errors import OrchestrateError
from orchestrator.kaggle.errors import KaggleError
from orchestrator.ledger import RUNS_DIR, Ledger, RunRecord

# fetch(run, dest) downloads and verifies the run's outputs into dest (a PullResult back).
Fetch = Callable[[RunRecord, Path], object]


@dataclass
class SegmentOutputs:
    run: RunRecord
    dir: Path | None  # a folder holding the segment's metrics, or None
    missing: str | None = None  # why there is none: the folder and the cause, one line
    repulled: bool = False


def has_metrics(directory: Path | None) -> bool:
    if directory is None:
        return False
    path = layout.SessionPaths(directory).metrics
    return path.is_file() and path.stat().st_size > 0


def locate_outputs(
    ledger: Ledger, runs: list[RunRecord], fetch: Fetch | None
) -> list[SegmentOutputs]:
    """One entry per run, in order; `fetch=None` reports what is missing without downloading."""
    return [_locate(ledger, run, fetch) for run in runs]


def _locate(ledger: Ledger, run: RunRecord, fetch: Fetch | None) -> SegmentOutputs:
    found = ledger.pulled_path(run)
    if has_metrics(found):
        return SegmentOutputs(run, found)
    where = _shown(ledger, found or ledger.project_dir / RUNS_DIR / run.slug)
    gone = (
        f"{where} is missing"
        if found is None or not found.exists()
        else f"{where} has no {layout.METRICS_CSV}"
    )
    if fetch is None:
        return SegmentOutputs(run, None, f"{gone}; not pulled again (--no-pull)")
    dest = ledger.project_dir / RUNS_DIR / run.slug
    try:
        result = fetch(run, dest)
    except (KaggleError, OrchestrateError, OSError) as error:
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        return SegmentOutputs(run, None, f"{gone}, and pulling {run.ref} again failed: {cause}")
    if Path(result.dir).resolve() != dest.resolve():
        problems = "; ".join(result.problems[:2])
        return SegmentOutputs(
            run, None, f"{gone}, and the outputs pulled again did not verify: {problems}"
        )
    if run.artifacts_sha256 and result.artifacts_sha256 != run.artifacts_sha256:
        # One slug per session: other outputs under it are not the segment the ledger names.
        return SegmentOutputs(
            run,
            None,
            f"{gone}, and Kaggle now serves other outputs for {run.ref} (artifacts.zip "
            f"{str(result.artifacts_sha256)[:12]}, the ledger recorded {run.artifacts_sha256[:12]})",
        )
    if not has_metrics(dest):
        return SegmentOutputs(run, None, f"{gone}, and its outputs on Kaggle have none either")
    return SegmentOutputs(run, dest, repulled=True)


def _shown(ledger: Ledger, path: Path) -> str:
    """A path as the user knows it: relative to the project when inside it."""
    return ledger.project_relative(path)


def pull_again(api_url: str | None, stack) -> Fetch:
    """A fetch that opens one Kaggle client on first use (closed with `stack`), so a report
    with nothing missing needs no credentials."""
    clients = []

    def fetch(run: RunRecord, dest: Path):
        from orchestrator.artifacts import pull_artifacts
        from orchestrator.kaggle import KaggleClient

        if not clients:
            clients.append(stack.enter_context(KaggleClient(api_url)))
        return pull_artifacts(clients[0], run.owner, run.slug, dest, force=True)

    return fetch
