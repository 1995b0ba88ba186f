"""The throttled logger: per-tag throttles, the global budget, suppression reports, events.jsonl."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest

from kernel_template.config import LoggingConfig, TagThrottle
from kernel_template.layout import parse_event
from kernel_template.throttle import ThrottledLogger


def make_logger(tmp_path, tags=None, rate=1000.0, **options):
    config = LoggingConfig(max_lines_per_step=rate, tags=tags or {})
    stream = io.StringIO()
    return ThrottledLogger(
        config, tmp_path / "logs" / "events.jsonl", stream=stream, **options
    ), stream


def records(tmp_path):
    return [
        json.loads(line) for line in (tmp_path / "logs" / "events.jsonl").read_text().splitlines()
    ]


def test_every_n_steps_prints_once_per_interval(tmp_path):
    logger, _ = make_logger(tmp_path, {"loss": TagThrottle(every_steps=100)})
    printed = [step for step in range(1000) if logger.log("loss", "loss", step=step, value=step)]
    assert printed == list(range(0, 1000, 100))
    assert logger.suppressed == {"loss": 990}


def test_on_change_prints_only_new_values(tmp_path):
    logger, stream = make_logger(tmp_path, {"phase": TagThrottle(on_change=True)})
    values = [0, 0, 1, 1, 1, 0, 2, 2]
    printed = [
        v for step, v in enumerate(values) if logger.log("phase", "phase now", step=step, value=v)
    ]
    assert printed == [0, 1, 0, 2]
    assert logger.suppressed == {"phase": 4}
    assert stream.getvalue().count("phase now") == 4


def test_on_change_without_value_compares_the_message(tmp_path):
    logger, _ = make_logger(tmp_path, {"status": TagThrottle(on_change=True)})
    results = [logger.log("status", msg, step=i) for i, msg in enumerate(["a", "a", "b", "b", "a"])]
    assert results == [True, False, True, False, True]


def test_sampling_uses_its_own_rng_and_never_the_global_ones(tmp_path):
    random.seed(123)
    np.random.seed(123)
    py_before, np_before = random.getstate(), np.random.get_state()
    logger, _ = make_logger(tmp_path, {"noisy": TagThrottle(sample=0.25)})
    printed = sum(logger.log("noisy", "x", step=step) for step in range(4000))
    assert random.getstate() == py_before
    after = np.random.get_state()
    assert (
        after[0] == np_before[0]
        and np.array_equal(after[1], np_before[1])
        and after[2:] == np_before[2:]
    )
    assert 800 < printed < 1200  # about a quarter; binomial sd is ~27
    # Same private seed, same choices.
    again, _ = make_logger(tmp_path / "again", {"noisy": TagThrottle(sample=0.25)})
    assert sum(again.log("noisy", "x", step=step) for step in range(4000)) == printed


def test_global_budget_holds_half_a_line_per_step_over_a_simulated_run(tmp_path):
    # Default config; a chatty loop that would write 3 lines every step without a budget.
    stream = io.StringIO()
    logger = ThrottledLogger(LoggingConfig(), tmp_path / "logs" / "events.jsonl", stream=stream)
    steps = 10_000
    for step in range(1, steps + 1):
        logger.log("step", "step done", step=step, reward=0.5)
        logger.log("loss", "train loss", step=step, loss=0.1)
        if step % 10 == 0:
            logger.log("episode", "episode end", step=step, length=10)
        if step % 1000 == 0:
            logger.event("progress", step=step, total=steps)
    lines = stream.getvalue().splitlines()
    assert logger.lines_written == len(lines)
    assert len(lines) / steps <= 0.5
    assert len(lines) > 0.4 * steps  # the budget is used, not starved
    # Progress events all came through.
    assert sum(1 for line in lines if parse_event(line)) == 10


def test_burst_at_start_then_the_rate(tmp_path):
    logger, _ = make_logger(tmp_path, rate=0.1, burst_lines=5)
    first = [logger.log("t", "x", step=0) for _ in range(10)]
    assert first == [True] * 5 + [False] * 5
    # Steps 1..49 do not repay the burst: the session ceiling is max(5, 0.1 * steps).
    assert not any(logger.log("t", "x", step=step) for step in range(1, 50))
    assert logger.log("t", "x", step=60)


def test_errors_warnings_and_events_are_never_suppressed(tmp_path):
    logger, stream = make_logger(
        tmp_path, {"t": TagThrottle(every_steps=1000)}, rate=0.01, burst_lines=1
    )
    assert logger.log("t", "first", step=0)
    assert not logger.log("t", "info", step=1)
    assert logger.log("t", "careful", step=2, level="warning")
    assert logger.log("t", "broken", step=3, level="error")
    for i in range(50):
        logger.event("progress", step=4 + i)
    text = stream.getvalue()
    assert "careful" in text and "broken" in text
    assert sum(1 for line in text.splitlines() if parse_event(line)) == 50


def test_suppressed_lines_are_reported_in_one_line(tmp_path):
    logger, stream = make_logger(
        tmp_path,
        {"a": TagThrottle(every_steps=1000), "b": TagThrottle(every_steps=1000)},
        report_every_steps=500,
        report_every_s=1e9,
    )
    for step in range(0, 600):
        logger.log("a", "a", step=step)
        if step % 2 == 0:
            logger.log("b", "b", step=step)
    report = [line for line in stream.getvalue().splitlines() if "suppressed" in line]
    assert len(report) == 1
    # Due at step 500, on a's suppressed line: a 1..500, b 2..498 even.
    assert "suppressed 749 lines: a 500, b 249" in report[0]
    assert logger.suppressed == {"a": 599, "b": 299}
    # A forced report carries what came after.
    assert logger.report_suppressed()
    assert "suppressed 149 lines: a 99, b 50" in stream.getvalue().splitlines()[-1]
    assert not logger.report_suppressed()
    reports = [r for r in records(tmp_path) if r["tag"] == "throttle"]
    assert reports[-1]["fields"]["suppressed"] == {"a": 99, "b": 50}


def test_every_printed_line_is_one_json_record(tmp_path):
    logger, stream = make_logger(tmp_path, {"q": TagThrottle(every_steps=10)})
    for step in range(100):
        logger.log("q", "queue", step=step, queue=float(step), note="ok")
    logger.log("q", "trouble", step=100, level="error", code=7)
    logger.event("progress", step=100, total=1000)
    logger.close()
    lines = (tmp_path / "logs" / "events.jsonl").read_text().splitlines()
    assert len(lines) == len(stream.getvalue().splitlines()) == logger.lines_written
    parsed = [json.loads(line) for line in lines]
    for record in parsed:
        assert set(record) == {"time", "step", "tag", "level", "message", "fields"}
    assert parsed[1]["step"] == 10 and parsed[1]["fields"] == {"queue": 10.0, "note": "ok"}
    assert parsed[-2]["level"] == "error" and parsed[-2]["fields"] == {"code": 7}
    assert parsed[-1]["tag"] == "event" and parsed[-1]["message"] == "progress"


def test_nan_fields_are_recorded_as_null(tmp_path):
    logger, _ = make_logger(tmp_path)
    logger.log("loss", "diverged", step=1, loss=float("nan"), lr=0.1)
    logger.close()
    line = (tmp_path / "logs" / "events.jsonl").read_text()
    assert "NaN" not in line
    assert json.loads(line)["fields"] == {"loss": None, "lr": 0.1}


def test_events_jsonl_is_appended_across_loggers(tmp_path):
    first, _ = make_logger(tmp_path)
    first.log("a", "one", step=1)
    first.close()
    second, _ = make_logger(tmp_path)
    second.log("a", "two", step=2)
    second.close()
    assert [r["message"] for r in records(tmp_path)] == ["one", "two"]


def test_event_prints_a_contract_5_line(tmp_path):
    logger, stream = make_logger(tmp_path)
    logger.event("progress", step=5, total=10, sps=123.4)
    assert parse_event(stream.getvalue().strip()) == {
        "event": "progress",
        "step": 5,
        "total": 10,
        "sps": 123.4,
    }


def test_state_round_trip_continues_counters_and_throttles(tmp_path):
    tags = {
        "loss": TagThrottle(every_steps=100),
        "s": TagThrottle(sample=0.5),
        "c": TagThrottle(on_change=True),
    }

    def drive(logger, steps):
        return [
            (
                logger.log("loss", "l", step=s),
                logger.log("s", "s", step=s),
                logger.log("c", "c", step=s, value=s // 7),
            )
            for s in steps
        ]

    straight, _ = make_logger(tmp_path / "straight", tags)
    whole = drive(straight, range(0, 400))

    first, _ = make_logger(tmp_path / "split", tags)
    part_one = drive(first, range(0, 250))
    state = json.loads(json.dumps(first.state_dict()))  # must survive JSON
    first.close()
    second, _ = make_logger(tmp_path / "split", tags)
    second.load_state_dict(state)
    part_two = drive(second, range(250, 400))

    assert part_one + part_two == whole
    assert second.suppressed == straight.suppressed
    assert second.lines_written == straight.lines_written
    assert second.session_lines_written < second.lines_written


def test_session_stats_count_this_session_only(tmp_path):
    logger, _ = make_logger(tmp_path, {"x": TagThrottle(every_steps=10)})
    logger.load_state_dict({**logger.state_dict(), "lines_written": 1000, "suppressed": {"x": 50}})
    for step in range(100, 200):
        logger.log("x", "x", step=step)
    stats = logger.session_stats(100)
    assert stats == {"log_lines": 10, "log_lines_suppressed": 90, "log_lines_per_step": 0.1}
    assert logger.lines_written == 1010 and logger.suppressed == {"x": 140}


def test_bad_state_version_is_a_clear_error(tmp_path):
    logger, _ = make_logger(tmp_path)
    with pytest.raises(ValueError, match="version"):
        logger.load_state_dict({"version": 99})


@pytest.mark.bench
def test_bench_log_lines_per_step_default_config(tmp_path, bench_record):
    """Target: a step that logs every time prints at most the default max_lines_per_step."""
    stream = io.StringIO()
    logger = ThrottledLogger(LoggingConfig(), tmp_path / "events.jsonl", stream=stream)
    steps = 10_000
    for step in range(1, steps + 1):
        logger.log("step", "step done", step=step, reward=0.5)
        if step % 1000 == 0:
            logger.event("progress", step=step, total=steps)
    rate = logger.lines_written / steps
    budget = LoggingConfig().max_lines_per_step
    assert bench_record(
        "throttled_log_lines_per_step",
        rate,
        baseline=1.0,
        ratio=rate,
        target=f"<= max_lines_per_step ({budget})",
        met=rate <= budget,
        attempts_per_step=1,
    )


def test_sigkill_loses_no_logged_line_to_buffering(tmp_path):
    import subprocess
    import sys

    events = tmp_path / "logs" / "events.jsonl"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from kernel_template.config import LoggingConfig\n"
        "from kernel_template.throttle import ThrottledLogger\n"
        f"logger = ThrottledLogger(LoggingConfig(max_lines_per_step=10), Path({str(events)!r}), stream=open('/dev/null', 'w'))\n"
        "for step in range(1, 501):\n"
        "    logger.log('t', 'x' * 300, step=step, payload=list(range(50)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
    finally:
        process.kill()  # SIGKILL: no atexit, no flush
        process.wait()
    lines = events.read_bytes().splitlines(keepends=True)
    assert len(lines) == 500
    assert all(line.endswith(b"\n") and json.loads(line)["tag"] == "t" for line in lines)


def test_a_torn_last_line_is_cut_when_reopened(tmp_path):
    events = tmp_path / "logs" / "events.jsonl"
    events.parent.mkdir(parents=True)
    events.write_bytes(b'{"tag":"a"}\n{"tag":"b","mess')
    logger, _ = make_logger(tmp_path)
    logger.log("c", "new", step=1)
    logger.close()
    assert [r["tag"] for r in records(tmp_path)] == ["a", "c"]


@pytest.mark.bench
def test_bench_cost_of_a_log_call(tmp_path, bench_record):
    """Target: <= 30 us a call, i.e. <= 3 % of a ~1 ms default-config training step."""
    import time

    logger = ThrottledLogger(LoggingConfig(), tmp_path / "events.jsonl", stream=io.StringIO())
    calls = 100_000

    def bare(tag, message, *, step, **fields):
        return False

    started = time.perf_counter()
    for step in range(calls):
        bare("step", "step done", step=step, reward=0.5)
    baseline = (time.perf_counter() - started) / calls
    started = time.perf_counter()
    for step in range(calls):
        logger.log("step", "step done", step=step, reward=0.5)
    per_call = (time.perf_counter() - started) / calls
    assert bench_record(
        "throttled_log_call_us",
        per_call * 1e6,
        unit=" us",
        baseline=baseline * 1e6,
        ratio=per_call / baseline,
        target="<= 30 us per call",
        met=per_call <= 30e-6,
    )
