"""Faults on demand: the ways Kaggle's API misbehaves, injected per method, by count or chance.

A spec is a comma-separated list of rules `METHOD=FAULT[*COUNT][@PROBABILITY]`, plus an
optional `seed=N`:

    ListKernelSessionOutput=503*2      the next 2 calls get 503
    *=429:5@0.1                        every call: 10 % chance of 429 with Retry-After: 5
    SaveKernel=accepted-503*1          the next push is accepted, then answered with 503
    download=truncate*1                the next output download stops halfway
    GetKernelSessionStatus=html        every call gets an HTML error page (502)

METHOD is a Kaggle RPC name (SaveKernel, GetKernelSessionStatus, ...), `download` (output
files), `logs_stream` (the live log), `IntrospectToken`, or `*` for all of them.
FAULT is an HTTP status (429[:retry_after], 500, 502, 503, ...), `html[:status]`, `drop`
(headers sent, then the connection is closed mid-body), `truncate`, `corrupt`
(downloads), or `accepted-<status>` / `accepted-drop` (the request is handled for real,
then the answer is replaced: an ambiguous push).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Literal

from pydantic import BaseModel

FaultKind = Literal["status", "html", "drop", "truncate", "corrupt"]


class FaultRule(BaseModel):
    method: str = "*"
    kind: FaultKind = "status"
    status: int = 503
    retry_after: float | None = None
    after_handling: bool = False  # run the real handler first (an accepted push answered badly)
    count: int | None = None  # remaining triggers; None = unlimited
    probability: float = 1.0

    def matches(self, method: str) -> bool:
        return self.method in ("*", method)


def parse_rule(text: str) -> FaultRule:
    method, sep, fault = text.strip().partition("=")
    if not sep or not method or not fault:
        raise ValueError(f"bad fault rule {text!r}: write METHOD=FAULT[*COUNT][@PROBABILITY]")
    fields: dict = {"method": method.strip()}
    if "@" in fault:
        fault, prob = fault.rsplit("@", 1)
        fields["probability"] = float(prob)
    if "*" in fault:
        fault, count = fault.rsplit("*", 1)
        fields["count"] = int(count)
    if fault.startswith("accepted-"):
        fields["after_handling"] = True
        fault = fault.removeprefix("accepted-")
    name, _, arg = fault.partition(":")
    if name.isdigit():
        fields.update(kind="status", status=int(name))
        if arg:
            fields["retry_after"] = float(arg)
        elif int(name) == 429:
            fields["retry_after"] = 1.0
    elif name == "html":
        fields.update(kind="html", status=int(arg) if arg else 502)
    elif name in ("drop", "truncate", "corrupt"):
        fields["kind"] = name
    else:
        raise ValueError(
            f"unknown fault {name!r} in {text!r}: use a status code, html, drop, truncate, "
            "corrupt, or accepted-<status>"
        )
    return FaultRule(**fields)


def parse_spec(spec: str) -> tuple[list[FaultRule], int | None]:
    rules, seed = [], None
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part.startswith("seed="):
            seed = int(part.removeprefix("seed="))
        else:
            rules.append(parse_rule(part))
    return rules, seed


class FaultBook:
    """The active rules and a count of every call per method (thread-safe)."""

    def __init__(self, rules: list[FaultRule] | None = None, seed: int | None = None):
        self._lock = threading.Lock()
        self.rules: list[FaultRule] = list(rules or [])
        self.random = random.Random(seed)
        self.calls: Counter[str] = Counter()

    def set_rules(self, rules: list[FaultRule], seed: int | None = None, *, append=False) -> None:
        with self._lock:
            self.rules = (self.rules if append else []) + list(rules)
            if seed is not None or not append:
                self.random = random.Random(seed)

    def count(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    def pick(self, method: str) -> FaultRule | None:
        """The first rule that fires for this call (consuming one of its count)."""
        with self._lock:
            for rule in self.rules:
                if not rule.matches(method) or rule.count == 0:
                    continue
                if rule.probability < 1.0 and self.random.random() >= rule.probability:
                    continue
                if rule.count is not None:
                    rule.count -= 1
                return rule
            return None
