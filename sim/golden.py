"""Numpy golden models (``ref_*``). Independent of ``hw/``: nothing here imports Amaranth.

Each model takes whole transactions (full matrices) and returns the full result, so that the
RTL can be compared with it on whole arrays.
"""

import numpy as np

__all__ = ["ref_matmul", "wrap_int32"]


def wrap_int32(x):
    """Two's-complement wrap of an integer array into int32 (what INT32 hardware does)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + 2**31) % 2**32 - 2**31).astype(np.int32)


def _check_int8_matrix(name, x):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, not {type(x).__name__}")
    if x.dtype != np.int8:
        raise TypeError(f"{name} must have dtype int8, not {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, not of shape {x.shape!r}")


def ref_matmul(a, b):
    """INT8 A[M,K] × INT8 B[K,N] → INT32 C[M,N], accumulated exactly and wrapped to int32.

    With in-range INT8 inputs the exact sum never exceeds int32 for K < 2^17, so the wrap only
    matters beyond that (as it would in the hardware's INT32 accumulators).
    """
    _check_int8_matrix("a", a)
    _check_int8_matrix("b", b)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"a has {a.shape[1]} columns but b has {b.shape[0]} rows")
    return wrap_int32(a.astype(np.int64) @ b.astype(np.int64))
