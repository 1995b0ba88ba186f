"""The pieces behind `[notify]` alone: payload shapes, retries within a budget, redaction, the
events a step yields, the stall watch, and reading a running session's log so far."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from kernel_template.layout import CheckpointRef
from orchestrator.chain import stall
from orchestrator.chain.events import before_step, step_events
from orchestrator.chain.states import StepResult
from orchestrator.kaggle.errors import KaggleError
from orchestrator.kaggle.logstream import read_log_so_far
from orchestrator.ledger import ChainRecord, Ledger, RunRecord
from orchestrator.notify import Notifier, NotifyEvent, render, webhook_format

EVENT = NotifyEvent("alert", "tiny-chain", "ALERT chain tiny-chain: <quota> & more @everyone")
URL = "https://hooks.example.com/services/T0/B0/s3cr3t-token"


def test_each_format_has_its_shape() -> None:
    body, headers = render("slack", EVENT)
    assert json.loads(body) == {
        "text": "ALERT chain tiny-chain: &lt;quota&gt; &amp; more @everyone"
    }
    body, _ = render("discord", EVENT)
    assert json.loads(body)["content"] == EVENT.text
    assert json.loads(body)["allowed_mentions"] == {"parse": []}
    body, headers = render("ntfy", EVENT)
    assert body.decode() == EVENT.text
    assert headers["Title"] == "orchestrate: tiny-chain: ALERT" and headers["Priority"] == "high"
    long = NotifyEvent("segment_done", "c", "x" * 5000)
    assert len(json.loads(render("discord", long)[0])["content"]) == 2000


@pytest.mark.parametrize(
    ("url", "fmt"),
    [
        ("https://hooks.slack.com/services/T/B/x", "slack"),
        ("https://discord.com/api/webhooks/1/x", "discord"),
        ("https://ntfy.sh/topic", "ntfy"),
        ("https://ntfy.example.org/topic", "ntfy"),
    ],
)
def test_the_format_is_told_by_known_hosts(url, fmt) -> None:
    assert webhook_format(url) == fmt


def test_an_unknown_host_needs_a_format() -> None:
    with pytest.raises(ValueError, match='set format = "slack"'):
        webhook_format("https://example.com/hook")
    assert webhook_format("https://example.com/hook", "ntfy") == "ntfy"


def _notifier(handler, **options) -> tuple[Notifier, list[float]]:
    pauses: list[float] = []
    notifier = Notifier(
        url=URL, fmt="slack", transport=httpx.MockTransport(handler), sleep=pauses.append, **options
    )
    return notifier, pauses


def test_a_5xx_is_retried_with_backoff_and_retry_after() -> None:
    answers = iter([503, 429, 200])
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = next(answers)
        return httpx.Response(status, headers={"Retry-After": "2"} if status == 429 else {})

    notifier, pauses = _notifier(handler)
    assert notifier.send([EVENT]) == []
    assert len(seen) == 3 and pauses == [0.5, 2.0]


def test_a_4xx_is_not_retried_and_the_failure_names_the_host_only() -> None:
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(404)

    notifier, pauses = _notifier(handler)
    [failure] = notifier.send([EVENT])
    assert len(calls) == 1 and pauses == []
    assert failure == (
        "alert notification to https://hooks.example.com not delivered: HTTP 404 (check [notify] url)"
    )
    assert "s3cr3t-token" not in repr(notifier)


def test_retries_stop_at_the_attempt_limit_and_never_raise() -> None:
    def handler(request):
        raise httpx.ConnectError(f"cannot reach {request.url}")

    notifier, pauses = _notifier(handler)
    [failure] = notifier.send([EVENT])
    assert "ConnectError" in failure and "s3cr3t-token" not in failure
    assert len(pauses) == 3  # four attempts

    def broken(request):
        raise RuntimeError("a bug in a transport")

    notifier, _ = _notifier(broken)
    [failure] = notifier.send([EVENT])
    assert "RuntimeError" in failure


def test_an_exhausted_budget_stops_posting() -> None:
    def handler(request):
        return httpx.Response(503)

    notifier, _ = _notifier(handler, budget_s=0.01)
    notifier.sleep = lambda seconds: __import__("time").sleep(0.02)
    failures = notifier.send([EVENT, NotifyEvent("chain_failed", "tiny-chain", "failed")])
    assert len(failures) == 2 and "no time left" in failures[1]


def test_the_credentials_are_redacted_from_every_body() -> None:
    bodies = []

    def handler(request):
        bodies.append(request.content.decode())
        return httpx.Response(200)

    notifier, _ = _notifier(handler, redact=lambda text: text.replace("k3y-value", "***"))
    leaky = NotifyEvent("alert", "tiny-chain", "Kaggle said: bad key k3y-value")
    assert notifier.send([leaky]) == []
    assert bodies == [json.dumps({"text": "Kaggle said: bad key ***"})]


def test_filtered_and_unconfigured_notifiers_post_nothing() -> None:
    def handler(request):
        raise AssertionError("posted")

    notifier, _ = _notifier(handler, events=("chain_failed",))
    assert notifier.send([EVENT]) == []
    assert Notifier().send([EVENT]) == []


# -- the events of a step --------------------------------------------------------------------


def _chain(ledger: Ledger) -> None:
    ledger.create_chain(
        ChainRecord(
            name="tiny-chain",
            run_config={},
            config_hash="h",
            total_timesteps=1000,
            segments=[500, 500],
        )
    )
    ledger.record_intent(
        RunRecord(slug="tiny-chain-s1", owner="alice", chain="tiny-chain", segment=1)
    )


def test_a_step_yields_segment_done_alerts_and_the_chain_end(tmp_path) -> None:
    ledger = Ledger(tmp_path)
    _chain(ledger)
    before = before_step(ledger, "tiny-chain")
    ledger.update(
        "tiny-chain-s1",
        state="pulled",
        kernel_status="COMPLETE",
        checkpoint=CheckpointRef(step=500, manifest_sha256="m"),
    )
    result = StepResult("tiny-chain", "advanced", "pushed segment 2", alerts=["drift"])
    events = step_events(ledger, before, result)
    assert [(e.kind, e.text) for e in events] == [
        (
            "segment_done",
            "chain tiny-chain: segment 1 of 2 ended COMPLETE (alice/tiny-chain-s1): "
            "checkpoint at step 500 of 1000 (50%)",
        ),
        ("alert", "ALERT chain tiny-chain: drift"),
    ]
    # The next step: nothing new pulled, and the chain fails.
    before = before_step(ledger, "tiny-chain")
    ledger.update_chain("tiny-chain", state="failed")
    events = step_events(ledger, before, StepResult("tiny-chain", "failed", "segment 2 failed"))
    assert [(e.kind, e.text) for e in events] == [
        ("chain_failed", "chain tiny-chain failed: segment 2 failed")
    ]
    # Steps of a chain that already ended say nothing again.
    before = before_step(ledger, "tiny-chain")
    assert step_events(ledger, before, StepResult("tiny-chain", "failed", "failed")) == []


# -- the stall watch -------------------------------------------------------------------------

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def test_the_stall_watch_counts_checks_without_a_move() -> None:
    watch = stall.ProgressWatch()
    steps = [None, 200, 400, 400, 400, 600]
    seen = []
    for minute, step in enumerate(steps):
        progress = {"event": "progress", "step": step, "total": 1000} if step else None
        watch = stall.observe(watch, progress, T0 + timedelta(minutes=minute))
        seen.append(watch.still)
    assert seen == [0, 0, 0, 1, 2, 0]
    assert stall.due(watch, T0 + timedelta(minutes=10), every_s=300)
    assert not stall.due(watch, T0 + timedelta(minutes=6), every_s=300)


class _Entry:
    def __init__(self, data: str) -> None:
        self.data = data


def test_the_last_progress_event_is_found_in_the_log() -> None:
    entries = [
        _Entry('@@orchestrate {"event":"progress","step":200,"total":1000}\n'),
        _Entry('@@orchestrate {"event":"progress","step":400,"total":1000}\nplain line\n'),
        _Entry('@@orchestrate {"event":"export","step":400}\n'),
    ]
    assert stall.last_progress(entries)["step"] == 400
    assert stall.last_progress([_Entry("no events")]) is None


# -- reading a running session's log so far --------------------------------------------------


class _QuietAfter(httpx.SyncByteStream):
    """An SSE stream that sends its backlog, then goes quiet (the read times out)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def __iter__(self):
        for line in self.lines:
            yield f"data: {line}\n\n".encode()
        raise httpx.ReadTimeout("quiet")


def test_the_log_so_far_stops_when_the_stream_goes_quiet() -> None:
    backlog = [
        json.dumps({"stream_name": "stdout", "time": i, "data": f"line {i}"}) for i in range(3)
    ]

    def handler(request):
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_QuietAfter(backlog)
        )

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        entries = read_log_so_far(http, "http://kaggle.test/api/v1/kernels/logs/stream/a/b")
    assert [e.data for e in entries] == ["line 0", "line 1", "line 2"]


def test_the_log_so_far_of_a_denied_kernel_is_a_kaggle_error() -> None:
    def handler(request):
        return httpx.Response(403, json={"message": "Permission 'kernels.get' was denied"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as http, pytest.raises(KaggleError):
        read_log_so_far(http, "http://kaggle.test/api/v1/kernels/logs/stream/a/b")
