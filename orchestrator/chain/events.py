"""What one `chain step` did worth telling someone: segment done, chain done/failed, each ALERT.

Read from the ledger before and after the step (plus the step's own alerts), so the step's
code needs no notification calls of its own: `before_step` under the lock, `step_events` after.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.chain.states import ChainState, StepResult
from orchestrator.ledger import Ledger
from orchestrator.notify import NotifyEvent

# The chain states worth a notification when a step brings a chain to them.
NOTIFIED_STATES = {ChainState.DONE: "chain_done", ChainState.FAILED: "chain_failed"}


@dataclass(frozen=True)
class BeforeStep:
    chain_state: ChainState | None
    pulled: frozenset[str]  # runs already pulled


def before_step(ledger: Ledger, name: str) -> BeforeStep:
    chain = ledger.get_chain(name)
    pulled = frozenset(r.slug for r in ledger.runs(name) if r.state == "pulled")
    return BeforeStep(chain.state if chain else None, pulled)


def step_events(ledger: Ledger, before: BeforeStep, result: StepResult) -> list[NotifyEvent]:
    name = result.chain
    chain = ledger.get_chain(name)
    if chain is None:
        return []
    events = []
    for run in ledger.runs(name):
        if run.state == "pulled" and run.slug not in before.pulled:
            events.append(NotifyEvent("segment_done", name, _segment_text(chain, run)))
    events += [
        NotifyEvent("alert", name, f"ALERT chain {name}: {alert}") for alert in result.alerts
    ]
    newly_finished = before.chain_state is None or not before.chain_state.finished
    if newly_finished and chain.state in NOTIFIED_STATES:
        kind = NOTIFIED_STATES[chain.state]
        events.append(NotifyEvent(kind, name, f"chain {name} {chain.state}: {result.message}"))
    return events


def _segment_text(chain, run) -> str:
    planned = len(chain.segments)
    where = f"segment {run.segment} of {planned}" if run.segment else run.slug
    retry = f" (attempt {run.attempt + 1})" if run.attempt else ""
    if run.checkpoint is None:
        reached = "left no checkpoint"
    else:
        step = run.checkpoint.step
        share = 100 * step / chain.total_timesteps
        reached = f"checkpoint at step {step} of {chain.total_timesteps} ({share:.0f}%)"
    hours = f", {run.gpu_seconds / 3600:.2f} GPU h" if run.gpu_seconds else ""
    return f"chain {chain.name}: {where}{retry} ended {run.kernel_status} ({run.ref}): {reached}{hours}"
