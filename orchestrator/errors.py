"""Exit codes and the errors the CLI turns into them.

0 done, 1 the run failed, 2 bad input (fix the command or config), 3 infrastructure
(Kaggle or the network: retry later).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    RUN_FAILED = 1
    BAD_INPUT = 2
    INFRASTRUCTURE = 3


class OrchestrateError(Exception):
    """Base of errors the CLI reports as one line, with an exit code."""

    exit_code: ExitCode = ExitCode.RUN_FAILED


class UserError(OrchestrateError):
    """Bad input: the message names the problem and the fix."""

    exit_code = ExitCode.BAD_INPUT


class InfrastructureError(OrchestrateError):
    """Kaggle or the network failed; retrying later may work."""

    exit_code = ExitCode.INFRASTRUCTURE


class RunFailed(OrchestrateError):
    """The kernel ran and failed, or its outputs did not verify."""

    exit_code = ExitCode.RUN_FAILED
