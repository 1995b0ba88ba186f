"""The zero-loss checklist before a push, as checks that each say ✔ or ✘ and how to fix it.

Cheap by design: the kernel is rendered and its embedded runtime really unpacked and
imported in a subprocess, which then builds the env and the model as the kernel does and
learns a few steps on the CPU (seconds); Kaggle is asked one quota call and a status per
known running GPU run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kernel_template.config import RunConfig
from kernel_template.layout import SessionPaths

from .build import EMBEDDED_PACKAGES, SELFCHECK_FLAG, KernelFolder, render_kernel
from .capacity import SESSION_LIMIT_S, TPU_SESSION_LIMIT_S, gpu_slots, quota_spent
from .errors import InfrastructureError, UserError
from .kernel_extra import KERNEL_EXTRA_HINT, TRAINING_MODULES, missing
from .settings import Settings, is_gpu_shape, is_tpu_shape

if TYPE_CHECKING:
    from rich.console import Console

    from .kaggle import KaggleClient
    from .ledger import Ledger

KAGGLE_OUTPUT_LIMIT_BYTES = 20 * 10**9
OUTPUT_WARN_BYTES = 15 * 10**9
SB3_DEFAULT_BUFFER_SIZE = 1_000_000
OFF_POLICY = ("DQN", "SAC")
SELFCHECK_TIMEOUT_S = 120
Status = Literal["pass", "warn", "fail", "skip"]
MARKS = {"pass": "✔", "warn": "!", "fail": "✘", "skip": "-"}


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""
    infrastructure: bool = False  # a failure Kaggle causes (exit 3), not the user's input (exit 2)

    def line(self) -> str:
        text = f"{MARKS[self.status]} {self.name}: {self.detail}"
        return f"{text} — fix: {self.fix}" if self.fix and self.status in ("fail", "warn") else text


@dataclass
class PreflightReport:
    checks: list[Check] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> Check:
        check = Check(*args, **kwargs)
        self.checks.append(check)
        return check

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def bad_input(self) -> bool:
        return any(not c.infrastructure for c in self.failures)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def print(self, console: Console) -> None:
        styles = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
        for check in self.checks:
            console.print(check.line(), style=styles[check.status], markup=False, highlight=False)

    def raise_for_failure(self) -> None:
        if self.ok:
            return
        first = self.failures[0]
        more = (
            f" (and {len(self.failures) - 1} more failed checks: run `orchestrate preflight`)"
            if len(self.failures) > 1
            else ""
        )
        message = (
            f"preflight: {first.name}: {first.detail}"
            + (f"; fix: {first.fix}" if first.fix else "")
            + more
        )
        raise (UserError if self.bad_input else InfrastructureError)(message)


def run_preflight(
    settings: Settings,
    run_config: RunConfig,
    *,
    client: KaggleClient | None = None,
    ledger: Ledger | None = None,
    slug: str | None = None,
    folder: KernelFolder | None = None,
    offline: bool = False,
    summary_path: Path | None = None,
) -> PreflightReport:
    report = PreflightReport()
    config_ok = check_config(report, settings, run_config)
    slug = slug or settings.kernel.slug
    owner = settings.kaggle.owner
    if client is not None and not owner:
        try:
            owner = client.username
        except Exception:  # reported by the credentials check below
            owner = None
    probe = None
    if config_ok:
        check_image_packages(report, settings, run_config)
        folder, probe = check_kernel(
            report, settings, run_config, slug=slug, owner=owner or "preflight", folder=folder
        )
    if offline:
        report.add("credentials", "skip", "offline: Kaggle not asked")
    else:
        check_kaggle(report, settings, run_config, client, ledger, owner)
    check_budget(report, settings, run_config, ledger, slug, summary_path)
    check_intervals(report, run_config)
    check_output_size(report, run_config, probe)
    return report


# --------------------------------------------------------------------------- the checks


def check_config(report: PreflightReport, settings: Settings, run_config: RunConfig) -> bool:
    config = run_config  # validated where it was loaded (orchestrate.toml) or derived
    what = config.entrypoint if config.trainer == "loop" else f"{config.algo} on {config.env}"
    report.add("config", "pass", f"valid, {what}, hash {config.config_hash()[:16]}")
    embedded = {
        entry.split(".")[0].split("/")[-1].removesuffix(".py")
        for entry in settings.kernel.user_modules
    }
    named = (
        [("entrypoint", config.entrypoint)] if config.trainer == "loop" else [("env", config.env)]
    )
    for name, value in named:
        module, sep, _ = (value or "").partition(":")
        top = module.split(".")[0]
        if sep and top not in embedded and top != "kernel_template":
            report.add(
                "custom env" if name == "env" else "entrypoint",
                "fail",
                f"{name} {value!r} comes from {top!r}, which the kernel does not carry",
                f"add {top!r} to [kernel] user_modules",
            )
    return True


def needed_modules(settings: Settings, run_config: RunConfig) -> tuple[set[str], set[str]]:
    """(modules the kernel imports, names of the user modules it carries): the runtime's own
    imports, the env's module and the user modules' imports (found with ast)."""
    from kernel_template.bootstrap import REQUIRED_MODULES

    from .build import user_module_files
    from .kaggle_image import module_imports

    needed = set(REQUIRED_MODULES)
    if run_config.logging.tensorboard:
        needed.add("tensorboard")
    named = run_config.entrypoint if run_config.trainer == "loop" else run_config.env
    module, sep, _ = (named or "").partition(":")
    if sep:
        needed.add(module.split(".")[0])
    try:
        files = user_module_files(settings.kernel.user_modules, settings.project_dir)
    except UserError:  # the render check names the problem
        files = {}
    local = {name.split("/")[0].removesuffix(".py") for name in files}
    for name, data in files.items():
        if name.endswith(".py"):
            try:
                needed |= module_imports(data, name)
            except SyntaxError:
                continue  # the selfcheck imports it and reports the error
    return needed, local


def check_image_packages(
    report: PreflightReport, settings: Settings, run_config: RunConfig
) -> None:
    """Every module the kernel imports must be in Kaggle's image, embedded, or pip-installed."""
    from .kaggle_image import distributions_for, image_packages, missing_from_image, normalize

    needed, local = needed_modules(settings, run_config)
    missing = missing_from_image(
        needed, embedded=EMBEDDED_PACKAGES, local={*local, "kernel_template"}
    )
    requested = {
        normalize(re.split(r"[<>=!~;\[ ]", r.strip(), maxsplit=1)[0])
        for r in settings.kernel.pip_install
    }
    installed = [m for m in missing if requested & set(distributions_for(m))]
    missing = [m for m in missing if m not in installed]
    kernel = settings.kernel
    if kernel.pip_install and not kernel.enable_internet:
        report.add(
            "image packages",
            "fail",
            f"[kernel] pip_install ({', '.join(kernel.pip_install)}) needs internet, which is off",
            "set [kernel] enable_internet = true, or embed the code with [kernel] user_modules",
        )
    if missing:
        report.add(
            "image packages",
            "fail",
            f"the kernel imports {', '.join(missing)}, which Kaggle's image "
            f"({len(image_packages())} packages) lacks and the kernel does not carry",
            "add it to [kernel] user_modules (pure Python), or to [kernel] pip_install "
            "with [kernel] enable_internet = true",
        )
    elif not (kernel.pip_install and not kernel.enable_internet):
        extra = f"; pip_install: {', '.join(installed)}" if installed else ""
        report.add(
            "image packages",
            "pass",
            f"{len(needed)} imported modules are in Kaggle's image or embedded "
            f"({', '.join(sorted(EMBEDDED_PACKAGES))}){extra}",
        )


def check_kernel(
    report: PreflightReport,
    settings: Settings,
    run_config: RunConfig,
    *,
    slug: str | None,
    owner: str,
    folder: KernelFolder | None,
) -> tuple[KernelFolder | None, dict | None]:
    """Render (unless given) and run the script's unpack + import step in a subprocess.

    Without the `[kernel]` extra, what needs it is skipped, one line each: rendering needs
    the source of the packages the kernel embeds, the env and model rehearsal the training
    stack."""
    lacking = missing(TRAINING_MODULES)
    unembeddable = missing(EMBEDDED_PACKAGES)
    if folder is None and unembeddable:
        for name in ("kernel renders", "embedded runtime"):
            report.add(name, "skip", _not_installed(unembeddable))
        for name in _rehearsals(run_config):
            report.add(name, "skip", _not_installed(lacking))
        return None, None
    scratch = Path(tempfile.mkdtemp(prefix="orchestrate-preflight-"))
    try:
        if folder is None:
            if not slug:
                report.add(
                    "kernel renders", "fail", "no kernel slug", "set [kernel] slug or pass --slug"
                )
                return None, None
            try:
                folder = render_kernel(
                    settings, run_config, slug=slug, out_dir=scratch / "kernel", owner=owner
                )
            except UserError as error:
                report.add("kernel renders", "fail", str(error))
                return None, None
        size = folder.script_path.stat().st_size
        report.add(
            "kernel renders",
            "pass",
            f"{folder.script_path.name}, {size:,} bytes, {len(folder.embedded_files)} files embedded",
        )
        probe = selfcheck(folder, scratch, run_config, rehearse=not lacking)
        if probe.get("error"):
            report.add(
                "embedded runtime", "fail", probe["error"], "rebuild; check [kernel] user_modules"
            )
            return folder, None
        report.add(
            "embedded runtime",
            "pass",
            f"imports kernel_template from the unpacked copy ({probe['kernel_template']})",
        )
        if lacking:
            for name in _rehearsals(run_config):
                report.add(name, "skip", _not_installed(lacking))
        elif "loop" in probe or "loop_error" in probe:
            check_loop(report, probe)
        elif probe.get("env_error"):
            report.add(
                "env",
                "fail",
                probe["env_error"],
                "fix [run] env / env_kwargs or [kernel] user_modules",
            )
        elif "obs_bytes" in probe:
            report.add(
                "env", "pass", f"{run_config.env} builds (observation {probe['obs_bytes']} bytes)"
            )
            check_model(report, probe)
        return folder, probe
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _rehearsals(run_config: RunConfig) -> tuple[str, ...]:
    """The checks the local rehearsal answers: a loop's entrypoint, or SB3's env and model."""
    return ("entrypoint",) if run_config.trainer == "loop" else ("env", "model")


def _not_installed(distributions: list[str]) -> str:
    return f"skipped: {', '.join(distributions)} not installed here ({KERNEL_EXTRA_HINT})"


# Runs kernel_template.probe from the unpacked runtime (argv[1]), so its embedded copies
# (kernel_template, stable-baselines3) build the env and the model, as on Kaggle.
def check_model(report: PreflightReport, probe: dict[str, Any]) -> None:
    """The model as the kernel builds it, and a few steps learnt: a typo in a hyperparameter
    fails here instead of in every segment of a chain."""
    if probe.get("model_error"):
        report.add("model", "fail", probe["model_error"], probe.get("model_fix", ""))
        return
    model = probe.get("model")
    if not model:
        return
    updates = (
        f"{model['updates']} gradient update(s)"
        if model["updates"]
        else "no gradient update yet within the rehearsal"
    )
    report.add(
        "model",
        "pass",
        f"{model['algo']} builds and learnt {model['steps']} steps on the CPU ({updates}) "
        f"in {model['seconds']:.1f} s",
    )


def check_loop(report: PreflightReport, probe: dict[str, Any]) -> None:
    """A user loop's entrypoint, run for a few steps and resumed once: an import error, a
    bad param or a state that does not load fails here instead of on Kaggle."""
    if probe.get("loop_error"):
        report.add("entrypoint", "fail", probe["loop_error"], probe.get("loop_fix", ""))
        return
    loop = probe["loop"]
    report.add(
        "entrypoint",
        "pass",
        f"{loop['entrypoint']} trained {loop['steps']} steps on the CPU, checkpointed, and "
        f"resumed to step {loop['resumed_to']} in {loop['seconds']:.1f} s",
    )


_PROBE = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from kernel_template.probe import main; main()"
)


def selfcheck(
    folder: KernelFolder, scratch: Path, run_config: RunConfig, *, rehearse: bool = True
) -> dict[str, Any]:
    """Run the rendered script's own unpack step and import, then (`rehearse`) probe the env
    and model from that copy."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["ORCHESTRATE_WORKING_DIR"] = str(scratch / "working")
    try:
        done = subprocess.run(
            [sys.executable, str(folder.script_path), SELFCHECK_FLAG],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=SELFCHECK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"the script's unpack/import step took over {SELFCHECK_TIMEOUT_S} s"}
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        result = {}
    runtime_dir = result.get("runtime_dir", "")
    try:
        if done.returncode != 0 or "kernel_template" not in result:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {
                "error": f"the script's unpack/import step failed (exit {done.returncode}): {last}"
            }
        if not result["kernel_template"].startswith(runtime_dir + os.sep):
            return {
                "error": f"the script imported {result['kernel_template']}, not its embedded copy"
            }
        if result.get("config_hash") != folder.config_hash:
            return {
                "error": "the embedded run config hashes differently from the one built; rebuild"
            }
        if not rehearse:
            return result
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                _PROBE,
                runtime_dir,
                json.dumps(run_config.model_dump(mode="json")),
            ],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=SELFCHECK_TIMEOUT_S,
        )
        probe_lines = probe.stdout.strip().splitlines()
        try:
            result.update(json.loads(probe_lines[-1]))
        except (IndexError, json.JSONDecodeError):
            result["env_error"] = (
                probe.stderr.strip().splitlines() or ["the env probe printed nothing"]
            )[-1]
        return result
    except subprocess.TimeoutExpired:
        result["env_error"] = f"building the env and model took over {SELFCHECK_TIMEOUT_S} s"
        return result
    finally:
        if runtime_dir and Path(runtime_dir).name.startswith("orchestrate-runtime-"):
            shutil.rmtree(runtime_dir, ignore_errors=True)


def check_kaggle(
    report: PreflightReport,
    settings: Settings,
    run_config: RunConfig,
    client: KaggleClient | None,
    ledger: Ledger | None,
    owner: str | None,
) -> None:
    from .kaggle import AuthenticationError, KaggleError
    from .kaggle.errors import CREDENTIALS_FIX

    if client is None:
        report.add(
            "credentials",
            "fail",
            "no Kaggle credentials found",
            "set KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json in ~/.kaggle (chmod 600)",
        )
        return
    try:
        quota = client.quota()  # authenticated and cheap: proves the credentials too
    except AuthenticationError as error:
        report.add(
            "credentials",
            "fail",
            f"Kaggle refused them: {error}",
            CREDENTIALS_FIX,
        )
        return
    except KaggleError as error:
        report.add(
            "credentials",
            "fail",
            f"Kaggle did not answer: {error}",
            "retry later",
            infrastructure=True,
        )
        return
    report.add(
        "credentials", "pass", f"accepted for {owner or client.username} at {client.api_url}"
    )

    shape = settings.kernel.machine_shape
    if not is_gpu_shape(shape):
        report.add(
            "GPU quota",
            "skip",
            f"{'TPU' if is_tpu_shape(shape) else 'CPU'} session: no GPU quota used",
        )
    elif quota_spent(quota):
        refresh = (
            f"; refreshes {quota.refresh_time:%Y-%m-%d %H:%M} UTC" if quota.refresh_time else ""
        )
        report.add(
            "GPU quota",
            "fail",
            f"spent ({_hours(quota.time_used_s)} of {_hours(quota.total_allowed_s)}){refresh}",
            "wait for the refresh",
            infrastructure=True,
        )
    elif quota.total_allowed_s > 0 and quota.remaining_s < run_config.session_limit_s:
        report.add(
            "GPU quota",
            "warn",
            f"{_hours(quota.remaining_s)} left, less than one {_hours(run_config.session_limit_s)} session",
            "the session may be cut when the quota runs out; checkpoints keep the work",
        )
    else:
        report.add(
            "GPU quota",
            "pass",
            f"{_hours(quota.remaining_s)} of {_hours(quota.total_allowed_s)} left this week",
        )

    if is_gpu_shape(shape) and ledger is not None and owner:
        try:
            slots = gpu_slots(settings, ledger, client, owner=owner)
        except KaggleError as error:
            report.add(
                "GPU slots",
                "fail",
                f"could not ask Kaggle: {error}",
                "retry later",
                infrastructure=True,
            )
            return
        if slots.full:
            report.add(
                "GPU slots",
                "fail",
                f"{len(slots.busy)} of {slots.cap} busy ({', '.join(slots.busy)})",
                "wait for one to end",
                infrastructure=True,
            )
        else:
            report.add(
                "GPU slots",
                "pass",
                f"{len(slots.busy)} of {slots.cap} GPU sessions busy (runs in this ledger)",
            )


def find_quick_summary(ledger: Ledger | None, slug: str | None) -> Path | None:
    """session_summary.json of the newest pulled quick test of this slug, if any."""
    if ledger is None or not slug:
        return None
    base = slug.removesuffix("-quick")
    for record in reversed(ledger.runs()):
        pulled = ledger.pulled_path(record)
        if not record.slug.startswith(f"{base}-quick") or pulled is None:
            continue
        outputs = [pulled, *(d for d in sorted(pulled.glob("*")) if d.is_dir())]
        candidates = [SessionPaths(d).summary for d in outputs]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
    return None


def check_budget(
    report: PreflightReport,
    settings: Settings,
    run_config: RunConfig,
    ledger: Ledger | None,
    slug: str | None,
    summary_path: Path | None,
) -> None:
    limit = TPU_SESSION_LIMIT_S if is_tpu_shape(settings.kernel.machine_shape) else SESSION_LIMIT_S
    if run_config.session_limit_s > limit:
        report.add(
            "session budget",
            "fail",
            f"session_limit_s {run_config.session_limit_s:.0f} is past Kaggle's {limit:.0f} s: the kernel would plan to save too late",
            f"set [run] session_limit_s <= {limit:.0f}",
        )
        return
    path = summary_path or find_quick_summary(ledger, slug)
    if path is None:
        report.add(
            "session budget",
            "warn",
            f"no quick test measured yet; the kernel keeps a {run_config.margin_floor_s:.0f} s floor plus what it measures",
            "run `orchestrate launch --quick-test`, pull it, then preflight again",
        )
        return
    from .plan import TimingMeasure

    try:
        timing = TimingMeasure.from_summary_file(path)
    except UserError as error:
        report.add("session budget", "fail", str(error), "pass another --summary")
        return
    reserved = (
        timing.setup_s
        + timing.eval_s
        + timing.finalize_s
        + timing.checkpoint_s
        + run_config.margin_floor_s
    )
    left = run_config.session_limit_s - reserved
    if left <= 0:
        report.add(
            "session budget",
            "fail",
            f"setup, a checkpoint, evaluation and finalisation need {reserved:.0f} s of a {run_config.session_limit_s:.0f} s session",
            "raise [run] session_limit_s or cut evaluation episodes",
        )
    elif left < 0.5 * run_config.session_limit_s:
        report.add(
            "session budget",
            "warn",
            f"only {left:.0f} s of {run_config.session_limit_s:.0f} s left for training",
            "raise session_limit_s or trim evaluation",
        )
    else:
        report.add(
            "session budget",
            "pass",
            f"{reserved:.0f} s reserved (setup {timing.setup_s:.0f}, checkpoint {timing.checkpoint_s:.1f}, "
            f"eval {timing.eval_s:.0f}, finalise {timing.finalize_s:.0f}, margin {run_config.margin_floor_s:.0f}) from {path}",
        )
    worst_loss_s = max(
        run_config.checkpoint_every * timing.s_per_step, run_config.checkpoint_min_seconds
    )
    if worst_loss_s > 1800:
        report.add(
            "checkpoint interval",
            "warn",
            f"a kill may lose ~{worst_loss_s / 60:.0f} min of training at {timing.s_per_step:.4f} s/step",
            "lower [run] checkpoint_every or checkpoint_min_seconds",
        )


def check_intervals(report: PreflightReport, run_config: RunConfig) -> None:
    problems = []
    if run_config.checkpoint_min_seconds == 0 and run_config.checkpoint_every < 1000:
        problems.append(
            (
                f"checkpoint_every={run_config.checkpoint_every} with checkpoint_min_seconds=0 checkpoints "
                f"many times a second on a fast {'loop' if run_config.trainer == 'loop' else 'env'}",
                "set [run] checkpoint_min_seconds (e.g. 10)",
            )
        )
    if run_config.export_min_seconds == 0 and run_config.export_every < 1000:
        problems.append(
            (
                f"export_every={run_config.export_every} with export_min_seconds=0 exports many times a second",
                "set [run] export_min_seconds (e.g. 30)",
            )
        )
    if run_config.checkpoint_min_seconds > run_config.session_limit_s / 4:
        problems.append(
            (
                f"checkpoint_min_seconds={run_config.checkpoint_min_seconds:.0f} allows few checkpoints per session",
                "lower it well below session_limit_s",
            )
        )
    if not problems:
        report.add(
            "intervals",
            "pass",
            f"checkpoint every {run_config.checkpoint_every} steps/{run_config.checkpoint_min_seconds:.0f} s, "
            f"export every {run_config.export_every} steps/{run_config.export_min_seconds:.0f} s, keep {run_config.keep_checkpoints}",
        )
    for detail, fix in problems:
        report.add("intervals", "warn", detail, fix)


def estimate_output_bytes(run_config: RunConfig, probe: dict | None) -> int:
    """Rough size of /kaggle/working at the end: checkpoints, buffer, best model, zip."""
    obs_bytes = (probe or {}).get("obs_bytes", 4 * 64)
    obs_dim = (probe or {}).get("obs_dim", 64)
    n_actions = (probe or {}).get("n_actions", 8)
    act_bytes = (probe or {}).get("act_bytes", 8)
    layers = [obs_dim, *_net_arch(run_config.policy_kwargs), n_actions]
    params = sum(a * b + b for a, b in zip(layers, layers[1:], strict=False))
    model_bytes = (
        params * 4 * (4 if run_config.algo in OFF_POLICY else 3)
    )  # weights, target/Adam moments
    buffer_bytes = 0
    if run_config.algo in OFF_POLICY:
        capacity = int(run_config.hyperparams.get("buffer_size", SB3_DEFAULT_BUFFER_SIZE))
        transitions = min(capacity, run_config.total_timesteps)
        buffer_bytes = transitions * (2 * obs_bytes + act_bytes + 8 + 8) * run_config.n_envs
    checkpoints = (
        run_config.keep_checkpoints * model_bytes + buffer_bytes
    )  # buffer chunks are shared
    artifacts = 3 * model_bytes + 50 * 10**6  # best + final model, metrics, figures, logs
    return int(checkpoints + artifacts * 2)  # the files, then artifacts.zip of them


def _net_arch(policy_kwargs: dict) -> list[int]:
    arch = policy_kwargs.get("net_arch", [64, 64])
    if isinstance(arch, dict):
        arch = arch.get("pi") or arch.get("qf") or [64, 64]
    return [int(x) for x in arch if isinstance(x, int)] or [64, 64]


def estimate_loop_output_bytes(run_config: RunConfig, checkpoint_bytes: int) -> int:
    """A user loop's /kaggle/working at the end, from the rehearsal's checkpoint size: the
    checkpoints kept, a best export about as large, logs and metrics, then the zip of them."""
    files = (run_config.keep_checkpoints + 1) * checkpoint_bytes + 50 * 10**6
    return int(files * 2)


def check_output_size(report: PreflightReport, run_config: RunConfig, probe: dict | None) -> None:
    limit = "(Kaggle keeps ~20 GB of /kaggle/working)"
    if run_config.trainer == "loop":
        rehearsal = (probe or {}).get("loop")
        if rehearsal is None:
            report.add(
                "output size",
                "skip",
                "a loop's checkpoint size comes from the entrypoint rehearsal, which left none",
            )
            return
        measured = rehearsal.get("checkpoint_bytes", 0)
        size = estimate_loop_output_bytes(run_config, measured)
        text = (
            f"~{size / 1e9:.2f} GB estimated from the rehearsal's {measured / 1e6:.1f} MB "
            f"checkpoint {limit}; state in a GrowingStore grows past it"
        )
        fix = "keep less in checkpoint()'s state, or lower keep_checkpoints"
    else:
        size = estimate_output_bytes(run_config, probe)
        text = f"~{size / 1e9:.2f} GB estimated {limit}"
        fix = "lower hyperparams.buffer_size or keep_checkpoints"
    if size > KAGGLE_OUTPUT_LIMIT_BYTES:
        report.add("output size", "fail", text, fix)
    elif size > OUTPUT_WARN_BYTES:
        report.add("output size", "warn", text, fix)
    else:
        report.add("output size", "pass", text)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"
