"""Settle the ledger against Kaggle: which recorded sessions are really still going.

A run stays `intent`, `pushed` or `running` in the ledger until someone asks Kaggle about
it. A chain asks about its own segments, but nobody asks for a cancelled chain's last
segment, a plain launch, or another project's view: their records would claim GPU slots
for ever. `settle_runs` asks Kaggle about each such record, writes what it learns, and says
which sessions hold a slot now. `chain step`, `status`, `runs`, preflight and launch's
capacity check all count busy sessions this one way (`orchestrator.capacity.gpu_slots`), so
they never disagree.

Kaggle's word wins; the ledger's counts only where Kaggle cannot be read (a failed call, a
push still inside the read-after-write lag). Existence is learned from the account's own
listing, never from a 403 (`../shared/notes/kaggle-reality.md`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kernel_template.layout import utc_now_iso
from orchestrator.kaggle.models import VISIBILITY_GRACE_S
from orchestrator.ledger import Ledger, RunRecord, seconds_since
from orchestrator.settings import is_gpu_shape

if TYPE_CHECKING:
    from orchestrator.kaggle import KaggleClient, KernelInfo

UNSETTLED_STATES = ("intent", "pushed", "running")
# kernel_status of a run Kaggle no longer has (deleted here or on kaggle.com).
GONE = "GONE"


@dataclass
class Settlement:
    """What one settlement learnt. `busy` holds the records that hold a session now: running
    as Kaggle says, inside the read lag of their push, or unreadable (the ledger's word)."""

    ended: list[str] = field(default_factory=list)
    busy: list[RunRecord] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def busy_gpu(self) -> list[str]:
        return [r.slug for r in self.busy if is_gpu_shape(r.machine_shape)]


def is_unsettled(record: RunRecord) -> bool:
    return record.state in UNSETTLED_STATES


def settle_runs(
    ledger: Ledger,
    client: KaggleClient,
    *,
    select: Callable[[RunRecord], bool] | None = None,
    lock_timeout: float | None = None,
) -> Settlement:
    """Ask Kaggle about every unsettled record (those `select` accepts) and write the answers.

    Records of an active chain are only read and marked running or ended (their chain pulls
    them and judges intents with its own clock); the rest are settled outright. Refused
    credentials raise; any other failure leaves the record as it was, counted busy.
    Holds the ledger lock (`LedgerBusy` after `lock_timeout` s; None waits).
    """
    with ledger.locked(timeout=lock_timeout):
        return _Settler(ledger, client).settle(select)


class _Settler:
    def __init__(self, ledger: Ledger, client: KaggleClient) -> None:
        self.ledger = ledger
        self.client = client
        self.result = Settlement()
        self._listing: dict[str, KernelInfo] | None = None
        self._active_chains = {c.name: c for c in ledger.chains() if not c.state.finished}

    def settle(self, select: Callable[[RunRecord], bool] | None) -> Settlement:
        for record in self.ledger.runs():
            if is_unsettled(record) and (select is None or select(record)):
                self._settle_one(record)
        return self.result

    def _owned_by_active_chain(self, record: RunRecord) -> bool:
        return record.chain is not None and record.chain in self._active_chains

    def _settle_one(self, record: RunRecord) -> None:
        if getattr(record, "deleted_at", None):
            self._gone(record, "deleted with `orchestrate delete`")
            return
        if record.state == "intent":
            record = self._resolve_intent(record)
            if record is None or record.state == "intent":
                return
        self._read_status(record)

    def _resolve_intent(self, record: RunRecord) -> RunRecord | None:
        """An unconfirmed push: listed, it happened; unlisted past the grace, it never did."""
        if self._owned_by_active_chain(record):
            self.result.busy.append(record)  # its chain settles it, with its own clock
            return None
        info = self._listed(record)
        if info is False:  # the listing could not be read
            self.result.busy.append(record)
            return None
        if info is None:
            if seconds_since(record.created_at) < VISIBILITY_GRACE_S:
                self.result.busy.append(record)  # may still appear: Kaggle lists late
                return None
            self.ledger.update(
                record.slug,
                state="failed_push",
                failure_message=f"the push never reached Kaggle (not listed {VISIBILITY_GRACE_S:.0f} s on)",
            )
            return None
        return self.ledger.update(
            record.slug,
            state="pushed",
            pushed_at=record.pushed_at or utc_now_iso(),
            version=info.current_version_number,
        )

    def _read_status(self, record: RunRecord) -> None:
        from orchestrator.kaggle import (
            AuthenticationError,
            CredentialsNotFound,
            KaggleError,
            KernelNotVisible,
            NotFoundError,
        )

        try:
            status = self.client.status(record.owner, record.slug)
        except (AuthenticationError, CredentialsNotFound):
            raise
        except (KernelNotVisible, NotFoundError):
            self._denied(record)
            return
        except KaggleError:
            self.result.unreadable.append(record.slug)
            self.result.busy.append(record)
            return
        if status.is_terminal:
            self.ledger.update(
                record.slug,
                state="terminal",
                kernel_status=status.status,
                failure_message=status.failure_message,
                terminal_at=record.terminal_at or utc_now_iso(),
            )
            self.result.ended.append(record.slug)
            return
        if record.state != "running" or record.kernel_status != status.status:
            record = self.ledger.update(record.slug, state="running", kernel_status=status.status)
        self.result.busy.append(record)

    def _denied(self, record: RunRecord) -> None:
        """A 403: normal during the read lag after a push; later, the listing says whether
        the kernel is still there."""
        if record.seconds_since_push() < VISIBILITY_GRACE_S:
            self.result.busy.append(record)
            return
        info = self._listed(record)
        if info is None:
            self._gone(record, "not on Kaggle any more (deleted on kaggle.com?)")
        else:  # listed but unreadable, or the listing failed: keep counting it
            self.result.unreadable.append(record.slug)
            self.result.busy.append(record)

    def _gone(self, record: RunRecord, why: str) -> None:
        self.result.gone.append(record.slug)
        if not self._owned_by_active_chain(record):  # an active chain reports it itself
            self.ledger.update(
                record.slug,
                state="terminal",
                kernel_status=GONE,
                failure_message=why,
                terminal_at=record.terminal_at or utc_now_iso(),
            )

    def _listed(self, record: RunRecord) -> KernelInfo | None | bool:
        """The account's listing entry of the record's slug, None when unlisted, False when
        the listing cannot answer (another owner, or a failed call)."""
        from orchestrator.kaggle import AuthenticationError, CredentialsNotFound, KaggleError

        if record.owner != self.client.username:
            return False
        if self._listing is None:
            try:
                self._listing = {k.slug: k for k in self.client.list_own_kernels()}
            except (AuthenticationError, CredentialsNotFound):
                raise
            except KaggleError:
                return False
        return self._listing.get(record.slug)
