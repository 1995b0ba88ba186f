"""`make demo`: a 3-segment chain of real training on the local emulator, with no Kaggle account.

1. starts the emulator (loopback, a throwaway user and key) under `demo-output/`;
2. writes `demo-output/project/orchestrate.toml`: traffic-signal env, DQN, a small net;
3. runs the chain as `orchestrate chain run` does, following each segment's live log;
   every segment's outputs are pulled and verified before the next one is pushed;
4. writes the report and prints where everything is.

    python -m orchestrator.demo [--out demo-output] [--timesteps 6000] [--segments 3]

`make demo-loop` (`--example torch-loop`) chains examples/torch-loop instead: a PyTorch
loop of its own, run through the kernel's session API (docs/your-own-loop.md).
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import sys
from pathlib import Path

DEMO_USER = "demo"
CHAIN = "demo-traffic"

DEMO_TOML = """\
# Written by `make demo`: a short real training against the local emulator.
[kaggle]
owner = "{user}"
api_url = "{api_url}"

[kernel]
slug = "{chain}"
title = "Demo Traffic"
accelerator = "NvidiaTeslaT4"   # the emulator runs it on this machine's CPU, and counts GPU time
enable_internet = false

[run]
algo = "DQN"
env = "traffic-signal"
seed = 0
total_timesteps = {total}
checkpoint_every = 500
checkpoint_min_seconds = 0
export_every = 250
export_min_seconds = 0
session_limit_s = {session_limit_s}
min_margin_s = 5
device = "cpu"

[run.hyperparams]
learning_rate = 0.001
buffer_size = 10000
learning_starts = 500
train_freq = 4
target_update_interval = 500
exploration_fraction = 0.3
batch_size = 64

[run.policy_kwargs]
net_arch = [32, 32]

[run.logging]
tensorboard = false
progress_every_s = 2.0
progress_every_steps = 500

[run.evaluation]
best_model_episodes = 1
final_episodes = 2

[chain]
segments = {segments}
"""


# `--example torch-loop` (make demo-loop): the user-loop example, chained instead of DQN.
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
LOOP_EXAMPLE = "torch-loop"
LOOP_CHAIN = "torch-loop-regression"


def write_loop_project(
    project: Path, *, user: str, api_url: str, total: int, segments: int
) -> None:
    """The example's folder (its user module and orchestrate.toml) made into `project`,
    pointed at the emulator, with the chain's length set."""
    example = EXAMPLES_DIR / LOOP_EXAMPLE
    for source in example.glob("*.py"):
        shutil.copyfile(source, project / source.name)
    toml = (example / "orchestrate.toml").read_text()
    kaggle = f'[kaggle]\nowner = "{user}"\napi_url = "{api_url}"\n'
    toml = toml.replace("[kaggle]\n", kaggle, 1)
    toml = re.sub(r"(?m)^total_timesteps = \d+", f"total_timesteps = {total}", toml, count=1)
    toml = re.sub(r"(?m)^segments = \d+", f"segments = {segments}", toml, count=1)
    (project / "orchestrate.toml").write_text(toml)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out", type=Path, default=Path("demo-output"), help="folder for everything (replaced)"
    )
    parser.add_argument("--timesteps", type=int, default=6000, help="total training timesteps")
    parser.add_argument("--segments", type=int, default=3, help="number of chained sessions")
    parser.add_argument(
        "--session-limit-s", type=float, default=300.0, help="the emulated session limit"
    )
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument(
        "--example",
        choices=[LOOP_EXAMPLE],
        help="chain an example from examples/ instead of DQN (torch-loop: a loop of your own)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from orchestrator.chain.report import build_report
    from orchestrator.chain.scheduler import run_chains
    from orchestrator.chain.start import start_chain
    from orchestrator.chain.status import chain_status, print_status
    from orchestrator.chain.step import ChainStepper
    from orchestrator.emulator.testing import start_emulator
    from orchestrator.kaggle import Credentials, KaggleClient
    from orchestrator.ledger import Ledger
    from orchestrator.settings import load_settings

    args = parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    project = out / "project"
    project.mkdir(parents=True)
    key = secrets.token_hex(16)  # a throwaway key for the throwaway emulator user

    console.rule("kaggle-orchestrate demo")
    console.print(f"starting the Kaggle emulator under {out / 'emulator'} ...", markup=False)
    with start_emulator(
        out / "emulator",
        {DEMO_USER: key},
        queue_delay=0.5,
        max_session=args.session_limit_s,
        kill_grace=5,
    ) as emulator:
        chain = LOOP_CHAIN if args.example else CHAIN
        if args.example:
            write_loop_project(
                project,
                user=DEMO_USER,
                api_url=emulator.api_url,
                total=args.timesteps,
                segments=args.segments,
            )
            what = "a PyTorch loop of its own (examples/torch-loop)"
        else:
            (project / "orchestrate.toml").write_text(
                DEMO_TOML.format(
                    user=DEMO_USER,
                    api_url=emulator.api_url,
                    chain=CHAIN,
                    total=args.timesteps,
                    session_limit_s=args.session_limit_s,
                    segments=args.segments,
                )
            )
            what = "DQN on the traffic-signal env"
        settings = load_settings(project / "orchestrate.toml")
        ledger = Ledger(project)
        record = start_chain(settings, ledger, chain, owner=DEMO_USER)
        console.print(
            f"chain {chain}: {len(record.segments)} segments {record.segments} of {what}",
            markup=False,
        )
        with KaggleClient(emulator.api_url, Credentials(username=DEMO_USER, key=key)) as client:
            stepper = ChainStepper(settings, client, ledger)
            results = run_chains(
                stepper,
                [chain],
                poll_interval=args.poll_interval,
                follow=True,
                console=console,
                on_result=lambda r: console.print(f"[bold]chain:[/bold] {r.outcome}: {r.message}"),
            )
        result = results[chain]
        console.rule("result")
        print_status(chain_status(ledger, chain))
        if result.outcome != "done":
            console.print(f"the chain ended {result.outcome}: {result.message}", markup=False)
            return result.exit_code or 1
        report = build_report(ledger, chain, out / "report")
    console.print(
        "\n".join(
            [
                "",
                f"report (open in a browser):  {report.html}",
                f"figures:                     {', '.join(str(p) for p in report.images)}",
                "verified segment outputs:    "
                + ", ".join(str(ledger.pulled_path(r)) for r in ledger.runs(chain) if r.pulled_dir),
                f"ledger:                      {ledger.path}",
                f"config used:                 {project / 'orchestrate.toml'}",
                "",
                "Next: docs/walkthrough.md runs the same chain against Kaggle itself.",
            ]
        ),
        markup=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
