"""What the tests share, imported as `tests.support.<module>`; pytest runs from the repo root.

`project` writes orchestrate.toml projects (ChainProject drives one; emulated_project and
run_chain_to_end run a chain end to end), `cli` runs `orchestrate`, `kernel` runs
`python -m kernel_template` sessions (one, or a chain of segments), `emulator` speaks the raw
wire protocol and points this process at an emulator, `records` builds ledger records and
session summaries in memory, `kaggle_fakes` answers a client through httpx.MockTransport,
`tools` skips (or fails under CI) when an outside tool is missing, `compare` checks bitwise
equality. Kernel subprocesses import `killpoints` and `slow_env` too,
so this package imports nothing heavy.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
