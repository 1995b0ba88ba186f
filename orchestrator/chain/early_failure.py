"""Whether a segment failed before its first training step, and the error to quote.

Such a failure (a misspelt hyperparameter, a broken user env, a config its checkpoint
refuses) is deterministic: another attempt would burn another session on the same error.
The chain stops on it instead, quoting the error. The session summary says it (status
`error`, no step trained); a session that crashed too early to write one says it in its log
(a traceback or `error:` line, and no progress event). A parent not attached yet is the
exception: it is Kaggle's lag, not the config, and is retried (`PARENT_REASONS`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from kernel_template import layout

PARENT_REASONS = (layout.PARENT_MISSING_REASON, layout.PARENT_REQUIRED_REASON)
MAX_QUOTE_CHARS = 300
# The last line of a Python traceback ("TypeError: ...", "ModuleNotFoundError: ..."), or the
# one-line errors the kernel and its bootstrap print before exiting.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b(: .*)?$")
_ERROR_PREFIXES = ("error: ", "orchestrate: ")


def from_summary(summary: layout.SessionSummary | None) -> str | None:
    """The summary's error when the session ended `error` without training a step."""
    if summary is None or summary.status != "error":
        return None
    reason = summary.reason or "error"
    if reason in PARENT_REASONS:
        return None
    return quote(reason) if summary.timesteps_end <= summary.timesteps_start else None


def from_log(entries: Iterable[Any], kernel_status: str | None) -> str | None:
    """For a session without a summary: its error line when the log shows a crash before any
    training progress. A session killed at the limit (CANCEL_ACKNOWLEDGED) or one with no
    error line (killed from outside) is not a crash of ours: None, and it is retried."""
    if kernel_status == "CANCEL_ACKNOWLEDGED":
        return None
    error = None
    for entry in entries:
        for line in (entry.data or "").splitlines():
            event = layout.parse_event(line)
            if event is not None and event.get("event") == "progress":
                return None  # it trained: an ordinary failed attempt
            text = line.strip()
            if entry.stream_name == "stderr" and (
                _EXCEPTION_LINE.match(text) or text.startswith(_ERROR_PREFIXES)
            ):
                error = text
    return quote(error) if error else None


def quote(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_QUOTE_CHARS else line[: MAX_QUOTE_CHARS - 1] + "…"
