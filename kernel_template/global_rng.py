"""The global random streams (`random`, numpy, torch and CUDA), kept as they were around work
that must not draw from training's: an evaluation in the middle of a run leaves the run
bit-identical to one without it.

(A checkpoint saves and restores the same streams across processes: `checkpoint.capture_rng_states`.)
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


@contextmanager
def preserved() -> Iterator[None]:
    """Put the global random, numpy and torch (and CUDA) RNG states back on exit, even on error.

    Torch counts only once imported: a torch nobody loaded has no stream anyone drew from,
    and importing it here would cost seconds."""
    torch = sys.modules.get("torch")
    py_state, np_state = random.getstate(), np.random.get_state()
    torch_state = torch.get_rng_state() if torch is not None else None
    cuda_states = _cuda_states(torch)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        if torch is not None:
            torch.set_rng_state(torch_state)
            if cuda_states is not None:
                torch.cuda.set_rng_state_all(cuda_states)


def _cuda_states(torch) -> list | None:
    # Only touch CUDA once it is initialised; initialising it here would cost seconds.
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.get_rng_state_all()
