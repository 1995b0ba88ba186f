"""Follow a kernel session live (`orchestrate watch`, `launch --watch`).

The live log comes over SSE (`client.stream_log` reconnects and skips what it already
handed out) in a reader thread; the main thread prints, draws the progress bar from the
`@@orchestrate` progress events and polls `client.status` alongside. If the stream gives
up, watching goes on by polling the status, and the lines the stream missed are printed
from the stored log once the session is over (skipped by position, so none twice).

Exit status of the command (see `exit_code_for`). A status alone never proves success:
kaggle.com calls a crashed script COMPLETE, so the kernel's own `artifacts` event (printed once
session_summary.json, artifacts.zip and its sha256 are written, carrying the summary's status)
decides:
  COMPLETE -> 0 when that event says complete, budget_stop or signal_stop; else 1 (no
  session summary, or one with status error), and the last log lines are shown; ERROR -> 1;
  CANCEL_ACKNOWLEDGED (Kaggle stopped the session, e.g. at the 12 h limit) -> 0 when the
  kernel had already finished its outputs (its `artifacts` event, printed once
  artifacts.zip and its sha256 are written, with status budget_stop, signal_stop or
  complete): the checkpoint and outputs are saved and a chain can go on, so the run did
  not fail. Otherwise 1: the outputs may be incomplete (the newest checkpoint that
  verifies can still be resumed from).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Column

from kernel_template.layout import SummaryEvent, parse_event
from orchestrator.errors import UserError
from orchestrator.kaggle.models import TERMINAL_STATUSES

SAVED_SUMMARY_STATUSES = frozenset({"budget_stop", "signal_stop", "complete"})
# --tail: lines that arrive in one burst when the stream opens are the backlog; the burst ends
# after a quiet gap, or (an empty log) when nothing came this long after connecting.
FIRST_ENTRY_WAIT_S = 5.0
# A run this ledger did not push is polled through 403s this long before the denial is said.
UNKNOWN_RUN_DENIAL_GRACE_S = 30.0
# Through the 403s after a push: the first look again after this long, then twice as long,
# but at most every DENIAL_FAST_PAUSE_S for the first DENIAL_FAST_WINDOW_S. Kaggle's lag is
# seconds, sometimes minutes; a short session that ends inside it must be seen at once, and
# a look every 2 s stays far below the API's rate limit.
DENIAL_FIRST_PAUSE_S = 1.0
DENIAL_FAST_PAUSE_S = 2.0
DENIAL_FAST_WINDOW_S = 30.0
# Log lines shown when a run failed, so the cause is on screen.
FAILURE_TAIL_LINES = 15


# -- following a session ---------------------------------------------------------------------


@dataclass
class WatchResult:
    owner: str
    slug: str
    status: str
    failure_message: str | None = None
    lines: int = 0
    last_progress: dict[str, Any] | None = None
    summary: SummaryEvent | None = None  # the kernel's `summary` event, if it printed one
    artifacts: dict[str, Any] | None = None  # its `artifacts` event: artifacts.zip was written
    budget_stop: dict[str, Any] | None = None
    stream_failed: str | None = None  # why the live log was given up, if it was
    last_lines: list[str] = field(default_factory=list)  # the log's last lines, for failures

    @property
    def exit_code(self) -> int:
        return exit_code_for(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "run": f"{self.owner}/{self.slug}",
            "status": self.status,
            "exit_code": self.exit_code,
            "failure_message": self.failure_message,
            "lines": self.lines,
            "last_progress": self.last_progress,
            "summary": self.summary.model_dump() if self.summary else None,
            "artifacts": self.artifacts,
            "budget_stop": self.budget_stop,
            "stream_failed": self.stream_failed,
        }


def outputs_saved(result: WatchResult) -> bool:
    """The kernel wrote its summary and artifacts, with a status other than `error`."""
    return result.artifacts is not None and result.artifacts.get("status") in SAVED_SUMMARY_STATUSES


def exit_code_for(result: WatchResult) -> int:
    if result.status in ("COMPLETE", "CANCEL_ACKNOWLEDGED"):
        return 0 if outputs_saved(result) else 1
    return 1


def failure_reason(result: WatchResult) -> str:
    """Why a run that ended counts as failed, in one line."""
    if result.failure_message:
        return result.failure_message
    said = result.summary.model_dump() if result.summary else result.artifacts or {}
    if said.get("status") == "error":
        return f"the kernel's session summary says error: {said.get('reason') or 'no reason'}"
    if result.status == "COMPLETE":
        return "no session summary was written (the script crashed; Kaggle still says COMPLETE)"
    return "no artifacts were written"


def _duration(seconds: Any) -> str:
    try:
        seconds = int(float(seconds))
    except (TypeError, ValueError):
        return "?"
    hours, rest = divmod(max(seconds, 0), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def describe_progress(event: dict[str, Any]) -> str:
    step, total = event.get("step"), event.get("total")
    pct = f" ({100 * step / total:.0f}%)" if isinstance(step, int | float) and total else ""
    sps = event.get("sps")
    parts = [f"progress {step}/{total}{pct}"]
    chain_total = event.get("chain_total")
    if chain_total and chain_total != total:  # a chain segment: `total` is the segment's end
        parts.append(f"chain {step}/{chain_total}")
    if sps is not None:
        parts.append(f"{float(sps):.1f} steps/s")
    if event.get("eta_s") is not None:
        parts.append(f"ETA {_duration(event['eta_s'])}")
    if event.get("session_left_s") is not None:
        parts.append(f"session left {_duration(event['session_left_s'])}")
    return ", ".join(parts)


def describe_event(event: dict[str, Any]) -> str:
    name = event.get("event")
    if name == "progress":
        return describe_progress(event)
    details = ", ".join(
        f"{k}={_short(v)}"
        for k, v in event.items()
        if k != "event" and not isinstance(v, dict | list)
    )
    return f"{name}: {details}" if details else str(name)


def _short(value: Any) -> Any:
    """Floats to 6 significant digits: a score of -5137.62793173172 reads as -5137.63."""
    return f"{value:.6g}" if isinstance(value, float) else value


class LogView:
    """Prints log lines and events; a progress bar only on a real terminal."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal and not console.is_dumb_terminal
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def say(self, text: str, style: str | None = None) -> None:
        self.console.print(
            text,
            style=style if self.live else None,
            markup=False,
            highlight=False,
            soft_wrap=True,
            emoji=False,
        )

    def log_line(self, stream_name: str, text: str) -> None:
        self.say(text, style="red" if stream_name == "stderr" else None)

    def progress_event(self, event: dict[str, Any]) -> None:
        if not self.live:
            self.say(describe_progress(event))
            return
        if self.progress is None:
            # The bar gives way on a narrow terminal; the numbers are never cut ("1612/2000…").
            def whole() -> Column:
                return Column(no_wrap=True)

            self.progress = Progress(
                TextColumn("[bold]training", table_column=whole()),
                BarColumn(bar_width=None, table_column=Column(ratio=1, max_width=40)),
                MofNCompleteColumn(table_column=whole()),
                TextColumn("{task.fields[sps]} steps/s", table_column=whole()),
                TextColumn("ETA {task.fields[eta]}", table_column=whole()),
                TextColumn("session left {task.fields[left]}", table_column=whole()),
                console=self.console,
            )
            self.task = self.progress.add_task("training", total=None, sps="?", eta="?", left="?")
            self.progress.start()
        sps = event.get("sps")
        self.progress.update(
            self.task,
            completed=event.get("step") or 0,
            total=event.get("total") or None,
            sps=f"{float(sps):.1f}" if sps is not None else "?",
            eta=_duration(event.get("eta_s")),
            left=_duration(event.get("session_left_s")),
        )

    def end_progress(self, step: Any) -> None:
        """Training ended (the kernel's summary): the bar shows the last step, not the last
        progress event before it."""
        if self.progress is None or not isinstance(step, int):
            return
        self.progress.update(self.task, completed=step, eta=_duration(0))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


class _StreamReader:
    """Reads `client.stream_log` in a thread into a queue; the main thread does all printing."""

    def __init__(self, client, owner: str, slug: str, skip: int, inbox: queue.Queue) -> None:
        self.inbox = inbox
        self.stopped = threading.Event()
        self.thread = threading.Thread(
            target=self._run,
            args=(client, owner, slug, skip),
            name=f"watch-{owner}/{slug}",
            daemon=True,
        )
        self.thread.start()

    def _run(self, client, owner: str, slug: str, skip: int) -> None:
        try:
            for position, entry in enumerate(client.stream_log(owner, slug)):
                if self.stopped.is_set():
                    return
                if position >= skip:  # a re-opened stream replays from the start
                    self.inbox.put(("entry", entry))
            self.inbox.put(("end", None))
        except Exception as error:  # any failure: the main thread falls back to polling
            self.inbox.put(("error", error))


@dataclass
class _Follower:
    client: Any
    owner: str
    slug: str
    view: LogView
    tail: int | None
    poll_s: float
    quiet_s: float
    end_grace_s: float
    denial_grace_s: float
    result: WatchResult = field(init=False)
    seen: int = 0  # log entries handled so far, in stream order
    backlog: list | None = None

    def __post_init__(self) -> None:
        self.result = WatchResult(self.owner, self.slug, status="UNKNOWN")
        self.backlog = [] if self.tail is not None else None

    # entries --------------------------------------------------------------------------------
    def take(self, entry) -> None:
        self.seen += 1
        if self.backlog is not None:
            self.backlog.append(entry)
        else:
            self.show(entry)

    def flush_backlog(self) -> None:
        if self.backlog is None:
            return
        backlog, self.backlog = self.backlog, None
        for entry in backlog[len(backlog) - self.tail :] if self.tail else []:
            self.show(entry)
        for entry in backlog[: len(backlog) - self.tail] if self.tail else backlog:
            self.note_events(entry)  # hidden lines still tell us about progress and the summary

    def note_events(self, entry) -> list[tuple[str, dict | None]]:
        lines = []
        for line in entry.data.splitlines() or [""]:
            event = parse_event(line)
            if event is not None:
                name = event.get("event")
                if name == "progress":
                    self.result.last_progress = event
                elif name == "summary":
                    with contextlib.suppress(ValidationError):  # a garbled line: not the end
                        self.result.summary = SummaryEvent.model_validate(event)
                elif name == "artifacts":
                    self.result.artifacts = event
                elif name == "budget_stop":
                    self.result.budget_stop = event
            lines.append((line, event))
        return lines

    def show(self, entry) -> None:
        for line, event in self.note_events(entry):
            self.result.lines += 1
            self.result.last_lines = [*self.result.last_lines[-(FAILURE_TAIL_LINES - 1) :], line]
            if event is None:
                self.view.log_line(entry.stream_name, line)
            elif event.get("event") == "progress":
                self.view.progress_event(event)
            else:
                if event.get("event") == "summary":
                    self.view.end_progress(event.get("step", event.get("timesteps_end")))
                self.view.say(describe_event(event), style="cyan")

    # status ---------------------------------------------------------------------------------
    def poll_status(self, *, first: bool = False) -> str:
        try:
            status = self.client.status(self.owner, self.slug)
        except Exception as error:  # the client already retried; keep watching, try again later
            # Unreachable from the start: say so (exit 3) rather than wait on nothing.
            if first or _is_not_found(error) or _is_refused(error):
                raise
            self.view.say(f"status check failed ({error}); still watching", style="yellow")
            return self.result.status
        if status.status != self.result.status:
            self.result.status = status.status
            self.result.failure_message = status.failure_message
            message = f"status: {status.status}"
            if status.failure_message:
                message += f" ({status.failure_message})"
            self.view.say(message, style="bold")
        return status.status

    # the loop -------------------------------------------------------------------------------
    def first_status(self) -> str:
        """The first status, polled through Kaggle's 403s until `denial_grace_s` has passed:
        a kernel pushed moments ago is denied for a while (the read-after-write lag)."""
        from orchestrator.runs import denied_message

        began = time.monotonic()
        said = False
        pause = DENIAL_FIRST_PAUSE_S
        while True:
            try:
                return self.poll_status(first=True)
            except Exception as error:
                waited = time.monotonic() - began
                if _is_denied(error) and waited < self.denial_grace_s:
                    if not said:
                        self.view.say(
                            f"{self.owner}/{self.slug} is not visible on Kaggle yet (403: new "
                            "kernels are hidden for a while after their push); waiting",
                            style="yellow",
                        )
                        said = True
                    grace_left = max(self.denial_grace_s - waited, 0.05)
                    time.sleep(min(denial_pause(waited, pause, self.poll_s), grace_left))
                    pause *= 2
                    continue
                if _is_denied(error):
                    self.client.verify_credentials()  # a refused key says so, with its fix
                    how_long = f"denied for {waited:.0f} s"
                    raise UserError(denied_message(self.owner, self.slug, how_long)) from None
                if _is_not_found(error):
                    raise UserError(
                        f"kernel {self.owner}/{self.slug} not found or not visible to these "
                        "credentials; check the name with `orchestrate runs`"
                    ) from None
                raise

    def run(self) -> WatchResult:
        status = self.first_status()
        inbox: queue.Queue = queue.Queue()
        reader = _StreamReader(self.client, self.owner, self.slug, 0, inbox)
        stream_done = False
        pending_end = False  # the stream ended; a status check decides whether the session did
        next_poll = time.monotonic() + self.poll_s
        last_entry = started = time.monotonic()
        terminal_at: float | None = time.monotonic() if status in TERMINAL_STATUSES else None
        try:
            while True:
                now = time.monotonic()
                if self.backlog is not None and (
                    stream_done
                    or (self.seen and now - last_entry >= self.quiet_s)
                    or (not self.seen and now - started >= FIRST_ENTRY_WAIT_S)
                ):
                    self.flush_backlog()
                if terminal_at is not None and (
                    stream_done or now - terminal_at >= self.end_grace_s
                ):
                    break
                try:
                    kind, item = inbox.get(timeout=0.1)
                except queue.Empty:
                    kind, item = None, None
                if kind == "entry":
                    self.take(item)
                    last_entry = time.monotonic()
                elif kind == "end":
                    if terminal_at is not None:
                        stream_done = True
                    else:
                        pending_end = True
                        next_poll = time.monotonic()
                elif kind == "error":
                    self.result.stream_failed = str(item)
                    stream_done = True  # the rest comes from the stored log at the end
                    self.flush_backlog()
                    self.view.say(
                        f"live log lost ({item}); following the status, the rest of the log comes at the end",
                        style="yellow",
                    )
                if terminal_at is None and time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.poll_s
                    if self.poll_status() in TERMINAL_STATUSES:
                        terminal_at = time.monotonic()
                        stream_done = stream_done or pending_end
                    elif (
                        pending_end
                    ):  # the session goes on: open the stream again, skipping what we have
                        pending_end = False
                        reader = _StreamReader(self.client, self.owner, self.slug, self.seen, inbox)
            reader.stopped.set()
            if self.result.stream_failed or not stream_done:
                self.catch_up()
            self.flush_backlog()
        finally:
            self.view.close()
        return self.result

    def catch_up(self) -> None:
        """After the session: the stored log's entries the stream did not deliver."""
        try:
            entries = self.client.list_output(self.owner, self.slug).log
        except Exception as error:
            self.view.say(f"could not fetch the stored log ({error})", style="yellow")
            return
        for entry in entries[self.seen :]:
            self.take(entry)


def _is_not_found(error: Exception) -> bool:
    from orchestrator.kaggle.errors import NotFoundError

    return isinstance(error, NotFoundError)


def denial_pause(waited_s: float, pause_s: float, poll_s: float) -> float:
    """The wait before the next look at a kernel Kaggle still denies (403), `waited_s` into
    the denial, the doubling pause being `pause_s`: see DENIAL_FAST_PAUSE_S."""
    cap = DENIAL_FAST_PAUSE_S if waited_s < DENIAL_FAST_WINDOW_S else poll_s
    return min(pause_s, cap, poll_s)


def _is_denied(error: Exception) -> bool:
    from orchestrator.kaggle.errors import KernelNotVisible

    return isinstance(error, KernelNotVisible)


def _is_refused(error: Exception) -> bool:
    """Errors that retrying cannot cure (wrong or missing credentials, a rejected request)."""
    from orchestrator.kaggle.errors import AuthenticationError, BadRequest, CredentialsNotFound

    return isinstance(error, AuthenticationError | BadRequest | CredentialsNotFound)


def follow(
    client,
    owner: str,
    slug: str,
    *,
    console: Console | None = None,
    tail: int | None = None,
    poll_s: float = 5.0,
    quiet_s: float = 0.5,
    end_grace_s: float = 10.0,
    denial_grace_s: float = UNKNOWN_RUN_DENIAL_GRACE_S,
) -> WatchResult:
    """Follow a session until it ends; `tail` shows only the last N lines written before now.

    `denial_grace_s`: how long Kaggle's 403 on the kernel is waited through (for a run just
    pushed, what is left of VISIBILITY_GRACE_S since its push: see `denial_grace_for`).
    When the run failed, its last log lines are shown.
    """
    if tail is not None and tail < 0:
        raise UserError(f"--tail {tail} is negative; give the number of earlier lines to show")
    view = LogView(console or Console())
    follower = _Follower(
        client, owner, slug, view, tail, poll_s, quiet_s, end_grace_s, denial_grace_s
    )
    result = follower.run()
    if result.status in TERMINAL_STATUSES and result.exit_code:
        view.say(f"{owner}/{slug} failed: {failure_reason(result)}", style="red")
        if result.last_lines:
            view.say(f"last {len(result.last_lines)} log lines:", style="red")
            for line in result.last_lines:
                view.say(f"  {line}")
    return result


def denial_grace_for(record) -> float:
    """How long to wait through 403s for a ledger run: the rest of the visibility grace since
    its push (at least a short grace), or the short grace for a run pushed elsewhere."""
    from orchestrator.kaggle import VISIBILITY_GRACE_S

    if record is None:
        return UNKNOWN_RUN_DENIAL_GRACE_S
    return max(VISIBILITY_GRACE_S - record.seconds_since_push(), UNKNOWN_RUN_DENIAL_GRACE_S)


def watch(
    client, owner: str, slug: str, *, console: Console | None = None, tail: int | None = None
) -> str:
    """Follow a session until it ends; returns its terminal status (docs/internals.md)."""
    return follow(client, owner, slug, console=console, tail=tail).status
