"""Ember's packed operand layouts (see ``hw/gemm.py``), in numpy. Layout only: no arithmetic.

The runtime uses these to lay out A and B in DRAM/scratchpad words.
"""

import numpy as np

__all__ = ["gemm_tiles", "pack_a", "pack_b"]


def gemm_tiles(m, k, n, *, rows, cols, lanes):
    """(m_tiles, steps, n_tiles) that cover an M×K×N GEMM on an R×C×L array."""
    return -(-m // rows), max(1, -(-k // lanes)), -(-n // cols)


def pack_a(a, *, rows, lanes, word_bytes):
    """A[M, K] int8 → words[m_tiles·steps, W] uint8; word (i, s) byte r·L+l = A[iR+r, sL+l]."""
    M, K = a.shape
    mt, S, _ = gemm_tiles(M, K, 1, rows=rows, cols=1, lanes=lanes)
    ap = np.zeros((mt * rows, S * lanes), np.int8)
    ap[:M, :K] = a
    t = ap.reshape(mt, rows, S, lanes).transpose(0, 2, 1, 3).reshape(mt * S, rows * lanes)
    words = np.zeros((mt * S, word_bytes), np.uint8)
    words[:, :rows * lanes] = t.view(np.uint8)
    return words


def pack_b(b, *, cols, lanes, word_bytes):
    """B[K, N] int8 → words[n_tiles·steps, W] uint8; word (j, s) byte c·L+l = B[sL+l, jC+c]."""
    K, N = b.shape
    _, S, nt = gemm_tiles(1, K, N, rows=1, cols=cols, lanes=lanes)
    bp = np.zeros((S * lanes, nt * cols), np.int8)
    bp[:K, :N] = b
    t = bp.reshape(S, lanes, nt, cols).transpose(2, 0, 3, 1).reshape(nt * S, cols * lanes)
    words = np.zeros((nt * S, word_bytes), np.uint8)
    words[:, :cols * lanes] = t.view(np.uint8)
    return words
