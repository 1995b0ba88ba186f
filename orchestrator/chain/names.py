"""Finding a chain by name: only `chain start` creates one, so a misspelt name in `step`,
`run`, `status` or `report` is bad input (exit 2) that names the closest existing chains."""

from __future__ import annotations

import difflib

from orchestrator.errors import UserError
from orchestrator.ledger import ChainRecord, Ledger

MAX_SUGGESTIONS = 3


def unknown_chain(ledger: Ledger, name: str) -> UserError:
    names = [chain.name for chain in ledger.chains()]
    close = difflib.get_close_matches(name, names, n=MAX_SUGGESTIONS, cutoff=0.6)
    if close:
        known = f"did you mean {', '.join(close)}?"
    elif names:
        known = f"its chains are {', '.join(sorted(names)[:10])}{' …' if len(names) > 10 else ''}"
    else:
        known = "it has no chains yet"
    return UserError(
        f"no chain {name!r} in {ledger.path}: {known} (only `orchestrate chain start {name}` "
        "creates a chain)"
    )


def require_chain(ledger: Ledger, name: str) -> ChainRecord:
    chain = ledger.get_chain(name)
    if chain is None:
        raise unknown_chain(ledger, name)
    return chain
