"""`[notify]`: chains post segment done, chain done/failed and every ALERT (a stall, a spent
quota, refused pushes) to a webhook, here a local receiver; a dead webhook never hurts a step."""

from __future__ import annotations

import base64
import json
import socket
import time

import pytest

from tests.support.emulator import TEST_USERS
from tests.support.project import ChainProject
from tests.support.webhook_receiver import WebhookReceiver

GPU = "NvidiaTeslaT4"
KEY = TEST_USERS["alice"]
SECRETS = (KEY, base64.b64encode(f"alice:{KEY}".encode()).decode())


@pytest.fixture
def receiver():
    made: list[WebhookReceiver] = []

    def make(**options) -> WebhookReceiver:
        made.append(WebhookReceiver(**options))
        return made[-1]

    yield make
    for one in made:
        one.close()


def _project(emulator, chain_project, env: dict[str, str] | None = None, **options):
    """A chain project whose CLI reaches the receiver directly: the emulator's env routes
    plain HTTP through the emulator as a proxy (for the official CLI)."""
    project = chain_project(emulator, **options)
    direct = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", **(env or {})}
    project.env = lambda: {**ChainProject.env(project), **direct}
    return project


def _append(project: ChainProject, text: str) -> None:
    path = project.dir / "orchestrate.toml"
    path.write_text(path.read_text() + text)


def _notify_to(project: ChainProject, url: str, fmt: str, extra: str = "") -> None:
    _append(project, f'\n[notify]\nurl = "{url}"\nformat = "{fmt}"\n{extra}')


def assert_no_secret(receiver: WebhookReceiver) -> None:
    for request in receiver.requests:
        seen = request.text + json.dumps(request.headers)
        assert not any(secret in seen for secret in SECRETS), seen


@pytest.mark.slow  # runs a kernel: ~15-40 s
def test_chain_run_posts_each_segment_and_the_end_through_a_webhook_hiccup(
    emulator, chain_project, receiver
) -> None:
    hook = receiver(fail_first=1)  # the first post meets a 503 and is retried
    project = _project(emulator, chain_project, total=1000)
    _notify_to(project, hook.url(), "slack")
    assert project.cli("chain", "start", "tiny-chain", "--segments", "500,500").returncode == 0
    done = project.cli("chain", "run", "tiny-chain", "--no-follow", "--poll-interval", "0.3")
    assert done.returncode == 0, done.stderr

    texts = [request.json()["text"] for request in hook.requests]
    assert len(texts) == 3, texts
    assert texts[0].startswith("chain tiny-chain: segment 1 of 2 ended COMPLETE")
    assert "checkpoint at step 500 of 1000 (50%)" in texts[0]
    assert texts[1].startswith("chain tiny-chain: segment 2 of 2 ended COMPLETE")
    assert texts[2] == "chain tiny-chain done: 1000 timesteps reached by tiny-chain-s2"
    assert hook.failed == 1 and "not delivered" not in done.stderr
    assert all(r.headers["Content-Type"] == "application/json" for r in hook.requests)
    assert_no_secret(hook)


def test_refused_pushes_post_alerts_then_chain_failed_to_discord(
    emulator, chain_project, receiver
) -> None:
    hook = receiver()
    project = _project(emulator, chain_project, total=500)
    _notify_to(project, hook.url(), "discord")
    emulator.set_faults("SaveKernel=400*50")
    assert project.cli("chain", "start", "tiny-chain", "--segments", "500").returncode == 0
    done = project.cli("chain", "run", "tiny-chain", "--no-follow", "--poll-interval", "0.3")
    assert done.returncode == 1, done.stderr

    posts = [request.json() for request in hook.requests]
    assert all(p["allowed_mentions"] == {"parse": []} for p in posts)  # never pings anyone
    contents = [p["content"] for p in posts]
    refused = [
        c for c in contents if c.startswith("ALERT chain tiny-chain: Kaggle refused the push")
    ]
    assert len(refused) == 3, contents  # the first push and max_retries (2) more
    assert contents[-1].startswith("chain tiny-chain failed: segment 1 failed 3 times")
    assert len(contents) == 4
    assert_no_secret(hook)


def test_a_spent_quota_posts_one_alert_to_ntfy(emulator, chain_project, receiver) -> None:
    hook = receiver()
    project = _project(emulator, chain_project, accelerator=GPU, total=1000)
    _notify_to(project, hook.url("/my-chain-topic"), "ntfy")
    with project.client() as client:
        emulator.set_gpu_used("alice", client.quota().total_allowed_s - 60)
    assert project.cli("chain", "start", "tiny-chain", "--segments", "1000").returncode == 0
    for expected_exit in (1, 0):  # the ALERT once; then answered from the ledger, no new post
        step = project.cli("chain", "step", "tiny-chain", "--json")
        assert step.returncode == expected_exit, step.stderr
        assert json.loads(step.stdout)[0]["outcome"] == "waiting"

    [post] = hook.requests
    assert post.path == "/my-chain-topic"
    assert post.text.startswith("ALERT chain tiny-chain: GPU quota:")
    assert "waiting until the quota refreshes at" in post.text
    assert post.headers["Title"] == "orchestrate: tiny-chain: ALERT"
    assert post.headers["Priority"] == "high"
    assert "SaveKernel" not in emulator.call_counts()
    assert_no_secret(hook)


# An env that trains normally, then hangs in step(): the session stays RUNNING for ever.
HANGING_ENV = '''
"""The traffic env, hung after 700 steps (a deadlock, as a stuck simulator would be)."""
import time

from kernel_template.envs.traffic_signal import TrafficSignalEnv


class HangingTraffic(TrafficSignalEnv):
    def step(self, action):
        self.steps_taken = getattr(self, "steps_taken", 0) + 1
        if self.steps_taken > 700:
            time.sleep(3600)
        return super().step(action)
'''


@pytest.mark.slow  # runs a kernel until it hangs: ~20-40 s
def test_a_hung_segment_raises_a_stall_alert_that_is_posted(
    emulator, chain_project, receiver
) -> None:
    hook = receiver()
    project = _project(emulator, chain_project, total=1000)
    (project.dir / "hangenv.py").write_text(HANGING_ENV)
    text = (project.dir / "orchestrate.toml").read_text()
    text = text.replace('env = "traffic-signal"', 'env = "hangenv:HangingTraffic"')
    text = text.replace("[kernel]\n", '[kernel]\nuser_modules = ["hangenv"]\n', 1)
    (project.dir / "orchestrate.toml").write_text(text)
    _append(project, "\n[chain]\nstall_polls = 2\nstall_check_s = 0\n")
    _notify_to(project, hook.url("/stalls"), "ntfy")
    assert project.cli("chain", "start", "tiny-chain", "--segments", "1000").returncode == 0
    assert project.cli("chain", "step", "tiny-chain").returncode == 0  # the push
    # Let it train, then hang: a stall only counts from there (setup is no stall here, as the
    # test's checks are not minutes apart).
    hung_at = _wait_for_the_hang(project, "tiny-chain-s1")

    alerts: list[str] = []
    deadline = time.monotonic() + 60
    while not alerts:
        assert time.monotonic() < deadline, "no stall ALERT within 60 s"
        step = project.cli("chain", "step", "tiny-chain", "--json")
        [result] = json.loads(step.stdout)
        assert result["outcome"] == "running", result
        alerts = result["alerts"]
        assert step.returncode == (1 if alerts else 0), step.stderr  # an ALERT is exit 1
    [alert] = alerts
    assert alert.startswith("alice/tiny-chain-s1 is RUNNING but made no progress in 2 checks")
    assert f"still at step {hung_at} of 1000" in alert
    [post] = hook.requests
    assert post.text == f"ALERT chain tiny-chain: {alert}"
    chain = project.ledger.get_chain("tiny-chain")
    assert [n.message for n in chain.notes if n.level == "alert"] == [alert]
    # One ALERT per stall: another check that sees the same step says nothing new.
    step = project.cli("chain", "step", "tiny-chain", "--json")
    assert json.loads(step.stdout)[0]["alerts"] == [] and len(hook.requests) == 1
    emulator.kill_kernel("alice", "tiny-chain-s1")


def _wait_for_the_hang(project: ChainProject, slug: str) -> int:
    """The step of the last progress event once the session has printed nothing new for 2 s."""
    from orchestrator.chain.stall import last_progress

    emulator_log = project.emulator.root / "kernels" / "alice" / slug / "v1"
    deadline, last, quiet_since = time.monotonic() + 90, None, time.monotonic()
    while True:
        assert time.monotonic() < deadline, f"{slug} never hung ({last})"
        with project.client() as client:
            try:
                event = last_progress(client.log_so_far("alice", slug))
            except Exception:  # not visible yet (the 403 after a push)
                event = None
        step = event["step"] if event else None
        if step != last:
            last, quiet_since = step, time.monotonic()
        elif step is not None and time.monotonic() - quiet_since > 2:
            assert emulator_log.exists()
            return step
        time.sleep(0.3)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_webhook_is_noted_and_never_fails_the_step(emulator, chain_project) -> None:
    project = _project(emulator, chain_project, total=500)
    token = "s3cr3t-webhook-token"
    _notify_to(
        project, f"http://127.0.0.1:{_closed_port()}/hooks/{token}", "slack", "budget_s = 2\n"
    )
    emulator.set_faults("SaveKernel=400*50")  # an ALERT to post
    assert project.cli("chain", "start", "tiny-chain", "--segments", "500").returncode == 0
    step = project.cli("chain", "step", "tiny-chain", "--json")
    # Exit 1 for the ALERT itself, exactly as without a webhook: the failed post changes nothing.
    assert step.returncode == 1, step.stderr
    [result] = json.loads(step.stdout)
    assert result["outcome"] == "waiting" and result["alerts"]
    warning = [line for line in step.stderr.splitlines() if "not delivered" in line]
    assert len(warning) == 1 and "alert notification to http://127.0.0.1" in warning[0]
    notes = [n for n in project.ledger.get_chain("tiny-chain").notes if n.level == "warning"]
    assert notes and "not delivered" in notes[-1].message
    # The webhook URL's path is its token: never in a message or the ledger.
    assert token not in step.stderr and token not in project.ledger.path.read_text()


@pytest.mark.parametrize(
    ("notify", "env", "expected"),
    [
        ('url = "https://example.com/hook"\n', None, 'set format = "slack", "discord" or "ntfy"'),
        ('url = "hooks.slack.com/services/x"\n', None, "must start with https://"),
        ('url = "https://ntfy.sh/t"\nformat = "teams"\n', None, "notify.format"),
        ("", "ftp://example.com/x", "ORCHESTRATE_NOTIFY_URL: webhook URL must start"),
    ],
)
def test_a_bad_notify_section_exits_2_before_anything_is_pushed(
    emulator, chain_project, notify, env, expected
) -> None:
    extra = {"ORCHESTRATE_NOTIFY_URL": env} if env else {}
    project = _project(emulator, chain_project, extra, total=500)
    _append(project, f"\n[notify]\n{notify}")
    done = project.cli("chain", "start", "tiny-chain", "--segments", "500")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], done.stderr
    assert "SaveKernel" not in emulator.call_counts()
    assert project.ledger.get_chain("tiny-chain") is None  # nothing half-written


def test_notify_test_reaches_the_webhook_or_says_why(emulator, chain_project, receiver) -> None:
    hook = receiver()
    project = _project(emulator, chain_project, total=500)
    missing = project.cli("chain", "notify-test")
    assert missing.returncode == 2 and missing.stderr.startswith("error: no webhook"), missing

    _notify_to(project, hook.url("/my-topic"), "ntfy", 'events = ["chain_failed"]\n')
    sent = project.cli("chain", "notify-test", "--json")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {
        "webhook": "http://127.0.0.1",
        "format": "ntfy",
        "delivered": True,
    }
    [post] = hook.requests  # a test message is never filtered out by `events`
    assert post.path == "/my-topic" and "test message" in post.text

    dead = f"http://127.0.0.1:{_closed_port()}/hooks/token"
    (project.dir / "orchestrate.toml").write_text(
        (project.dir / "orchestrate.toml").read_text().replace(hook.url("/my-topic"), dead)
    )
    failed = project.cli("chain", "notify-test")
    assert failed.returncode == 3 and "not delivered" in failed.stderr, failed
    assert "token" not in failed.stderr
