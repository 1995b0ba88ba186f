"""What the tests share, imported as `tests.support.<module>`; pytest runs from the repo root.

`project` writes orchestrate.toml projects (ChainProject drives one), `cli` runs `orchestrate`,
`kernel` runs `python -m kernel_template` sessions, `emulator` speaks the raw wire protocol,
`compare` checks bitwise equality. Kernel subprocesses import `killpoints` and `slow_env` too,
so this package imports nothing heavy.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
