"""Exit codes, and the whole tree of errors the CLI reports as one line.

0 done, 1 the run failed, 2 bad input (fix the command or config), 3 infrastructure
(Kaggle or the network: retry later). Every class carries its code as `exit_code`; the CLI
reads it at one seam (`orchestrator/commands/exits.py`). Anything else is a bug.

    OrchestrateError                 1  (this module)
    ├── UserError                    2
    ├── InfrastructureError          3
    │   └── LedgerBusy               3  (orchestrator/ledger.py)
    └── RunFailed                    1
    KaggleError                      3  (orchestrator/kaggle/errors.py)
    ├── CredentialsNotFound          2
    ├── AuthenticationError          2
    ├── NotFoundError                2
    ├── KernelNotVisible             2
    ├── BadRequest                   2
    │   └── DockerImageRefused       2
    ├── CapacityRefused              3
    ├── QuotaExhausted               3
    ├── Throttled                    3
    ├── ServiceUnavailable           3
    ├── AmbiguousPush                3
    └── IncompleteDownload           3
    ConfigError                      2  (kernel_template/config.py: a bad run config)
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
