"""The golden models themselves, against plain Python integer arithmetic."""

import numpy as np
import pytest

from sim.golden import ref_matmul, wrap_int32


def test_matmul_against_python_ints():
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (5, 7), dtype=np.int8)
    b = rng.integers(-128, 128, (7, 3), dtype=np.int8)
    want = [[sum(int(a[i, k]) * int(b[k, j]) for k in range(7)) for j in range(3)]
            for i in range(5)]
    assert ref_matmul(a, b).tolist() == want
    assert ref_matmul(a, b).dtype == np.int32


def test_matmul_extremes_and_wrap():
    k = 1 << 16
    a = np.full((1, k), -128, np.int8)
    assert ref_matmul(a, np.full((k, 1), -128, np.int8))[0, 0] == 1 << 30
    assert ref_matmul(a, np.full((k, 1), 127, np.int8))[0, 0] == -128 * 127 * k
    assert wrap_int32(np.array([2**31, -2**31 - 1])).tolist() == [-2**31, 2**31 - 1]


@pytest.mark.parametrize("a, b, match", [
    (np.zeros((2, 3), np.int16), np.zeros((3, 2), np.int8), "a must have dtype int8"),
    (np.zeros((2, 3), np.int8), np.zeros((4, 2), np.int8), "3 columns but b has 4 rows"),
    (np.zeros(3, np.int8), np.zeros((3, 2), np.int8), "a must be 2-D"),
    ([[1]], np.zeros((1, 1), np.int8), "a must be a numpy array"),
])
def test_matmul_rejects_bad_input(a, b, match):
    with pytest.raises((TypeError, ValueError), match=match):
        ref_matmul(a, b)
