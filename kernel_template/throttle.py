"""Structured, throttled logging for the kernel.

Training runs thousands of steps per second; a log line per step would bury the live
log and slow the run. Each tag can be throttled (every N steps, only when its value
changes, or a sampled fraction), and a global budget caps the volume at
`LoggingConfig.max_lines_per_step` lines per step (a token bucket that starts with a
small burst, plus a ceiling on the session's total so the burst is paid back).
Warnings, errors and progress events are never suppressed. Suppressed lines are counted
per tag and reported in one line now and then.

Every printed line is also appended to `logs/events.jsonl` as one JSON object, written
with a single unbuffered `write` so a SIGKILL never leaves half a line behind.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from kernel_template.config import LoggingConfig, TagThrottle
from kernel_template.layout import format_event

# Levels that always print: a throttle must never hide a problem.
ALWAYS_PRINTED_LEVELS = frozenset({"warning", "error", "critical"})
REPORT_TAG = "throttle"
EVENT_TAG = "event"
STATE_VERSION = 1


class ThrottledLogger:
    """Prints log lines that pass their tag's throttle and the global budget; counts the rest.

    `lines_written` and `suppressed` continue across segments through `state_dict()`;
    `session_lines_written` and `session_suppressed` count this process only (what a
    session summary reports).
    """

    def __init__(
        self,
        config: LoggingConfig,
        events_path: str | Path,
        stream: IO[str] | None = None,
        *,
        burst_lines: int = 20,
        report_every_steps: int = 10_000,
        report_every_s: float = 300.0,
        sample_seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.events_path = Path(events_path)
        self._stream = stream
        self._rate = float(config.max_lines_per_step)
        self._burst = max(1, int(burst_lines))
        self._report_every_steps = report_every_steps
        self._report_every_s = report_every_s
        self._clock = clock
        # Private RNG: sampling must never consume the training's random streams.
        self._sampler = random.Random(sample_seed)

        self.lines_written = 0
        self.suppressed: dict[str, int] = {}
        self.session_lines_written = 0
        self.session_suppressed: dict[str, int] = {}
        self._pending: dict[str, int] = {}  # suppressed since the last report
        self._tag_last_step: dict[str, int] = {}
        self._tag_last_value: dict[str, str] = {}

        self._tokens = float(self._burst)
        self._step: int | None = None  # newest step seen
        self._session_start_step: int | None = None
        self._last_report_step: int | None = None
        self._last_report_time = clock()

        self.events_path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(self.events_path)
        # Unbuffered binary append: one write() per whole line, nothing held in a buffer.
        self._events = open(self.events_path, "ab", buffering=0)  # noqa: SIM115

    # ------------------------------------------------------------------ public API

    def log(self, tag: str, message: str, *, step: int, level: str = "info", **fields: Any) -> bool:
        """Print and record one line unless a throttle or the budget suppresses it.

        Returns True when the line was printed. With an `on_change` throttle the compared
        value is `fields["value"]` when given, else the message.
        """
        level = level.lower()
        self._advance(step)
        if level in ALWAYS_PRINTED_LEVELS:
            self._emit(tag, message, step=step, level=level, fields=fields)
            self._remember(tag, step, fields.get("value", message))
            return True
        throttle = self.config.tags.get(tag)
        if throttle is not None and not self._tag_allows(
            tag, throttle, step, fields.get("value", message)
        ):
            self._count_suppressed(tag)
            self._maybe_report()
            return False
        if not self._budget_allows():
            self._count_suppressed(tag)
            self._maybe_report()
            return False
        self._emit(tag, message, step=step, level=level, fields=fields)
        self._remember(tag, step, fields.get("value", message))
        self._maybe_report()
        return True

    def event(self, name: str, **fields: Any) -> None:
        """Print a contract-5 progress line (never throttled; the caller rate-limits)."""
        step = fields.get("step")
        if isinstance(step, int):
            self._advance(step)
        line = format_event(name, **fields)
        self._write_stdout(line)
        self._write_record(
            step if isinstance(step, int) else self._step, EVENT_TAG, "info", name, fields
        )
        self._charge()

    def report_suppressed(self, force: bool = True) -> bool:
        """Print the pending suppression counts now (e.g. before finalising). True if printed."""
        if not self._pending:
            return False
        if not force and not self._report_due():
            return False
        total = sum(self._pending.values())
        parts = ", ".join(
            f"{tag} {count}"
            for tag, count in sorted(self._pending.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        counts = dict(self._pending)
        self._pending.clear()
        self._last_report_step = self._step
        self._last_report_time = self._clock()
        message = f"suppressed {total} lines: {parts}"
        self._write_stdout(_format_line(REPORT_TAG, message, self._step, "info", {}))
        self._write_record(self._step, REPORT_TAG, "info", message, {"suppressed": counts})
        self._charge()
        return True

    def session_stats(self, steps: int | None = None) -> dict[str, Any]:
        """This session's volume in the shape of the SessionSummary log fields."""
        if steps is None:
            steps = (
                0
                if self._step is None or self._session_start_step is None
                else self._step - self._session_start_step
            )
        return {
            "log_lines": self.session_lines_written,
            "log_lines_suppressed": sum(self.session_suppressed.values()),
            "log_lines_per_step": (self.session_lines_written / steps) if steps > 0 else None,
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable counters and throttle state, to continue in the next segment."""
        version, internal, gauss = self._sampler.getstate()
        return {
            "version": STATE_VERSION,
            "lines_written": self.lines_written,
            "suppressed": dict(self.suppressed),
            "pending": dict(self._pending),
            "tag_last_step": dict(self._tag_last_step),
            "tag_last_value": dict(self._tag_last_value),
            "sampler": [version, list(internal), gauss],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"logger state has version {state.get('version')!r}, expected {STATE_VERSION}; start without it"
            )
        self.lines_written = int(state["lines_written"])
        self.suppressed = {str(k): int(v) for k, v in state["suppressed"].items()}
        self._pending = {str(k): int(v) for k, v in state.get("pending", {}).items()}
        self._tag_last_step = {str(k): int(v) for k, v in state["tag_last_step"].items()}
        self._tag_last_value = {str(k): str(v) for k, v in state["tag_last_value"].items()}
        version, internal, gauss = state["sampler"]
        self._sampler.setstate((version, tuple(internal), gauss))

    def close(self) -> None:
        if not self._events.closed:
            self._events.close()

    def __enter__(self) -> ThrottledLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _advance(self, step: int) -> None:
        """Refill the token bucket for the steps since the last call."""
        if self._session_start_step is None:
            self._session_start_step = step
            self._last_report_step = step
        if self._step is None:
            self._step = step
            return
        if step > self._step:
            self._tokens = min(float(self._burst), self._tokens + self._rate * (step - self._step))
            self._step = step

    def _budget_allows(self) -> bool:
        steps = (
            0
            if self._step is None or self._session_start_step is None
            else self._step - self._session_start_step
        )
        # The ceiling repays the opening burst: over a whole session lines <= max(burst, rate * steps).
        ceiling = max(float(self._burst), self._rate * steps)
        return self._tokens >= 1.0 and self.session_lines_written + 1 <= ceiling

    def _charge(self) -> None:
        # Unsuppressible lines may drive the bucket into (bounded) debt, keeping the total in budget.
        self._tokens = max(-float(self._burst), self._tokens - 1.0)

    def _tag_allows(self, tag: str, throttle: TagThrottle, step: int, value: Any) -> bool:
        last_step = self._tag_last_step.get(tag)
        if (
            throttle.every_steps is not None
            and last_step is not None
            and step - last_step < throttle.every_steps
        ):
            return False
        if throttle.on_change and self._tag_last_value.get(tag) == _value_key(value):
            return False
        return throttle.sample is None or self._sampler.random() < throttle.sample

    def _remember(self, tag: str, step: int, value: Any) -> None:
        self._tag_last_step[tag] = step
        self._tag_last_value[tag] = _value_key(value)

    def _count_suppressed(self, tag: str) -> None:
        self.suppressed[tag] = self.suppressed.get(tag, 0) + 1
        self.session_suppressed[tag] = self.session_suppressed.get(tag, 0) + 1
        self._pending[tag] = self._pending.get(tag, 0) + 1

    def _report_due(self) -> bool:
        steps_since = (
            None
            if self._step is None or self._last_report_step is None
            else self._step - self._last_report_step
        )
        if steps_since is not None and steps_since >= self._report_every_steps:
            return True
        return self._clock() - self._last_report_time >= self._report_every_s

    def _maybe_report(self) -> None:
        if self._pending and self._report_due():
            self.report_suppressed()

    def _emit(
        self, tag: str, message: str, *, step: int | None, level: str, fields: dict[str, Any]
    ) -> None:
        self._write_stdout(_format_line(tag, message, step, level, fields))
        self._write_record(step, tag, level, message, fields)
        self._charge()

    def _write_stdout(self, line: str) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(line + "\n")
        stream.flush()
        self.lines_written += 1
        self.session_lines_written += 1

    def _write_record(
        self, step: int | None, tag: str, level: str, message: str, fields: dict[str, Any]
    ) -> None:
        record = {
            "time": time.time(),
            "step": step,
            "tag": tag,
            "level": level,
            "message": message,
            "fields": fields,
        }
        try:
            text = json.dumps(record, default=str, separators=(",", ":"), allow_nan=False)
        except ValueError:  # NaN/inf are not JSON: record them as null
            record["fields"] = {key: _finite_or_none(value) for key, value in fields.items()}
            text = json.dumps(record, default=str, separators=(",", ":"))
        data = (text + "\n").encode()
        view = memoryview(data)
        while view:  # FileIO.write may write less than asked; finish the line
            written = self._events.write(view)
            view = view[written:]


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline (a kill inside a write() spanning pages)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "r+b") as handle:
        handle.seek(-1, 2)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        data = handle.read()
        handle.truncate(data.rfind(b"\n") + 1)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def _value_key(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def _format_line(
    tag: str, message: str, step: int | None, level: str, fields: dict[str, Any]
) -> str:
    where = f"[{step}]" if step is not None else "[-]"
    extra = "".join(f" {key}={_short(value)}" for key, value in fields.items())
    return f"{where} {level.upper()} {tag}: {message}{extra}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
