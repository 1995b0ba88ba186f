"""The two vocabularies of a chain, kept apart: where a chain stands (its state, in the
ledger) and what one `chain step` did (its outcome, with the exit code a scheduler sees).

Adding a chain state touches two files: declare it here (in FINISHED_CHAIN_STATES, with a
step outcome of the same name, if nothing follows it), and decide where a chain enters it:
`orchestrator.chain.machine` (from its runs), `chain.step` (a check while stepping) or the
command that sets it (`chain.status.cancel_chain`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from orchestrator.errors import ExitCode


class _Word(str, Enum):
    """A str enum that prints as its word (f-strings, JSON) on every Python version."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__
    __hash__ = str.__hash__  # equal to its word, so hashed like it (sets, dict keys)


class ChainState(_Word):
    ACTIVE = "active"  # pushing, running or waiting to push the next segment
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Nothing more happens on its own (`chain resume` or `extend` may reopen it)."""
        return self in FINISHED_CHAIN_STATES


FINISHED_CHAIN_STATES = frozenset({ChainState.DONE, ChainState.FAILED, ChainState.CANCELLED})


class StepOutcome(_Word):
    ADVANCED = "advanced"  # a segment was pushed, or the step ran out of moves
    RUNNING = "running"
    WAITING = "waiting"
    BUSY = "busy"  # another step holds the lock: it is doing the work
    UNKNOWN = "unknown"  # Kaggle could not be read
    # A finished chain's step outcome is its state's name:
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def of_finished(cls, state: ChainState) -> StepOutcome:
        return cls(state.value)

    @property
    def finished(self) -> bool:
        return self.value in {state.value for state in FINISHED_CHAIN_STATES}

    @property
    def exit_code(self) -> ExitCode:
        if self is StepOutcome.FAILED:
            return ExitCode.RUN_FAILED
        if self is StepOutcome.UNKNOWN:
            return ExitCode.INFRASTRUCTURE
        return ExitCode.OK


def iso(moment: datetime) -> str:
    """A moment as a chain's records write it: UTC, to the second, with a Z."""
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class StepResult:
    """What one step did."""

    chain: str
    outcome: StepOutcome
    message: str
    until: datetime | None = None
    pushed: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    running: str | None = None  # owner/slug of the segment now running, if any

    def __post_init__(self) -> None:
        self.outcome = StepOutcome(self.outcome)

    @property
    def exit_code(self) -> int:
        if self.alerts:  # an ALERT needs a person: a scheduler must see this step fail
            return int(ExitCode.RUN_FAILED)
        return int(self.outcome.exit_code)

    @property
    def finished(self) -> bool:
        return self.outcome.finished

    def to_json(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "outcome": self.outcome,
            "message": self.message,
            "until": iso(self.until) if self.until else None,
            "pushed": self.pushed,
            "alerts": self.alerts,
            "running": self.running,
            "exit_code": self.exit_code,
        }
