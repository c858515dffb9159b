"""Golden models of the output stage: TFLite/gemmlowp INT32 → INT8 requantisation.

Independent of ``hw/``: numpy and the standard library only. The arithmetic is TFLite's default
(not ``TFLITE_SINGLE_ROUNDING``) reference path, as restated in ``shared/reference/README.md``:

1. ``acc = acc + bias[c]`` (INT32, wrapping);
2. ``x = acc · 2^max(s, 0)`` (INT32, wrapping);
3. ``y = SaturatingRoundingDoublingHighMul(x, qm[c])``;
4. ``r = RoundingDivideByPOT(y, max(-s, 0))``;
5. ``out = min(max(r + zero_point, act_min), act_max)`` as INT8.

There are two independent implementations, cross-checked by ``tests/test_requant.py``:

- :func:`ref_requant` works on whole arrays with int64 numpy arithmetic, written from the steps
  above (nudge, C truncating division, mask/remainder/threshold);
- :func:`ref_requant_scalar` is one element in Python integers, following gemmlowp's
  ``SaturatingRoundingDoublingHighMul`` and ``RoundingDivideByPOT`` and TFLite's
  ``MultiplyByQuantizedMultiplier`` line by line (:func:`saturating_rounding_doubling_high_mul`,
  :func:`rounding_divide_by_pot`).

Argument ranges: ``multiplier`` may be any INT32 (TFLite only produces ``[2^30, 2^31)`` and 0, but
gemmlowp's arithmetic, and Ember's hardware, are defined on all of INT32, including the saturating
``INT32_MIN · INT32_MIN``); ``shift`` must lie in ``[-31, 31]``; ``zero_point``, ``act_min`` and
``act_max`` in ``[-128, 127]`` with ``act_min <= act_max``. ``r + zero_point`` is exact (no INT32
wrap), which equals TFLite's result wherever its INT32 addition is defined.
"""

import math
import numbers

import numpy as np

__all__ = [
    "INT32_MIN", "INT32_MAX", "SHIFT_MIN", "SHIFT_MAX",
    "ref_bias_add", "ref_requant", "ref_requant_scalar",
    "saturating_rounding_doubling_high_mul", "rounding_divide_by_pot", "quantize_multiplier",
]

INT32_MIN = -2**31
INT32_MAX = 2**31 - 1
SHIFT_MIN, SHIFT_MAX = -31, 31


# -- argument checks ----------------------------------------------------------------------------

def _check_scalar(name, value, lo, hi):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], not {value!r}")
    return value


def _check_acc(acc):
    if not isinstance(acc, np.ndarray):
        raise TypeError(f"acc must be a numpy array, not {type(acc).__name__}")
    if acc.dtype != np.int32:
        raise TypeError(f"acc must have dtype int32, not {acc.dtype}")
    if acc.ndim != 2:
        raise ValueError(f"acc must be 2-D, not of shape {acc.shape!r}")


def _check_vector(name, value, n, lo, hi):
    """A per-column integer vector of length ``n`` with values in [lo, hi], as int64."""
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, not {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match acc, not {arr.shape!r}")
    if arr.size and (arr.min() < lo or arr.max() > hi):
        bad = arr[(arr < lo) | (arr > hi)][0]
        raise ValueError(f"{name} must be in [{lo}, {hi}], not {int(bad)!r}")
    return arr.astype(np.int64)


def _check_output(zero_point, act_min, act_max):
    zero_point = _check_scalar("zero_point", zero_point, -128, 127)
    act_min = _check_scalar("act_min", act_min, -128, 127)
    act_max = _check_scalar("act_max", act_max, -128, 127)
    if act_min > act_max:
        raise ValueError(f"act_min must not exceed act_max, not {act_min!r} > {act_max!r}")
    return zero_point, act_min, act_max


def _wrap32(x):
    """Two's-complement wrap of an int64 array (or Python int) into the INT32 range."""
    return (x + 2**31) % 2**32 - 2**31


# -- whole-array models -------------------------------------------------------------------------

def ref_bias_add(acc, bias):
    """Raw output: ``acc[m, c] + bias[c]`` wrapped to INT32.

    Parameters
    ----------
    acc : numpy.ndarray of int32, shape (M, N)
        Accumulators.
    bias : array_like of int, shape (N,)
        Per-column INT32 bias.

    Returns
    -------
    numpy.ndarray of int32, shape (M, N)
    """
    _check_acc(acc)
    bias = _check_vector("bias", bias, acc.shape[1], INT32_MIN, INT32_MAX)
    return _wrap32(acc.astype(np.int64) + bias).astype(np.int32)


def ref_requant(acc, bias, multiplier, shift, zero_point=0, act_min=-128, act_max=127):
    """INT32 accumulators → INT8 with per-column bias, multiplier and shift, bit-exact with TFLite.

    Parameters
    ----------
    acc : numpy.ndarray of int32, shape (M, N)
        Accumulators (before the bias).
    bias : array_like of int, shape (N,)
        Per-column INT32 bias, added with INT32 wrap.
    multiplier : array_like of int, shape (N,)
        Per-column quantised multiplier, any INT32 (TFLite: ``[2^30, 2^31)`` or 0).
    shift : array_like of int, shape (N,)
        Per-column shift in ``[-31, 31]``, positive left.
    zero_point, act_min, act_max : int
        Output zero point and clamp bounds, in ``[-128, 127]``, ``act_min <= act_max``.

    Returns
    -------
    numpy.ndarray of int8, shape (M, N)
    """
    _check_acc(acc)
    n = acc.shape[1]
    bias = _check_vector("bias", bias, n, INT32_MIN, INT32_MAX)
    qm = _check_vector("multiplier", multiplier, n, INT32_MIN, INT32_MAX)
    shift = _check_vector("shift", shift, n, SHIFT_MIN, SHIFT_MAX)
    zero_point, act_min, act_max = _check_output(zero_point, act_min, act_max)

    # 1-2. Bias add and left shift, each wrapped to INT32 (|x·2^31| < 2^63: no int64 overflow).
    acc = _wrap32(acc.astype(np.int64) + bias)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = _wrap32(acc << left)
    # 3. SaturatingRoundingDoublingHighMul: |p| <= 2^62, so p + nudge fits int64.
    overflow = (x == INT32_MIN) & (qm == INT32_MIN)
    p = x * qm
    nudge = np.where(p >= 0, 1 << 30, 1 - (1 << 30))
    v = p + nudge
    high = np.where(v >= 0, v // 2**31, -((-v) // 2**31))  # C division truncates toward zero
    y = np.where(overflow, INT32_MAX, high)
    # 4. RoundingDivideByPOT (numpy >> on int64 is arithmetic; & is two's complement).
    mask = (np.int64(1) << right) - 1
    remainder = y & mask
    threshold = (mask >> 1) + (y < 0)
    r = (y >> right) + (remainder > threshold)
    # 5. Zero point (exact) and clamp, as TFLite: max with act_min, then min with act_max.
    out = np.minimum(np.maximum(r + zero_point, act_min), act_max)
    return out.astype(np.int8)


# -- scalar model, literally after gemmlowp / TFLite ----------------------------------------------

def _c_div(n, d):
    """C integer division: the quotient truncated toward zero."""
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d >= 0) else -q


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on two INT32 values (Python ints)."""
    a = _check_scalar("a", a, INT32_MIN, INT32_MAX)
    b = _check_scalar("b", b, INT32_MIN, INT32_MAX)
    overflow = a == b and a == INT32_MIN
    ab_64 = a * b
    nudge = (1 << 30) if ab_64 >= 0 else (1 - (1 << 30))
    ab_x2_high32 = _c_div(ab_64 + nudge, 1 << 31)
    return INT32_MAX if overflow else ab_x2_high32


def rounding_divide_by_pot(x, exponent):
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2^exponent`` rounded half away from zero."""
    x = _check_scalar("x", x, INT32_MIN, INT32_MAX)
    exponent = _check_scalar("exponent", exponent, 0, 31)
    mask = (1 << exponent) - 1
    zero, one = 0, 1
    remainder = x & mask
    threshold = (mask >> 1) + ((-1 if x < zero else 0) & one)   # MaskIfLessThan(x, 0) & 1
    return (x >> exponent) + ((-1 if remainder > threshold else 0) & one)


def ref_requant_scalar(acc, bias, multiplier, shift, zero_point=0, act_min=-128, act_max=127):
    """One element of :func:`ref_requant`, in Python integers after TFLite's reference kernel.

    ``MultiplyByQuantizedMultiplier(acc + bias, multiplier, shift)``, then the output offset and
    the activation clamp. Returns a Python int in ``[act_min, act_max]``.
    """
    acc = _check_scalar("acc", acc, INT32_MIN, INT32_MAX)
    bias = _check_scalar("bias", bias, INT32_MIN, INT32_MAX)
    multiplier = _check_scalar("multiplier", multiplier, INT32_MIN, INT32_MAX)
    shift = _check_scalar("shift", shift, SHIFT_MIN, SHIFT_MAX)
    zero_point, act_min, act_max = _check_output(zero_point, act_min, act_max)
    acc = _wrap32(acc + bias)
    left_shift = shift if shift > 0 else 0
    right_shift = 0 if shift > 0 else -shift
    acc = rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(_wrap32(acc * (1 << left_shift)), multiplier),
        right_shift)
    acc += zero_point
    acc = max(acc, act_min)
    acc = min(acc, act_max)
    return acc


# -- host side ----------------------------------------------------------------------------------

def quantize_multiplier(real_scale):
    """TFLite ``QuantizeMultiplier``: ``real_scale ≈ qm · 2^(shift - 31)``.

    ``q, e = frexp(scale)``; ``qm = round(q·2^31)`` with ties away from zero; if ``qm == 2^31``,
    halve it and add 1 to ``e``; ``shift = e``. As in TFLite, a scale so small that ``shift < -31``
    is flushed to ``(0, 0)`` (every result would be 0 anyway), and 0 gives ``(0, 0)``.

    Parameters
    ----------
    real_scale : float
        Finite, non-negative, below 2^31 (larger scales would need ``shift > 31``).

    Returns
    -------
    (int, int)
        ``qm`` in ``[2^30, 2^31)`` or 0, and ``shift`` in ``[-31, 31]``.
    """
    if isinstance(real_scale, (bool, np.bool_)) or not isinstance(real_scale, numbers.Real):
        raise TypeError(f"real_scale must be a real number, not {real_scale!r}")
    real_scale = float(real_scale)
    if not math.isfinite(real_scale) or real_scale < 0:
        raise ValueError(f"real_scale must be finite and non-negative, not {real_scale!r}")
    q, shift = math.frexp(real_scale)
    scaled = q * 2.0**31                       # exact: a power-of-two scaling of a double
    qm = math.floor(scaled)
    if scaled - qm >= 0.5:                     # exact too; ties go away from zero (q >= 0)
        qm += 1
    assert qm <= 1 << 31
    if qm == 1 << 31:
        qm //= 2
        shift += 1
    if shift < SHIFT_MIN:
        return 0, 0
    if shift > SHIFT_MAX:
        raise ValueError(f"real_scale must be below 2^31, not {real_scale!r} (shift {shift})")
    return qm, shift
