"""`orchestrate status`, `runs` and `delete`: the ledger's runs next to what Kaggle says."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kernel_template.layout import utc_now_iso

from .errors import UserError
from .settings import Settings

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import Console

    from .artifacts import PullResult
    from .kaggle import KaggleClient
    from .ledger import Ledger, RunRecord

RUN_COLUMNS = (
    "slug",
    "chain",
    "segment",
    "attempt",
    "state",
    "kernel_status",
    "version",
    "created_at",
)
HEADERS = {
    "slug": "run",
    "segment": "seg",
    "attempt": "try",
    "kernel_status": "kernel",
    "version": "ver",
    "created_at": "created (UTC)",
}
SHRINKABLE = frozenset({"chain", "kernel_status"})  # the slug and the time stay whole


@dataclass(frozen=True)
class RunRef:
    """A run named on the command line: its owner and slug, and its ledger record if any."""

    owner: str
    slug: str
    record: RunRecord | None  # None for a run started elsewhere (results are not recorded)

    @property
    def in_ledger(self) -> bool:
        return self.record is not None

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.slug}"


def resolve_run(run: str | None, ledger: Ledger, *, default_owner: str | None = None) -> RunRef:
    """The one rule for a RUN argument (status, watch, pull-artifacts, delete):

    - `owner/slug` as given; it is the ledger's run only when that slug has that owner there;
    - a slug: the ledger's run; else `default_owner/slug` when one is given, else bad input;
    - nothing: the newest run that reached Kaggle, by push time (creation time for a record
      without one). Intents and failed pushes are skipped: they never ran, so there is no
      status to show, log to follow or output to pull.
    """
    if run and "/" in run:
        owner, _, slug = run.partition("/")
        if not owner or not slug or "/" in slug:
            raise UserError(
                f"run {run!r} must be a ledger name or owner/slug, e.g. alice/ppo-traffic-s1"
            )
        record = ledger.get(slug)
        return RunRef(owner, slug, record if record is not None and record.owner == owner else None)
    if run:
        record = ledger.get(run)
        if record is not None:
            return RunRef(record.owner, record.slug, record)
        if default_owner:
            return RunRef(default_owner, run, None)
        raise UserError(
            f"run {run!r} is not in the ledger at {ledger.path}; give a run started elsewhere as owner/slug"
        )
    records = [r for r in ledger.runs() if r.state not in ("intent", "failed_push")]
    if not records:
        raise UserError(
            f"no pushed run in the ledger at {ledger.path}; name one as owner/slug, "
            "or `orchestrate launch` first"
        )
    newest = max(records, key=lambda r: r.pushed_at or r.created_at)
    return RunRef(newest.owner, newest.slug, newest)


def _default_owner(settings: Settings, client: KaggleClient | None) -> str | None:
    return settings.kaggle.owner or (client.username if client is not None else None)


def pull_run(
    settings: Settings,
    ledger: Ledger,
    client: KaggleClient,
    ref: RunRef,
    dest: Path | None = None,
    *,
    force: bool = False,
) -> PullResult:
    """Pull a named run's outputs into `dest` (default runs/SLUG/) and record a verified pull
    in the ledger (a chain's segment as its chain records it)."""
    from .artifacts import pull_artifacts

    target = dest or settings.project_dir / "runs" / ref.slug
    record = ref.record
    result = pull_artifacts(client, ref.owner, ref.slug, target, force=force)
    if record is not None and record.chain is not None and result.verified:
        # A chain's segment is recorded as its chain records it: with the checkpoint
        # step that decides what the next segment resumes from.
        from .chain.step import ChainStepper

        ChainStepper(settings, client, ledger).record_hand_pull(ref.slug)
    if record is not None and record.chain is None and result.verified and not result.skipped:
        ledger.update(
            ref.slug,
            state="pulled",
            pulled_dir=str(result.dir),
            artifacts_sha256=result.artifacts_sha256,
            checkpoint=result.checkpoint,
            summary=result.summary,
        )
    return result


def run_status(
    settings: Settings, ledger: Ledger, client: KaggleClient, run: str | None = None
) -> dict[str, Any]:
    """Kaggle's status of a run with its ledger record; the record's kernel_status is refreshed.

    A run pushed moments ago may be denied (403) for a while: reported as NOT_VISIBLE_YET
    within the grace after its push; past it, or for a run this ledger never pushed, the
    denial is said plainly (UserError, exit 2) once the credentials are proven good.
    """
    from .kaggle import KernelNotVisible, NotFoundError

    settle_before_showing(ledger, client)
    ref = resolve_run(run, ledger, default_owner=_default_owner(settings, client))
    owner, slug, record = ref.owner, ref.slug, ref.record
    try:
        status = client.status(owner, slug)
        kernel_status, failure = status.status, status.failure_message
    except NotFoundError:
        kernel_status, failure = _missing_status(owner, slug, record)
    except KernelNotVisible:
        kernel_status, failure = _denied_status(owner, slug, record, client)
    if record is not None and kernel_status not in ("NOT_FOUND", "NOT_VISIBLE_YET"):
        fields: dict[str, Any] = {"kernel_status": kernel_status}
        if failure:
            fields["failure_message"] = failure
        record = ledger.update(slug, **fields)
    return {
        "ref": f"{owner}/{slug}",
        "kernel_status": kernel_status,
        "failure_message": failure,
        "url": record.url if record and record.url else client.web_url(owner, slug),
        "ledger": record.cli_json() if record is not None else None,
    }


def _missing_status(owner: str, slug: str, record) -> tuple[str, str]:
    """A kernel Kaggle says is not there (404): fine for one we deleted; otherwise exit 2,
    as `watch` and `pull-artifacts` do."""
    if record is not None and getattr(record, "deleted_at", None):
        return "NOT_FOUND", "deleted with `orchestrate delete`"
    raise UserError(
        f"kernel {owner}/{slug} not found on Kaggle; check the name with `orchestrate runs` "
        "or kaggle.com/code"
    )


def settle_before_showing(
    ledger: Ledger, client: KaggleClient, console: Console | None = None
) -> None:
    """Settle the ledger's unsettled runs against Kaggle before showing them; a chain step
    holding the ledger is left to do it (it settles too)."""
    from .ledger import LedgerBusy
    from .settle import settle_runs

    try:
        settlement = settle_runs(ledger, client, lock_timeout=2.0)
    except LedgerBusy:
        if console is not None:
            console.print(
                "note: a chain step holds the ledger; runs shown as last recorded", markup=False
            )
        return
    if console is not None and settlement.unreadable:
        console.print(
            f"note: Kaggle could not be read about {', '.join(settlement.unreadable)}; "
            "shown as last recorded",
            markup=False,
        )


def settle_listed_runs(settings: Settings, ledger: Ledger, console: Console) -> None:
    """`orchestrate runs`: settle first when a record may be stale. Without credentials or
    without Kaggle, the ledger is shown as last recorded, and the note says so."""
    from .kaggle import AuthenticationError, CredentialsNotFound, KaggleClient, KaggleError
    from .settle import is_unsettled

    if not any(is_unsettled(record) for record in ledger.runs()):
        return
    try:
        with KaggleClient(settings.kaggle.api_url) as client:
            settle_before_showing(ledger, client, console)
    except AuthenticationError:
        raise  # refused credentials: exit 2 with the fix, as every command
    except (CredentialsNotFound, KaggleError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        console.print(
            f"note: could not ask Kaggle ({first}); runs shown as last recorded", markup=False
        )


def _denied_status(owner: str, slug: str, record, client) -> tuple[str, str]:
    """(status, note) for a kernel Kaggle denies (403): deleted by us, or not visible yet
    within the grace after its push; past that, the denial is said plainly (exit 2)."""
    from .kaggle import VISIBILITY_GRACE_S

    if record is not None and getattr(record, "deleted_at", None):
        return "NOT_FOUND", "deleted with `orchestrate delete`"
    age = record.seconds_since_push() if record is not None else float("inf")
    if age >= VISIBILITY_GRACE_S:
        client.verify_credentials()  # refused credentials: exit 2 with the fix
        how_long = f"{age:.0f} s after its push" if record is not None else "no push recorded"
        raise UserError(denied_message(owner, slug, how_long))
    return (
        "NOT_VISIBLE_YET",
        f"pushed {age:.0f} s ago; Kaggle denies reads of a new kernel for a while",
    )


def denied_message(owner: str, slug: str, how_long: str) -> str:
    """What a lasting 403 on one's own kernel may mean, in one line. `how_long` says since
    when, e.g. "600 s after its push" or "for 30 s"."""
    return (
        f"Kaggle denies access to {owner}/{slug} ({how_long}; the credentials are fine): the "
        "slug may be misspelt, the kernel deleted, or private to another account; check "
        "`orchestrate runs` or kaggle.com/code"
    )


def print_status(report: dict[str, Any], console: Console) -> None:
    console.print(f"{report['ref']}: {report['kernel_status']}", markup=False)
    if report.get("failure_message"):
        console.print(f"  failure: {report['failure_message']}", markup=False)
    console.print(f"  url: {report['url']}", markup=False)
    record = report.get("ledger")
    if record is None:
        console.print("  not in this project's ledger", markup=False)
        return
    for key in (
        "state",
        "chain",
        "segment",
        "attempt",
        "version",
        "pushed_at",
        "pulled_dir",
    ):
        if record.get(key) is not None:
            console.print(f"  {key}: {record[key]}", markup=False)
    if record.get("checkpoint"):  # a checkpoint ref: its manifest hash names it
        console.print(f"  checkpoint_hash: {record['checkpoint']['manifest_sha256']}", markup=False)


def list_runs(ledger: Ledger, chain: str | None = None) -> list[RunRecord]:
    return ledger.runs(chain=chain)


def print_runs(records: list[RunRecord], console: Console) -> None:
    if not records:
        console.print("no runs yet: `orchestrate launch --quick-test` starts one", markup=False)
        return
    rows = [[_cell(getattr(record, column)) for column in RUN_COLUMNS] for record in records]
    if not console.is_terminal:  # plain lines for pipes and logs
        for row in rows:
            console.print("\t".join(row), markup=False, highlight=False)
        return
    from rich import box
    from rich.table import Column, Table

    # Short headers, no outer border, and the slug, small numbers and time never cut (the slug
    # is what the other commands take); chain and kernel status give way on 80 columns.
    rows = [[*row[:-1], row[-1].replace("T", " ")[:16]] for row in rows]  # created, to the minute
    headers = [HEADERS.get(name, name) for name in RUN_COLUMNS]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    gaps = COLUMN_GAP * (len(widths) - 1)
    shrinkable = [i for i, name in enumerate(RUN_COLUMNS) if name in SHRINKABLE]
    widths = fit_widths(widths, shrinkable, console.width - gaps)
    # Cut here, not in rich: rich shrinks every column once the total is too wide.
    rows = [[_clip(cell, widths[i]) for i, cell in enumerate(row)] for row in rows]
    headers = [_clip(h, widths[i]) for i, h in enumerate(headers)]
    columns = [Column(h, no_wrap=True, width=widths[i]) for i, h in enumerate(headers)]
    table = Table(
        *columns, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True
    )
    for row in rows:
        table.add_row(*row)
    console.print(table)


COLUMN_GAP = 2  # the table's padding between two columns
NARROWEST = 4  # a shrunk column keeps this many characters ("CAN…")


def fit_widths(widths: list[int], shrinkable: list[int], room: int) -> list[int]:
    """Column widths within `room` characters: the shrinkable columns give way, widest first."""
    widths = list(widths)
    while sum(widths) > room:
        candidates = [i for i in shrinkable if widths[i] > NARROWEST]
        if not candidates:
            break
        widths[max(candidates, key=lambda i: widths[i])] -= 1
    return widths


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def delete_run(
    settings: Settings, ledger: Ledger, client: KaggleClient, run: str, *, force: bool = False
) -> RunRecord:
    """Delete the kernel on Kaggle, only after its outputs were pulled and verified (unless forced)."""
    from .kaggle import KernelNotVisible, NotFoundError
    from .ledger import RunRecord

    ref = resolve_run(run, ledger, default_owner=_default_owner(settings, client))
    owner, slug, record = ref.owner, ref.slug, ref.record
    if record is None and not force:
        raise UserError(
            f"run {run!r} is not in this project's ledger; pass --force to delete {owner}/{slug} anyway"
        )
    from .chain import parent

    needed = parent.refusal(ledger, owner, slug)
    if needed and not force:
        raise UserError(needed)
    verified = record is not None and record.state == "pulled" and bool(record.artifacts_sha256)
    if not verified and not force:
        state = record.state if record is not None else "unknown"
        raise UserError(
            f"the outputs of {owner}/{slug} were not pulled and verified (state {state}); "
            f"run `orchestrate pull-artifacts {slug}` first, or pass --force"
        )
    # Already gone (kaggle.com answers 403 for a kernel that does not exist): the goal is reached.
    with contextlib.suppress(NotFoundError, KernelNotVisible):
        client.delete_kernel(owner, slug)
    if needed:
        parent.tell_chains(ledger, owner, slug)
    if record is None:
        return RunRecord(slug=slug, owner=owner, state="terminal")
    return ledger.update(slug, deleted_at=utc_now_iso())
