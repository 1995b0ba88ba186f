"""watch against the real emulator: real kernels print lines and @@orchestrate events."""

from __future__ import annotations

import io
import json
import re
import textwrap
import time
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.emulator.testing import start_emulator
from orchestrator.kaggle import (
    TERMINAL_STATUSES,
    Credentials,
    KaggleClient,
    KernelNotVisible,
    PushSpec,
    RetryPolicy,
)
from orchestrator.watch import exit_code_for, follow, watch
from tests.support.emulator import use_emulator_env, wait_terminal
from tests.support.kaggle_fakes import mock_client

USERS = {"alice": "alice-key-watch"}

# Prints LINES numbered stdout lines (and a stderr line and a progress event with each),
# spread over about LINES * PAUSE seconds, then an optional summary event, then exits.
KERNEL = textwrap.dedent(
    """
    import sys, time
    from kernel_template.layout import format_event
    LINES, PAUSE, EXIT, SUMMARY, ARTIFACTS = {lines}, {pause}, {exit}, {summary!r}, {artifacts!r}
    print("starting", flush=True)
    for i in range(LINES):
        print(f"line {{i}}", flush=True)
        print(f"warn {{i}}", file=sys.stderr, flush=True)
        print(format_event("progress", step=(i + 1) * 10, total=LINES * 10, sps=100.0,
                           eta_s=(LINES - i - 1) * PAUSE, session_left_s=43000 - i), flush=True)
        time.sleep(PAUSE)
    if SUMMARY:
        print(format_event("budget_stop", step=LINES * 10, reason="session limit near"), flush=True)
        print(format_event("summary", status=SUMMARY, timesteps_end=LINES * 10), flush=True)
    if SUMMARY and ARTIFACTS:
        print(format_event("artifacts", sha256="0" * 64, size=123, status=SUMMARY), flush=True)
    print("done", flush=True)
    time.sleep({linger})
    sys.exit(EXIT)
    """
)


def kernel(lines=10, pause=0.1, exit=0, summary="complete", artifacts=True, linger=0):
    return KERNEL.format(
        lines=lines, pause=pause, exit=exit, summary=summary, artifacts=artifacts, linger=linger
    )


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    root = tmp_path_factory.mktemp("watch-emulator")
    with start_emulator(root, USERS) as handle:
        yield handle


@pytest.fixture
def client(emulator):
    credentials = Credentials(username="alice", key=USERS["alice"])
    with KaggleClient(emulator.api_url, credentials, retry=RetryPolicy.fast(4)) as made:
        yield made
    emulator.clear_faults()


def push(client, slug, text, **fields):
    client.push(PushSpec(id=f"alice/{slug}", title=f"Watch {slug}", text=text, **fields))


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=60), out


def wait_terminal_or_running(client, slug, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.status("alice", slug).status in ("RUNNING", *TERMINAL_STATUSES):
                return
        except KernelNotVisible:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def test_lines_progress_and_status_in_plain_mode(client):
    push(client, "watch-plain", kernel(lines=10, pause=0.15))
    console, out = plain_console()
    result = follow(client, "alice", "watch-plain", console=console, poll_s=0.3)
    text = out.getvalue()
    assert result.status == "COMPLETE" and exit_code_for(result) == 0
    assert "\x1b" not in text, "no ANSI codes when stdout is not a terminal"
    got = lines_of(text)
    for i in range(10):
        assert got.count(f"line {i}") == 1
        assert got.count(f"warn {i}") == 1
    # stdout lines keep their order
    assert [line for line in got if line.startswith("line ")] == [f"line {i}" for i in range(10)]
    # progress events become plain lines, not a bar, and not the raw event
    # (longer than the 60-column console: plain lines are never wrapped)
    assert "progress 100/100 (100%), 100.0 steps/s, ETA 0:00:00, session left 11:56:31" in got
    assert not any(line.startswith("@@orchestrate") for line in got)
    assert "status: COMPLETE" in got
    assert result.last_progress["step"] == 100


def test_a_crash_ends_complete_and_exits_1_with_its_last_lines(client):
    # Kaggle calls a crashed script COMPLETE: no session summary means the run failed.
    push(client, "watch-error", kernel(lines=2, pause=0.05, exit=3, summary=None))
    console, out = plain_console()
    result = follow(client, "alice", "watch-error", console=console, poll_s=0.3)
    assert result.status == "COMPLETE" and result.exit_code == 1
    got = lines_of(out.getvalue())
    assert any(
        line.startswith("alice/watch-error failed: no session summary was written") for line in got
    )
    shown = got[got.index(next(line for line in got if line.startswith("last "))) + 1 :]
    # The log's last lines (stdout and stderr are read apart, so their order may interleave).
    assert {"  starting", "  line 1", "  warn 1", "  done"} <= set(shown)


def test_an_error_summary_exits_1(client):
    push(client, "watch-error-summary", kernel(lines=2, pause=0.05, exit=1, summary="error"))
    result = follow(client, "alice", "watch-error-summary", console=plain_console()[0], poll_s=0.3)
    assert result.status == "COMPLETE" and result.exit_code == 1
    assert result.artifacts["status"] == "error"


def test_an_error_status_exits_1_with_the_failure_message(emulator, client):
    push(client, "watch-killed-error", kernel(lines=2, pause=0.05, linger=60))
    wait_terminal_or_running(client, "watch-killed-error")
    emulator.kill_kernel("alice", "watch-killed-error")  # an emulated crash of the session
    result = follow(client, "alice", "watch-killed-error", console=plain_console()[0], poll_s=0.3)
    assert result.status == "ERROR" and result.exit_code == 1
    assert "terminated unexpectedly" in result.failure_message


def test_cancel_after_saved_artifacts_is_not_a_failure(client):
    # The kernel stopped for its budget, wrote its artifacts, then hit the session limit.
    push(
        client,
        "watch-limit",
        kernel(lines=2, pause=0.05, summary="budget_stop", linger=30),
        session_timeout_seconds=2,
    )
    console, out = plain_console()
    result = follow(client, "alice", "watch-limit", console=console, poll_s=0.3)
    assert result.status == "CANCEL_ACKNOWLEDGED"
    assert result.summary.status == "budget_stop" and result.budget_stop is not None
    assert result.artifacts is not None and result.exit_code == 0
    assert any(line.startswith("summary: status=budget_stop") for line in lines_of(out.getvalue()))


def test_cancel_after_a_summary_but_before_the_artifacts_is_a_failure(client):
    # Killed while zipping: a summary event, but no artifacts.zip to pull.
    text = kernel(lines=2, pause=0.05, summary="budget_stop", artifacts=False, linger=30)
    push(client, "watch-limit-nozip", text, session_timeout_seconds=2)
    result = follow(client, "alice", "watch-limit-nozip", console=plain_console()[0], poll_s=0.3)
    assert result.status == "CANCEL_ACKNOWLEDGED" and result.summary is not None
    assert result.artifacts is None and result.exit_code == 1


def test_cancel_without_a_summary_is_a_failure(client):
    text = kernel(lines=2, pause=0.05, linger=30, summary=None)
    push(client, "watch-killed", text, session_timeout_seconds=2)
    console, _ = plain_console()
    result = follow(client, "alice", "watch-killed", console=console, poll_s=0.3)
    assert result.status == "CANCEL_ACKNOWLEDGED" and result.summary is None
    assert result.exit_code == 1


def test_tail_of_a_finished_run_shows_its_last_lines(client):
    push(client, "watch-tail-done", kernel(lines=8, pause=0.01))
    wait_terminal(client, "alice", "watch-tail-done")
    console, out = plain_console()
    status = watch(client, "alice", "watch-tail-done", console=console, tail=3)
    assert status == "COMPLETE"
    got = [line for line in lines_of(out.getvalue()) if not line.startswith("status:")]
    # the log's last three lines: the last progress event, "done"... in the order written
    assert len(got) == 3
    assert got[-1] == "done"
    assert "line 0" not in got


class _Trigger(io.StringIO):
    """Console output that creates `go` once `marker` is printed (lets the kernel go on)."""

    def __init__(self, marker: str, go: Path) -> None:
        super().__init__()
        self.marker, self.go = marker, go

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.marker in self.getvalue():
            self.go.touch()
        return written


def test_tail_of_a_running_run_shows_the_last_n_then_everything_live(client, tmp_path):
    go = tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import os, time
        for i in range(20):
            print(f"old {{i}}", flush=True)
        deadline = time.time() + 60
        while not os.path.exists({str(go)!r}) and time.time() < deadline:
            time.sleep(0.05)
        for i in range(5):
            print(f"new {{i}}", flush=True)
        """
    )
    push(client, "watch-tail-live", script)
    deadline = time.monotonic() + 30
    while True:
        try:
            if len(client.list_output("alice", "watch-tail-live").log) >= 20:
                break
        except KernelNotVisible:  # just pushed
            pass
        assert time.monotonic() < deadline, "the kernel did not print its first lines"
        time.sleep(0.1)
    out = _Trigger("old 19", go)
    console = Console(file=out, force_terminal=False, width=80)
    result = follow(client, "alice", "watch-tail-live", console=console, tail=3, poll_s=0.3)
    got = [line for line in lines_of(out.getvalue()) if not line.startswith("status:")]
    assert result.status == "COMPLETE"
    # (then the failure report: a bare script writes no session summary)
    assert got[:8] == ["old 17", "old 18", "old 19", "new 0", "new 1", "new 2", "new 3", "new 4"]


@pytest.mark.parametrize("faults", ["logs_stream=drop*3", "logs_stream=503*1"])
def test_dropped_stream_connections_duplicate_no_line(emulator, client, faults):
    emulator.set_faults(faults)
    push(client, "watch-drop-" + faults[-1], kernel(lines=12, pause=0.1))
    console, out = plain_console()
    result = follow(client, "alice", "watch-drop-" + faults[-1], console=console, poll_s=0.3)
    got = lines_of(out.getvalue())
    assert result.status == "COMPLETE"
    for i in range(12):
        assert got.count(f"line {i}") == 1, f"line {i} appears {got.count(f'line {i}')} times"
    assert got.count("done") == 1
    assert emulator.call_counts().get("logs_stream", 0) >= 2  # it really reconnected


def test_a_stream_that_never_works_falls_back_to_polling(emulator, client):
    emulator.set_faults("logs_stream=503")  # every stream request fails
    push(client, "watch-no-stream", kernel(lines=6, pause=0.1))
    console, out = plain_console()
    result = follow(client, "alice", "watch-no-stream", console=console, poll_s=0.3)
    got = lines_of(out.getvalue())
    assert result.status == "COMPLETE" and result.stream_failed
    assert any(line.startswith("live log lost") for line in got)
    for i in range(6):
        assert got.count(f"line {i}") == 1  # from the stored log, once the session ended
    assert got.count("done") == 1


def test_an_unknown_kernel_is_a_clear_error(client):
    from orchestrator.errors import UserError

    with pytest.raises(UserError, match="the slug may be misspelt"):
        follow(client, "alice", "no-such-kernel", console=plain_console()[0], denial_grace_s=1)


def test_refused_credentials_end_the_watch_instead_of_polling_forever(emulator, client):
    from orchestrator.kaggle.errors import AuthenticationError

    push(client, "watch-wrong-key", kernel(lines=2, pause=0.05))
    wrong = Credentials(username="alice", key="not-the-key")
    with (
        KaggleClient(emulator.api_url, wrong, retry=RetryPolicy.fast(2)) as refused,
        pytest.raises(AuthenticationError),
    ):
        follow(refused, "alice", "watch-wrong-key", console=plain_console()[0], poll_s=0.5)


def test_kaggle_unreachable_at_the_start_is_an_infrastructure_error():
    import socket

    from orchestrator.kaggle.errors import ServiceUnavailable

    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    credentials = Credentials(username="alice", key=USERS["alice"])
    api = f"http://127.0.0.1:{port}/api/v1"
    with (
        KaggleClient(api, credentials, retry=RetryPolicy.fast(2)) as down,
        pytest.raises(ServiceUnavailable),
    ):
        follow(down, "alice", "anything-here", console=plain_console()[0], poll_s=0.5)


def test_an_80_column_terminal_shows_the_whole_step_count():
    from orchestrator.watch import LogView

    out = io.StringIO()
    view = LogView(Console(file=out, force_terminal=True, width=80))
    event = {"event": "progress", "step": 14788, "total": 200000, "sps": 628.8}
    view.progress_event({**event, "eta_s": 294, "session_left_s": 36574})
    view.close()
    assert "14788/200000" in out.getvalue()


def test_event_floats_are_shortened():
    from orchestrator.watch import describe_event

    text = describe_event({"event": "export", "step": 0, "score": -5137.62793173172})
    assert text == "export: step=0, score=-5137.63"


# -- the command ----------------------------------------------------------------------------


@pytest.fixture
def cli_env(emulator, monkeypatch, tmp_path):
    return use_emulator_env(monkeypatch, emulator, tmp_path)


def test_command_watches_a_run_started_elsewhere_with_json(client, cli_env, capsys):
    from orchestrator.commands import main

    push(client, "watch-cli", kernel(lines=3, pause=0.05))
    code = main(["watch", "alice/watch-cli", "--json", "--poll", "0.5"])
    captured = capsys.readouterr()
    assert code == 0
    document = json.loads(captured.out)  # stdout holds the JSON document and nothing else
    assert document["status"] == "COMPLETE" and document["exit_code"] == 0
    assert "line 2" in captured.err


def test_command_resolves_a_ledger_run_and_records_its_status(client, cli_env, capsys):
    from orchestrator.commands import main
    from orchestrator.ledger import Ledger, RunRecord

    ledger = Ledger(cli_env)
    ledger.record_intent(RunRecord(slug="watch-ledger", owner="alice"))
    ledger.update("watch-ledger", state="pushed")
    push(client, "watch-ledger", kernel(lines=2, pause=0.05, exit=1, summary=None))
    code = main(["watch", "watch-ledger", "--poll", "0.5"])
    captured = capsys.readouterr()
    assert code == 1
    assert re.search(
        r"error: alice/watch-ledger ended COMPLETE: no session summary was written", captured.err
    )
    assert Ledger(cli_env).get("watch-ledger").kernel_status == "COMPLETE"


def test_command_refuses_an_unknown_run_name(cli_env, capsys):
    from orchestrator.commands import main

    assert main(["watch", "never-pushed"]) == 2
    assert "not in the ledger" in capsys.readouterr().err


def test_a_terminal_shows_a_progress_bar(client):
    push(client, "watch-tty", kernel(lines=5, pause=0.1))
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    result = follow(client, "alice", "watch-tty", console=console, poll_s=0.3)
    text = out.getvalue()
    assert result.status == "COMPLETE"
    assert "\x1b[" in text  # rich drew with ANSI codes
    assert "50/50" in text and "steps/s" in text
    assert "line 4" in text
    assert "@@orchestrate" not in text  # events drive the bar instead of being printed


# -- run names ------------------------------------------------------------------------------


def test_resolve_run_by_slug_owner_slug_or_newest(tmp_path):
    from orchestrator.errors import UserError
    from orchestrator.ledger import Ledger, RunRecord
    from orchestrator.runs import resolve_run

    ledger = Ledger(tmp_path)
    with pytest.raises(UserError, match="no pushed run"):
        resolve_run(None, ledger)
    for run, owner, day in (("older", "alice", 1), ("newer", "bob", 2)):
        ledger.record_intent(RunRecord(slug=run, owner=owner))
        ledger.update(run, state="pushed", pushed_at=f"2026-01-0{day}T00:00:00Z")
    ledger.record_intent(RunRecord(slug="never-pushed", owner="alice"))  # intent only: skipped
    newest = resolve_run(None, ledger)
    assert (newest.owner, newest.slug, newest.in_ledger) == ("bob", "newer", True)
    assert resolve_run("older", ledger).ref == "alice/older"
    elsewhere = resolve_run("carol/other-run", ledger)
    assert elsewhere.ref == "carol/other-run" and not elsewhere.in_ledger
    # owner/slug of a ledger run by another owner is not that ledger run
    assert not resolve_run("carol/older", ledger).in_ledger
    with pytest.raises(UserError, match="owner/slug"):
        resolve_run("a/b/c", ledger)
    with pytest.raises(UserError, match="not in the ledger"):
        resolve_run("missing", ledger)


@pytest.mark.reliability
@pytest.mark.parametrize("seed", range(5))
def test_many_random_stream_drops_never_lose_or_repeat_a_line(emulator, client, seed):
    emulator.set_faults(f"logs_stream=drop@0.3,logs_stream=503@0.1,seed={seed}")
    slug = f"watch-random-drops-{seed}"
    push(client, slug, kernel(lines=150, pause=0.02))
    console, out = plain_console()
    result = follow(client, "alice", slug, console=console, poll_s=0.3)
    got = lines_of(out.getvalue())
    assert result.status == "COMPLETE"
    assert [line for line in got if line.startswith("line ")] == [f"line {i}" for i in range(150)]
    assert got.count("done") == 1


def test_status_watch_and_pull_default_to_the_same_newest_run(tmp_path):
    """One rule for "the newest run" (status used to pick by creation time over every record,
    watch by push time over pushed ones): push time, and a failed push never counts."""
    import httpx

    from orchestrator.ledger import Ledger, RunRecord
    from orchestrator.runs import resolve_run, run_status
    from orchestrator.settings import load_settings
    from tests.support.project import write_project

    write_project(tmp_path / "p", kaggle='owner = "alice"')
    settings = load_settings(tmp_path / "p" / "orchestrate.toml")
    ledger = Ledger(tmp_path / "p")
    for run, created, pushed, state in (
        ("pushed-last", "2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z", "terminal"),
        ("created-later", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z", "terminal"),
        ("refused-push", "2026-01-06T00:00:00Z", None, "failed_push"),
    ):
        ledger.record_intent(RunRecord(run=run, owner="alice", created_at=created))
        ledger.update(run, state=state, pushed_at=pushed)
    asked = []

    def kaggle(request: httpx.Request) -> httpx.Response:
        asked.append(json.loads(request.content)["kernelSlug"])
        return httpx.Response(200, json={"status": "COMPLETE"})

    client = mock_client(kaggle)
    with client:
        report = run_status(settings, ledger, client, None)
        # A slug the ledger does not know is the configured owner's, for status alone.
        assert run_status(settings, ledger, client, "elsewhere")["ref"] == "alice/elsewhere"
    assert resolve_run(None, ledger).ref == report["ref"] == "alice/pushed-last"
    assert asked == ["pushed-last", "elsewhere"]


def test_a_denied_kernel_is_looked_at_every_two_seconds_then_at_the_poll_interval():
    """A short session that ends inside Kaggle's read-after-write lag is seen within 2 s of
    its end, and a long lag is not polled into the rate limit."""
    from itertools import accumulate

    from orchestrator.watch import DENIAL_FAST_WINDOW_S, DENIAL_FIRST_PAUSE_S, denial_pause

    poll_s, waited, pause, pauses = 30.0, 0.0, DENIAL_FIRST_PAUSE_S, []
    while waited < 300:
        pauses.append(denial_pause(waited, pause, poll_s))
        waited += pauses[-1]
        pause *= 2
    in_window = [
        p for p, at in zip(pauses, accumulate(pauses), strict=True) if at <= DENIAL_FAST_WINDOW_S
    ]
    assert max(in_window) <= 2.0
    assert len(in_window) <= 20  # the emulator's faithful limit is 40 calls a minute
    assert pauses[-1] == poll_s  # a long lag backs off to the poll interval
    assert len(pauses) < 30
