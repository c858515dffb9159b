"""Output stage: the requantisation golden models themselves, and the RTL against them.

The pure-Python tests check ``sim.golden_requant`` against hand-computed values and cross-check its
two independent implementations; the ``rtl`` tests run ``sim.tb_requant`` on Verilator.
"""

import math

import numpy as np
import pytest

from hw.config import get_preset
from hw.requant import Requant
from sim.golden_requant import (
    INT32_MAX, INT32_MIN, quantize_multiplier, ref_bias_add, ref_requant, ref_requant_scalar,
    rounding_divide_by_pot, saturating_rounding_doubling_high_mul,
)
from sim.runner import build_rtl, generate_verilog, lint, run_cocotb

Q30 = 1 << 30


def rq(values, bias=0, qm=Q30, shift=0, zp=0, lo=-128, hi=127):
    """ref_requant on one row of values sharing one column's parameters, as a list."""
    acc = np.array([values], np.int32).T
    return ref_requant(acc, [bias], [qm], [shift], zp, lo, hi)[:, 0].tolist()


# -- golden model: hand-computed values -----------------------------------------------------------

def test_srdhm_ties_and_saturation():
    # qm = 2^30 halves x: +k.5 rounds up, -k.5 rounds toward zero (gemmlowp's nudge, truncation).
    assert [saturating_rounding_doubling_high_mul(x, Q30) for x in (1, 3, -1, -3, -5)] \
        == [1, 2, 0, -1, -2]
    assert saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX
    assert saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN + 1) == INT32_MAX
    assert saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MAX) == -INT32_MAX
    assert saturating_rounding_doubling_high_mul(INT32_MIN, Q30) == -Q30
    assert saturating_rounding_doubling_high_mul(12345, 0) == 0
    assert rq([1, 3, -1, -3, -5]) == [1, 2, 0, -1, -2]
    # Without saturation, INT32_MIN·INT32_MIN would wrap to INT32_MIN and clamp to -128.
    assert rq([INT32_MIN], qm=INT32_MIN) == [127]


def test_rounding_divide_by_pot_ties():
    # Ties round half away from zero, for positive and negative values.
    assert [rounding_divide_by_pot(y, 1) for y in (1, -1, 3, -3, 5, -5)] == [1, -1, 2, -2, 3, -3]
    assert [rounding_divide_by_pot(y, 2) for y in (5, 6, 7, -5, -6, -7)] == [1, 2, 2, -1, -2, -2]
    assert rounding_divide_by_pot(1 << 30, 31) == 1
    assert rounding_divide_by_pot(-(1 << 30), 31) == -1
    assert rounding_divide_by_pot((1 << 30) - 1, 31) == 0
    assert rounding_divide_by_pot(-(1 << 30) + 1, 31) == 0
    assert rounding_divide_by_pot(INT32_MIN, 31) == -1
    assert rounding_divide_by_pot(INT32_MAX, 31) == 1
    assert rounding_divide_by_pot(-7, 0) == -7
    # Through the whole model: x = 2y with qm = 2^30 gives y, then shift -1.
    assert rq([2, -2, 6, -6, 10, -10], shift=-1) == [1, -1, 2, -2, 3, -3]


def test_every_shift_sign():
    assert rq([100, -100, 10, -10]) == [50, -50, 5, -5]                 # shift 0
    assert rq([10, -10, 1, -1], shift=3) == [40, -40, 4, -4]            # left
    assert rq([100, -100, 20, 24, -24, 28], shift=-3) == [6, -6, 1, 2, -2, 2]   # right
    assert rq([10, 20, 30], qm=3 << 29, shift=-1) == [4, 8, 12]         # ·0.375, ties up


def test_left_shift_wraps():
    # INT32_MAX·2 wraps to -2, then ·0.5 = -1; (2^30+1)·4 wraps to 4, then ·0.5 = 2.
    assert rq([INT32_MAX], shift=1) == [-1]
    assert rq([Q30 + 1], shift=2) == [2]
    # x = INT32_MIN from a wrapping shift, then the saturating pair.
    assert rq([1, -1, 3], shift=31) == [-128, -128, -128]
    assert rq([1, 2], qm=INT32_MIN, shift=31) == [127, 0]


def test_bias_zero_point_and_clamps():
    assert rq([10], bias=-20) == [-5]
    assert rq([INT32_MAX], bias=1, qm=Q30) == [-128]                    # bias add wraps
    assert rq([5, -5, 0], zp=-3) == [0, -5, -3]
    relu = dict(zp=-10, lo=-10, hi=127)
    assert rq([40, 0, -40, 400], **relu) == [10, -10, -10, 127]
    relu6 = dict(zp=-10, lo=-10, hi=86)                                 # 6 / scale = 96
    assert rq([40, 300, -40], **relu6) == [10, 86, -10]
    assert rq([-1000, 0, 1000], lo=7, hi=7) == [7, 7, 7]


def test_multiplier_zero():
    assert rq([INT32_MIN, -1, 0, INT32_MAX], qm=0, shift=31, zp=9) == [9, 9, 9, 9]
    assert rq([123456], qm=0, shift=-31, zp=-100, lo=-50) == [-50]


def test_bias_add_wraps():
    acc = np.array([[INT32_MAX, INT32_MIN, 5]], np.int32)
    got = ref_bias_add(acc, [1, -1, -7])
    assert got.dtype == np.int32
    assert got.tolist() == [[INT32_MIN, INT32_MAX, -2]]


# -- golden model: the two implementations agree -------------------------------------------------

def _random_case(rng, n):
    corners = np.array([INT32_MIN, INT32_MIN + 1, -Q30, -1, 0, 1, Q30, INT32_MAX - 1, INT32_MAX])
    acc = np.where(rng.random(n) < 0.2, rng.choice(corners, n),
                   rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True))
    acc = np.where(rng.random(n) < 0.3, rng.integers(-3000, 3000, n), acc).astype(np.int32)
    bias = np.where(rng.random(n) < 0.5, 0, rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True))
    qm = rng.choice(np.concatenate([corners, [0, 3 << 29]]), n)
    qm = np.where(rng.random(n) < 0.7, rng.integers(Q30, 1 << 31, n), qm)
    shift = rng.integers(-31, 32, n)
    return acc, bias, qm, shift


def test_vector_matches_scalar():
    rng = np.random.default_rng(2024)
    for _ in range(40):
        n = 128
        acc, bias, qm, shift = _random_case(rng, n)
        zp = int(rng.integers(-128, 128))
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        if rng.random() < 0.3:
            lo, hi = -128, 127
        got = ref_requant(acc[None, :], bias, qm, shift, zp, lo, hi)[0]
        want = [ref_requant_scalar(int(a), int(b), int(q), int(s), zp, lo, hi)
                for a, b, q, s in zip(acc, bias, qm, shift)]
        assert got.tolist() == want


def test_vector_matches_scalar_at_ties():
    """Exact ties of both roundings, at every right shift, with zero point 0 and no clamp hit."""
    xs = [x for r in range(1, 32) for k in range(-3, 3) for d in (-1, 0, 1)
          for x in [2 * ((2 * k + 1) * (1 << (r - 1)) + d)] if INT32_MIN <= x <= INT32_MAX]
    for shift in range(-31, 1):
        acc = np.array([xs + list(range(-9, 10))], np.int32)
        for qm in (Q30, 3 << 29, INT32_MAX, INT32_MIN):
            got = ref_requant(acc, [0] * acc.shape[1], [qm] * acc.shape[1],
                              [shift] * acc.shape[1])[0].tolist()
            assert got == [ref_requant_scalar(int(a), 0, qm, shift) for a in acc[0]]


def test_srdhm_floor_form():
    """The hardware's floor form, (p + 2^30) >> 31, equals gemmlowp's nudge-and-truncate."""
    rng = np.random.default_rng(7)
    xs = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 20000, endpoint=True),
                         np.arange(-5, 6), [INT32_MIN, INT32_MAX]])
    qms = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 20000, endpoint=True),
                          np.full(11, Q30), [INT32_MIN + 1, INT32_MIN]])
    for x, q in zip(xs.tolist(), qms.tolist()):
        floor_form = INT32_MAX if x == q == INT32_MIN else (x * q + Q30) >> 31
        assert saturating_rounding_doubling_high_mul(x, q) == floor_form


# -- quantize_multiplier ----------------------------------------------------------------------

@pytest.mark.parametrize("scale, want", [
    (1.0, (Q30, 1)),
    (0.5, (Q30, 0)),
    (0.75, (3 << 29, 0)),
    (0.0, (0, 0)),
    (0.5 + 2.0**-32, (Q30 + 1, 0)),          # exact tie: away from zero (banker's would be even)
    (0.5 + 3 * 2.0**-32, (Q30 + 2, 0)),      # 2^30 + 1.5 → 2^30 + 2
    (1 - 2.0**-40, (Q30, 1)),                # rounds to 2^31: the fix-up halves it
    (2.0**-32, (Q30, -31)),
    (2.0**-33, (0, 0)),                      # shift -32: flushed to zero, as TFLite
    (2.0**30, (Q30, 31)),
    (np.float32(0.25), (Q30, -1)),
    (3, (3 << 29, 2)),
])
def test_quantize_multiplier(scale, want):
    assert quantize_multiplier(scale) == want


def test_quantize_multiplier_approximates_the_scale():
    rng = np.random.default_rng(5)
    for scale in 2.0 ** rng.uniform(-20, 4, 200):
        qm, shift = quantize_multiplier(scale)
        assert Q30 <= qm < 1 << 31
        assert math.isclose(qm * 2.0 ** (shift - 31), scale, rel_tol=2**-30)
        acc = rng.integers(-(1 << 20), 1 << 20, 64).astype(np.int32)
        exact = acc * scale
        acc = acc[np.abs(exact) < 120]
        got = rq(acc.tolist(), qm=qm, shift=shift)
        # One rounding, or two when shifting right (at most half an LSB more before the shift).
        bound = 0.5 + (2.0 ** (shift - 1) if shift < 0 else 0) + 1e-6
        assert np.abs(np.array(got) - acc * scale).max(initial=0) <= bound


@pytest.mark.parametrize("scale, exc, match", [
    (-0.5, ValueError, "real_scale must be finite and non-negative, not -0.5"),
    (float("nan"), ValueError, "real_scale must be finite"),
    (float("inf"), ValueError, "real_scale must be finite"),
    (2.0**31, ValueError, "real_scale must be below 2\\^31"),
    ("0.5", TypeError, "real_scale must be a real number, not '0.5'"),
    (True, TypeError, "real_scale must be a real number, not True"),
])
def test_quantize_multiplier_rejects(scale, exc, match):
    with pytest.raises(exc, match=match):
        quantize_multiplier(scale)


# -- golden model: bad arguments --------------------------------------------------------------

ACC = np.zeros((2, 3), np.int32)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"acc": ACC.astype(np.int64)}, TypeError, "acc must have dtype int32, not int64"),
    ({"acc": [[1, 2, 3]]}, TypeError, "acc must be a numpy array, not list"),
    ({"acc": np.zeros(3, np.int32)}, ValueError, "acc must be 2-D"),
    ({"bias": [0, 0]}, ValueError, "bias must have shape \\(3,\\) to match acc"),
    ({"bias": [0.5, 0, 0]}, TypeError, "bias must hold integers, not float64"),
    ({"multiplier": [0, 1 << 31, 0]}, ValueError,
     "multiplier must be in \\[-2147483648, 2147483647\\], not 2147483648"),
    ({"shift": [0, 32, 0]}, ValueError, "shift must be in \\[-31, 31\\], not 32"),
    ({"shift": [-32, 0, 0]}, ValueError, "shift must be in \\[-31, 31\\], not -32"),
    ({"zero_point": 128}, ValueError, "zero_point must be in \\[-128, 127\\], not 128"),
    ({"zero_point": 1.0}, TypeError, "zero_point must be an integer, not 1.0"),
    ({"act_min": True}, TypeError, "act_min must be an integer, not True"),
    ({"act_max": -129}, ValueError, "act_max must be in \\[-128, 127\\], not -129"),
    ({"act_min": 5, "act_max": 4}, ValueError, "act_min must not exceed act_max, not 5 > 4"),
])
def test_ref_requant_rejects(kwargs, exc, match):
    args = {"acc": ACC, "bias": [0] * 3, "multiplier": [Q30] * 3, "shift": [0] * 3, **kwargs}
    with pytest.raises(exc, match=match):
        ref_requant(**args)


def test_scalar_and_bias_add_reject():
    with pytest.raises(ValueError, match="acc must be in"):
        ref_requant_scalar(1 << 31, 0, Q30, 0)
    with pytest.raises(ValueError, match="shift must be in \\[-31, 31\\], not -32"):
        ref_requant_scalar(0, 0, Q30, -32)
    with pytest.raises(ValueError, match="exponent must be in \\[0, 31\\], not 32"):
        rounding_divide_by_pot(0, 32)
    with pytest.raises(ValueError, match="bias must have shape"):
        ref_bias_add(ACC, [0])
    with pytest.raises(TypeError, match="acc must have dtype int32"):
        ref_bias_add(ACC.astype(np.int8), [0, 0, 0])


# -- hardware ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cols, exc, match", [
    (0, ValueError, "cols must be at least 1, not 0"),
    ("2", TypeError, "cols must be an integer, not '2'"),
    (True, TypeError, "cols must be an integer, not True"),
])
def test_requant_parameters(cols, exc, match):
    with pytest.raises(exc, match=match):
        Requant(cols=cols)


def test_requant_layouts():
    dut = Requant(cols=3)
    assert dut.i_layout.size == 3 * 32 + 1
    assert dut.o_layout == dut.i_layout
    assert dut.params_layout.size == 3 * (32 + 32 + 6) + 3 * 8 + 1
    assert list(dut.params_layout.members) == [
        "bias", "multiplier", "shift", "zero_point", "act_min", "act_max", "raw"]


def _name(cfg):
    return f"{cfg.top_name}_requant"


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_requant_lint(preset, tmp_path):
    cfg = get_preset(preset)
    path = tmp_path / f"{_name(cfg)}.v"
    path.write_text(generate_verilog(Requant(cols=cfg.pe_cols), _name(cfg)))
    lint(path, _name(cfg))


@pytest.mark.rtl
@pytest.mark.parametrize("testcase", ["random_tiles", "corners", "throughput_latency"])
@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_requant_rtl(preset, testcase):
    cfg = get_preset(preset)
    build_dir = build_rtl(_name(cfg), lambda: Requant(cols=cfg.pe_cols))
    run_cocotb(build_dir, _name(cfg), "sim.tb_requant", config=cfg, testcase=testcase)
