"""`python -m kernel_template --config run.json [--working DIR] [--input DIR]`.

Exit codes: 0 when the session ended `complete`, `budget_stop` or `signal_stop`;
1 on an error; 2 for a bad config or a checkpoint this config may not continue
(one line on stderr, before anything runs).
"""

from __future__ import annotations

import argparse
import sys

from kernel_template.config import ConfigError, default_run_config, load_run_config

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_CONFIG = 2
OK_STATUSES = ("complete", "budget_stop", "signal_stop")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kernel_template",
        description="Resumable training session: stable-baselines3, or a loop of your own.",
    )
    parser.add_argument("--config", help="run config JSON (RunConfig)")
    parser.add_argument(
        "--working", help="output dir (default $ORCHESTRATE_WORKING_DIR or /kaggle/working)"
    )
    parser.add_argument(
        "--input", help="input dir (default $ORCHESTRATE_INPUT_DIR or /kaggle/input)"
    )
    parser.add_argument(
        "--pip-install",
        action="append",
        default=[],
        metavar="REQUIREMENT",
        help="pip-install this first (repeatable; the script passes [kernel] pip_install)",
    )
    parser.add_argument(
        "--print-default-config",
        action="store_true",
        help="print the complete default config and exit",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.print_default_config:
        print(default_run_config().model_dump_json(indent=2))
        return EXIT_OK
    if not args.config:
        print(
            "error: no run config; pass --config run.json (see --print-default-config)",
            file=sys.stderr,
        )
        return EXIT_BAD_CONFIG
    try:
        config = load_run_config(args.config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG

    from kernel_template.runtime import RuntimeEnvironment, choose_device

    runtime = RuntimeEnvironment.discover(
        working_dir=args.working, input_dir=args.input, session_limit_s=config.session_limit_s
    )

    from kernel_template.bootstrap import DependencyError, ensure_dependencies

    try:
        ensure_dependencies(pip_requirements=args.pip_install)
        # A user loop's model is its own: "auto" means the GPU whenever there is one.
        policy = config.policy if config.trainer == "sb3" else ""
        runtime.device = choose_device(config.device, policy)
    except (DependencyError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR

    from kernel_template.resume import ResumeRefused

    if config.trainer == "loop":
        from kernel_template.session import Session, load_entrypoint

        session = Session(config, runtime)
        train = lambda: load_entrypoint(config.entrypoint)(session)  # noqa: E731
    else:
        from kernel_template.train import TrainingSession

        session = TrainingSession(config, runtime)
        train = session.train
    error: BaseException | None = None
    try:
        session.setup()
        train()
    except ResumeRefused as refused:
        print(f"error: {refused}", file=sys.stderr)
        session.logger.log("runtime", str(refused), step=0, level="error")
        session.logger.close()
        return EXIT_BAD_CONFIG
    except Exception as caught:
        error = caught
    summary = session.finish(error)
    return EXIT_OK if summary.status in OK_STATUSES else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
