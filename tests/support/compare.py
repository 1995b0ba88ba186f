"""Bitwise equality of training results: the exact-resume promise, checked leaf by leaf."""

from __future__ import annotations

from typing import Any

import numpy as np


def assert_bit_identical(a: Any, b: Any, where: str = "") -> list[str]:
    """Bitwise equality of nested dicts/lists of tensors, arrays and plain values; returns the
    dotted name of every leaf compared."""
    import torch

    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        return [leaf for k in a for leaf in assert_bit_identical(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        return [
            leaf
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for leaf in assert_bit_identical(x, y, f"{where}[{i}]")
        ]
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, f"{where}: types differ"
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, f"{where}: types differ"
        assert np.array_equal(a, b), f"{where}: arrays differ"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
    return [where]
