"""`orchestrate doctor --live`: meet the real Kaggle once, and write down how it behaved.

Our machines never reach kaggle.com, so the emulator is the only Kaggle the tests meet. A
user with an account runs this to check the emulator's assumptions against the real service,
with production's own code path (launch, watch, pull-artifacts, chain):

1. the credentials, proven by a call that cannot be confused (quota statistics);
2. a read of a kernel that does not exist (403 or 404?);
3. a probe script (private, CPU, internet off) that prints what the session sees and then
   crashes on purpose: the status sequence, how long reads are denied after the push, the
   image, the session clock, whether stable-baselines3 and pip are there, the final status
   of a crashed script, the runner's own output files;
4. a real quick run of our kernel, watched, pulled and verified;
5. a 2-segment CPU chain of a few hundred steps: where the parent's output was mounted;
6. everything it made is deleted.

The report (JSON) names, for each observation, the row of `docs/kaggle-behaviour.md` it
confirms or contradicts, so it can be attached to a bug report as it is. It holds no key.
"""

from __future__ import annotations

import io
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernel_template.config import RunConfig

DOCTOR_PREFIX = "orchestrate-doctor"
PROBE_EVENT = "@@doctor "

# The probe: what the session sees, then a crash on purpose (exit code 3).
PROBE_SCRIPT = r"""
import json, os, subprocess, sys, time

def started(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(l.split()[1]) for l in f if l.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except Exception:
        return None

facts = {
    "python": sys.version.split()[0],
    "docker_image": os.environ.get("KAGGLE_DOCKER_IMAGE"),
    "run_type": os.environ.get("KAGGLE_KERNEL_RUN_TYPE"),
    "cwd": os.getcwd(),
    "now": time.time(),
    "pid1_start": started(1),
    "own_start": started("self"),
    "session_start_env": os.environ.get("ORCHESTRATE_SESSION_START"),
}
try:
    import stable_baselines3
    facts["stable_baselines3"] = stable_baselines3.__version__
except ImportError:
    facts["stable_baselines3"] = None
for name in ("gymnasium", "torch", "numpy", "pandas", "pydantic", "cloudpickle"):
    try:
        facts[name] = __import__(name).__version__
    except Exception:
        facts[name] = None
pip = subprocess.run(
    [sys.executable, "-m", "pip", "download", "--no-deps", "-d", "/tmp/doctor-pip", "six"],
    capture_output=True, text=True, timeout=60,
)
facts["pip_download_ok"] = pip.returncode == 0
inputs = os.environ.get("ORCHESTRATE_INPUT_DIR", "/kaggle/input")
facts["input_top"] = sorted(os.listdir(inputs)) if os.path.isdir(inputs) else None
with open("probe.txt", "w") as f:
    f.write("written before the crash\n")
print("@@doctor " + json.dumps(facts), flush=True)
raise SystemExit(3)
"""

# A run small enough for a CPU session of a minute or two, real in every other way.
TINY_RUN = {
    "total_timesteps": 400,
    "checkpoint_every": 100,
    "checkpoint_min_seconds": 0.0,
    "export_every": 200,
    "export_min_seconds": 0.0,
    "session_limit_s": 1800.0,
    "evaluation": {"best_model_episodes": 1, "final_episodes": 1},
    "hyperparams": {"learning_starts": 50, "buffer_size": 5000},
    "device": "cpu",
}


@dataclass
class Observation:
    """One thing the real service did, next to what our docs and emulator assume."""

    row: str  # the row of docs/kaggle-behaviour.md
    behaviour: str
    expected: Any
    observed: Any
    verdict: str = "unobserved"  # confirms | contradicts | unobserved

    def judge(self, matches: bool | None) -> Observation:
        self.verdict = (
            "unobserved" if matches is None else ("confirms" if matches else "contradicts")
        )
        return self


@dataclass
class DoctorReport:
    api_url: str
    started_at: float = field(default_factory=time.time)
    observations: list[Observation] = field(default_factory=list)
    timings: dict[str, float | None] = field(default_factory=dict)
    status_sequences: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    made: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def observe(self, row: str, behaviour: str, expected: Any, observed: Any, matches) -> None:
        self.observations.append(Observation(row, behaviour, expected, observed).judge(matches))

    @property
    def contradictions(self) -> list[Observation]:
        return [o for o in self.observations if o.verdict == "contradicts"]

    def to_json(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "started_at": self.started_at,
            "observations": [vars(o) for o in self.observations],
            "contradictions": len(self.contradictions),
            "timings_s": self.timings,
            "status_sequences": self.status_sequences,
            "made": self.made,
            "deleted": self.deleted,
            "problems": self.problems,
        }


@dataclass
class _Tracker:
    """Polls a kernel's status from its push to its end, through the 403s of the lag."""

    client: Any
    owner: str
    slug: str
    poll_s: float
    pushed_at: float
    sequence: list[tuple[float, str]] = field(default_factory=list)
    first_visible_s: float | None = None

    def run(self, timeout_s: float) -> str:
        from orchestrator.kaggle import KernelNotVisible

        last = None
        deadline = self.pushed_at + timeout_s
        while time.time() < deadline:
            try:
                status = self.client.status(self.owner, self.slug).status
            except KernelNotVisible:
                status = "DENIED_403"
            if status != "DENIED_403" and self.first_visible_s is None:
                self.first_visible_s = round(time.time() - self.pushed_at, 1)
            if status != last:
                self.sequence.append((round(time.time() - self.pushed_at, 1), status))
                last = status
            if status in ("COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"):
                return status
            time.sleep(self.poll_s)
        return last or "UNKNOWN"


def live_check(
    client,
    workdir: Path,
    *,
    poll_s: float = 30.0,
    timeout_s: float = 3600.0,
    keep: bool = False,
    say: Callable[[str], None] = print,
) -> DoctorReport:
    """Run every probe against the service `client` talks to; never raises for what it sees."""
    from orchestrator.kaggle import KaggleError

    report = DoctorReport(api_url=client.api_url)
    run_id = secrets.token_hex(3)
    workdir.mkdir(parents=True, exist_ok=True)
    owner = client.verify_credentials()
    say(f"credentials accepted for {owner} at {client.api_url}")
    try:
        _unknown_kernel(client, owner, run_id, report)
        _probe(client, owner, run_id, report, poll_s, timeout_s, say)
        settings = _settings(workdir, owner, run_id)
        _quick_run(client, settings, report, poll_s, say)
        _chain(client, settings, run_id, report, poll_s, timeout_s, say)
    except KaggleError as error:
        report.problems.append(f"{type(error).__name__}: {error}")
        say(f"stopped early: {error}")
    finally:
        if not keep:
            _delete(client, owner, report, say)
    return report


def _unknown_kernel(client, owner: str, run_id: str, report: DoctorReport) -> None:
    from orchestrator.kaggle import KernelNotVisible, NotFoundError

    slug = f"{DOCTOR_PREFIX}-{run_id}-absent"
    try:
        client.status(owner, slug)
        observed = "answered"
    except KernelNotVisible:
        observed = "403"
    except NotFoundError:
        observed = "404"
    report.observe(
        "reads-unknown-403",
        "status of a kernel that does not exist",
        "403",
        observed,
        observed == "403",
    )


def _probe(client, owner, run_id, report, poll_s, timeout_s, say) -> None:
    from orchestrator.kaggle import PushSpec

    slug = f"{DOCTOR_PREFIX}-{run_id}-probe"
    spec = PushSpec(
        id=f"{owner}/{slug}",
        title=slug.replace("-", " ").title(),
        text=PROBE_SCRIPT,
        is_private=True,
        enable_internet=False,
    )
    pushed_at = time.time()
    client.push(spec)
    report.made.append(slug)
    say(f"pushed the probe {owner}/{slug}; following its status")
    tracker = _Tracker(client, owner, slug, poll_s, pushed_at)
    final = tracker.run(timeout_s)
    report.status_sequences[slug] = tracker.sequence
    report.timings["probe_denied_after_push_s"] = tracker.first_visible_s
    report.observe(
        "read-after-write-lag",
        "reads of a just-pushed kernel are denied for a while",
        "denied (403) at first, then visible",
        tracker.first_visible_s,
        None if tracker.first_visible_s is None else tracker.sequence[0][1] == "DENIED_403",
    )
    report.observe(
        "crash-complete",
        "final status of a script that exits with code 3",
        "COMPLETE",
        final,
        final == "COMPLETE" if final in ("COMPLETE", "ERROR") else None,
    )
    listing = client.list_output(owner, slug)
    names = sorted(f.name for f in listing.files)
    runner = [n for n in names if n.startswith("__")]
    report.observe(
        "runner-files",
        "the runner's own files among the outputs",
        "__results__.html, __output__.json",
        names,
        bool(runner) if names else None,
    )
    report.observe(
        "outputs-before-crash",
        "a file written before the crash is kept",
        "probe.txt",
        "probe.txt" in names,
        "probe.txt" in names,
    )
    facts = next(
        (json.loads(e.data.split(PROBE_EVENT, 1)[1]) for e in listing.log if PROBE_EVENT in e.data),
        None,
    )
    if facts is None:
        report.problems.append("the probe printed no facts (see its log on kaggle.com)")
        return
    report.observe(
        "no-sb3",
        "stable-baselines3 in the image",
        None,
        facts["stable_baselines3"],
        facts["stable_baselines3"] is None,
    )
    report.observe(
        "no-pip-offline",
        "pip can download with internet off",
        False,
        facts["pip_download_ok"],
        not facts["pip_download_ok"],
    )
    image = facts.get("docker_image") or ""
    report.observe(
        "images",
        "a CPU session's KAGGLE_DOCKER_IMAGE",
        "gcr.io/kaggle-images/python@sha256:...",
        image,
        image.startswith("gcr.io/kaggle-images/python") if image else None,
    )
    report.observe(
        "python",
        "the image's Python",
        "3.12 or 3.13",
        facts["python"],
        facts["python"].startswith(("3.12", "3.13")),
    )
    report.observe(
        "gymnasium",
        "the image's gymnasium",
        "1.2.x",
        facts.get("gymnasium"),
        str(facts["gymnasium"]).startswith("1.2") if facts.get("gymnasium") else None,
    )
    clock = facts.get("session_start_env")
    start = float(clock) if clock else facts.get("pid1_start")
    boot = (facts["now"] - start) if start else None  # to the first line of the script
    report.timings["probe_boot_s"] = round(boot, 1) if boot is not None else None
    report.observe(
        "session-clock",
        "seconds from the session's start to the script's",
        "> 0 (boot counts against the limit)",
        report.timings["probe_boot_s"],
        boot > 0 if boot is not None else None,
    )


def _settings(workdir: Path, owner: str, run_id: str):
    from orchestrator.settings import KaggleSettings, KernelSettings, Settings

    slug = f"{DOCTOR_PREFIX}-{run_id}-run"
    return Settings(
        kaggle=KaggleSettings(owner=owner),
        kernel=KernelSettings(slug=slug, machine_shape=None, enable_internet=False),
        run=RunConfig.model_validate(TINY_RUN),
        project_dir=workdir,
        config_path=workdir / "orchestrate.toml",
    )


def _quick_run(client, settings, report, poll_s, say) -> None:
    from orchestrator.artifacts import pull_artifacts
    from orchestrator.launch import launch
    from orchestrator.ledger import Ledger
    from orchestrator.watch import denial_grace_for, follow

    ledger = Ledger(settings.project_dir)
    record = launch(settings, settings.run, client=client, ledger=ledger, preflight=False)
    report.made.append(record.slug)
    say(f"pushed our kernel {record.ref}; watching it")
    began = time.time()
    from rich.console import Console

    result = follow(
        client,
        record.owner,
        record.slug,
        console=Console(stderr=True, quiet=True),
        poll_s=poll_s,
        denial_grace_s=denial_grace_for(record),
    )
    report.timings["quick_run_s"] = round(time.time() - began, 1)
    pulled = pull_artifacts(
        client, record.owner, record.slug, settings.project_dir / "runs" / record.slug
    )
    summary = pulled.summary
    report.observe(
        "end-to-end-run",
        "our kernel ends with a verified artifacts.zip",
        True,
        {
            "status": result.status,
            "verified": pulled.verified,
            "summary": summary.status if summary else None,
        },
        bool(pulled.verified and summary and summary.status == "complete"),
    )
    versions = (summary.versions if summary else None) or {}
    report.observe(
        "no-sb3",
        "stable-baselines3 comes embedded in the kernel",
        "embedded",
        versions.get("stable_baselines3"),
        bool(versions.get("stable_baselines3")) if summary else None,
    )


def _chain(client, settings, run_id, report, poll_s, timeout_s, say) -> None:
    from rich.console import Console

    from orchestrator.chain.scheduler import run_chains
    from orchestrator.chain.start import start_chain
    from orchestrator.chain.step import ChainStepper
    from orchestrator.ledger import Ledger

    ledger = Ledger(settings.project_dir)
    name = f"{DOCTOR_PREFIX}-{run_id}"
    start_chain(settings, ledger, name, owner=settings.kaggle.owner, segments=[200, 200])
    say(f"started the 2-segment chain {name}")
    stepper = ChainStepper(settings, client, ledger, err=io.StringIO())
    began = time.time()
    results = run_chains(
        stepper,
        [name],
        poll_interval=poll_s,
        follow=False,
        console=Console(stderr=True, quiet=True),
        max_wall_s=timeout_s,
    )
    report.timings["chain_s"] = round(time.time() - began, 1)
    runs = ledger.runs(name)
    report.made.extend(r.slug for r in runs if r.state != "failed_push")
    outcome = results[name].outcome
    second = next((r for r in runs if r.segment == 2 and r.state == "pulled"), None)
    resumed = second.summary.resumed_from if second and second.summary else None
    mount = resumed.path if resumed else None
    report.observe(
        "mounts",
        "where the parent's output was mounted",
        "/kaggle/input/notebooks/<owner>/<slug>/",
        mount,
        ("/notebooks/" in str(mount)) if mount else None,
    )
    report.observe(
        "end-to-end-chain",
        "a 2-segment chain completes, resuming exactly",
        "done",
        outcome,
        outcome == "done",
    )


def _delete(client, owner: str, report: DoctorReport, say) -> None:
    from orchestrator.kaggle import KaggleError

    for slug in dict.fromkeys(report.made):
        try:
            client.delete_kernel(owner, slug)
            report.deleted.append(slug)
        except KaggleError as error:
            report.problems.append(f"could not delete {owner}/{slug}: {error}")
    if report.deleted:
        say(f"deleted {len(report.deleted)} kernel(s) it made")
