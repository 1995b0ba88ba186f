"""`GrowingStore`: rows that only ever get appended (rollouts from a simulator, a dataset that
grows), checkpointed incrementally: each checkpoint writes the rows added since the last one.

It is the storage the SB3 replay buffer uses (`checkpoint.ReplayBufferChunks`), with its
guarantees: rows go into immutable chunk files, older chunks are hard-linked from the
previous checkpoint, and a logarithmic merge keeps a checkpoint at about 32 files or fewer
whatever the run's length, so a checkpoint costs the rows added (amortised O(log N) writes
per row), never the whole store. Register one with `session.track(store)` before
`session.resume()`; the resume refills it.

A store holds at most `capacity` rows (allocated up front); past that the oldest rows are
overwritten, as in a replay buffer. `rows_total` counts every row ever appended.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class GrowingStore:
    """Named columns of rows: `GrowingStore(capacity, obs=((4,), np.float32), reward=((), np.float32))`."""

    # Read by the chunk writer (checkpoint.ReplayBufferChunks) as it reads an SB3 buffer.
    n_envs = 1
    optimize_memory_usage = False

    def __init__(self, capacity: int, **columns: tuple[tuple[int, ...], Any]) -> None:
        if capacity < 1 or not columns:
            raise ValueError("a GrowingStore needs a capacity >= 1 and at least one column")
        self.buffer_size = capacity
        self.columns = {
            name: np.zeros((capacity, *shape), dtype=dtype)
            for name, (shape, dtype) in columns.items()
        }
        self.rows_total = 0
        self.pos = 0
        self.full = False

    def append(self, **rows: Any) -> None:
        """Append rows: every column, each with the same number of rows (a leading axis)."""
        if rows.keys() != self.columns.keys():
            raise ValueError(f"append needs exactly the columns {sorted(self.columns)}")
        values = {name: np.asarray(value) for name, value in rows.items()}
        counts = {len(value) for value in values.values()}
        if len(counts) != 1:
            raise ValueError(f"columns have different row counts {sorted(counts)}")
        count = counts.pop()
        positions = np.arange(self.rows_total, self.rows_total + count) % self.buffer_size
        for name, value in values.items():
            self.columns[name][positions] = value
        self._moved_to(self.rows_total + count)

    def _moved_to(self, rows_total: int) -> None:
        self.rows_total = rows_total
        self.pos = rows_total % self.buffer_size
        self.full = rows_total >= self.buffer_size

    def __len__(self) -> int:
        """Live rows: all of them until the capacity is reached."""
        return min(self.rows_total, self.buffer_size)

    def rows(self) -> dict[str, np.ndarray]:
        """The live rows of every column, oldest first."""
        first = max(0, self.rows_total - self.buffer_size)
        order = np.arange(first, self.rows_total) % self.buffer_size
        return {name: column[order] for name, column in self.columns.items()}
