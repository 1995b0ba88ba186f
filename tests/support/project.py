"""Test projects: one orchestrate.toml writer, and ChainProject to drive a project folder."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.chain.scheduler import run_chains
from orchestrator.chain.start import start_chain
from orchestrator.chain.states import StepResult
from orchestrator.chain.step import ChainStepper
from orchestrator.emulator.testing import EmulatorHandle, start_emulator
from orchestrator.kaggle import Credentials, KaggleClient
from orchestrator.ledger import Ledger
from orchestrator.settings import Settings, load_settings
from tests.support import REPO_ROOT
from tests.support.cli import ORCHESTRATE, emulator_cli_env, orchestrate

# The launch tests' run: a training that finishes in seconds (a few hundred steps, a small net,
# one evaluation episode).
LAUNCH_RUN = """\
[run]
algo = "DQN"
env = "{env}"
total_timesteps = {steps}
session_limit_s = 600
checkpoint_every = 200
checkpoint_min_seconds = 1
export_every = 300
export_min_seconds = 1
{run_extra}

[run.hyperparams]
learning_starts = 100
buffer_size = 5000

[run.policy_kwargs]
net_arch = [32, 32]

[run.evaluation]
final_episodes = 1
best_model_episodes = 1
"""

# The chain tests' run: traffic env, DQN, a 16-unit net, ~1 s of training per 1000 steps,
# checkpoints by step so segments end on exact steps.
CHAIN_RUN = """\
[run]
algo = "DQN"
env = "traffic-signal"
seed = 7
total_timesteps = {total}
checkpoint_every = {checkpoint_every}
checkpoint_min_seconds = 0
export_every = 250
export_min_seconds = 0
keep_checkpoints = 2
session_limit_s = {session_limit_s}
min_margin_s = 1
device = "cpu"

[run.hyperparams]
buffer_size = 2000
learning_starts = 200
train_freq = 4
target_update_interval = 250
batch_size = 32

[run.policy_kwargs]
net_arch = [16]

[run.logging]
tensorboard = false
progress_every_s = 0.5
progress_every_steps = 200

[run.evaluation]
best_model_episodes = 1
final_episodes = 1
"""


def render_project(
    *,
    kaggle: str,
    slug: str,
    accelerator: str,
    run: str,
    title: str | None = None,
    kernel: str = "",
) -> str:
    """The text of an orchestrate.toml: `kaggle`, `kernel` and `run` are TOML lines."""
    title_line = f'title = "{title}"\n' if title is not None else ""
    return (
        f"[kaggle]\n{kaggle}\n\n"
        f'[kernel]\nslug = "{slug}"\n{title_line}accelerator = "{accelerator}"\n{kernel}\n\n'
        f"{run}"
    )


def write_project(
    directory: Path,
    *,
    slug: str = "tiny-dqn",
    title: str = "Tiny Dqn",
    accelerator: str = "none",
    env: str = "traffic-signal",
    steps: int = 600,
    kaggle: str = "",
    kernel_extra: str = "",
    run_extra: str = "",
) -> Path:
    """A launch project in `directory` (its client found from the environment); returns the toml."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "orchestrate.toml"
    run = LAUNCH_RUN.format(env=env, steps=steps, run_extra=run_extra)
    path.write_text(
        render_project(
            kaggle=kaggle,
            slug=slug,
            title=title,
            accelerator=accelerator,
            kernel=kernel_extra,
            run=run,
        )
    )
    return path


def project_toml(
    api_url: str,
    *,
    slug: str = "tiny-chain",
    accelerator: str = "none",
    total: int = 3000,
    checkpoint_every: int = 250,
    session_limit_s: float = 600,
    gpu_session_cap: int = 2,
) -> str:
    """A chain project's orchestrate.toml text: alice's, on the emulator at `api_url`."""
    kaggle = f'owner = "alice"\napi_url = "{api_url}"\ngpu_session_cap = {gpu_session_cap}'
    run = CHAIN_RUN.format(
        total=total, checkpoint_every=checkpoint_every, session_limit_s=session_limit_s
    )
    return render_project(
        kaggle=kaggle, slug=slug, accelerator=accelerator, kernel="enable_internet = false", run=run
    )


@dataclass
class ChainProject:
    dir: Path
    emulator: EmulatorHandle

    @property
    def settings(self) -> Settings:
        return load_settings(self.dir / "orchestrate.toml")

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.dir)

    def client(self, *, fast_retries: bool = False):
        from orchestrator.kaggle import KaggleClient, RetryPolicy

        retry = RetryPolicy.fast() if fast_retries else None
        return KaggleClient(self.emulator.api_url, retry=retry)

    def env(self) -> dict[str, str]:
        env = self.emulator.subprocess_env("alice")
        env["PYTHONPATH"] = str(REPO_ROOT)
        return env

    def cli(
        self,
        *args: str,
        timeout: float = 300,
        check: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """`orchestrate ...` in a subprocess, in the project folder."""
        proc = orchestrate(
            *args, cwd=self.dir, env={**self.env(), **(extra_env or {})}, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"orchestrate {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
            )
        return proc

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(
            [*ORCHESTRATE, *args],
            cwd=self.dir,
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **kwargs,
        )


def launch_quick_test(
    emulator: EmulatorHandle, tmp_path: Path, *flags: str, steps: int
) -> tuple[Path, dict[str, str], subprocess.CompletedProcess]:
    """`orchestrate launch --quick-test FLAGS --watch` in a fresh `steps`-step project, as a
    user runs it; it must succeed. Returns the project, the env used and the launch."""
    project = tmp_path / "project"
    write_project(project, steps=steps)
    env = emulator_cli_env(emulator, tmp_path)
    result = orchestrate("launch", "--quick-test", *flags, "--watch", cwd=project, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return project, env, result


@contextmanager
def emulated_project(
    root: Path, users: dict[str, str], write: Callable[[Path, str], object]
) -> Iterator[tuple[EmulatorHandle, Path, KaggleClient]]:
    """An emulator under `root` (short queue, 2 s kill grace), the project `root/project` that
    `write(directory, api_url)` writes, and alice's client: the world of a chain end to end."""
    with start_emulator(root / "emulator", users, queue_delay=0.1, kill_grace=2) as emulator:
        project = root / "project"
        project.mkdir()
        write(project, emulator.api_url)
        with KaggleClient(emulator.api_url, Credentials("alice", users["alice"])) as client:
            yield emulator, project, client


def run_chain_to_end(
    project: Path, client: KaggleClient, name: str, *, follow: bool = False, **start_options
) -> tuple[Settings, Ledger, StepResult]:
    """`chain start NAME` as alice, then the scheduler in this process until the chain ends:
    the project's settings, its ledger and the chain's last step result."""
    settings = load_settings(project / "orchestrate.toml")
    ledger = Ledger(project)
    start_chain(settings, ledger, name, owner="alice", **start_options)
    stepper = ChainStepper(settings, client, ledger)
    results = run_chains(stepper, [name], poll_interval=0.3, follow=follow)
    return settings, ledger, results[name]
