"""cocotb testbench for the output stage (``hw/requant.py``), against ``sim.golden_requant``.

Run through ``tests/test_requant.py``; the configuration arrives as JSON in ``EMBER_CONFIG`` and
the DUT has ``cols = pe_cols``. Random tests log their seed; set ``EMBER_SEED`` to replay one.

Stimulus is a list of tiles, each a dict holding an ``acc`` matrix (M×C int32) and the parameters
of ``params`` for it. Every beat carries its tile's parameters: the source drives ``params``
together with ``i__payload``, so parameters change exactly when a new tile's first beat is
presented, and between beats (``i__valid`` low) both are driven with random garbage, which the DUT
must ignore. Outputs are compared bit-exact on whole tiles with ``ref_requant`` (INT8, checked
sign-extended in the 32-bit lanes) or ``ref_bias_add`` (raw mode).
"""

import itertools
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from hw.config import EmberConfig
from hw.requant import Requant
from sim.golden_requant import (
    INT32_MAX, INT32_MIN, SHIFT_MAX, SHIFT_MIN, quantize_multiplier, ref_bias_add, ref_requant,
)
from sim.streams import StreamSink, StreamSource, random_seed

LATENCY = Requant.latency  # checked by the ``throughput_latency`` test




def _pack(values, width):
    """Pack integers (two's complement) into one word, element 0 in the low bits."""
    word = 0
    for k, v in enumerate(values):
        word |= (int(v) & ((1 << width) - 1)) << (k * width)
    return word


class TileSource(StreamSource):
    """A ``StreamSource`` on ``i`` that also drives ``params`` with each beat's tile parameters.

    Queue entries are ``(payload, params)`` integer pairs. While no beat is presented, payload and
    params get random garbage (when ``garbage_rng`` is set).
    """

    def __init__(self, dut, clk, *, garbage_rng=None):
        super().__init__(dut, "i", clk)
        self.params = dut.params
        self.rng = garbage_rng
        self.payload_bits = len(self.payload)
        self.params_bits = len(self.params)

    def _garbage(self, bits):
        return int.from_bytes(self.rng.bytes((bits + 7) // 8), "little") & ((1 << bits) - 1)

    def _present(self, item):
        self.payload.value, self.params.value = item

    def _idle(self):
        if self.rng is not None:
            self.payload.value = self._garbage(self.payload_bits)
            self.params.value = self._garbage(self.params_bits)


class TB:
    """Owns the clock, reset, stream models and a protocol monitor of one Requant DUT."""

    def __init__(self, dut):
        self.dut = dut
        self.log = dut._log
        self.cfg = EmberConfig.from_json(os.environ["EMBER_CONFIG"])
        self.C = self.cfg.pe_cols
        self.seed = random_seed()
        self.rng = np.random.default_rng(self.seed)
        self.log.info("config %s, cols %d, seed %d (replay with EMBER_SEED=%d)",
                      self.cfg.name, self.C, self.seed, self.seed)
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.i = TileSource(dut, dut.clk, garbage_rng=np.random.default_rng(self.seed + 1))
        self.o = StreamSink(dut, "o", dut.clk)
        self.cycle = 0
        self.in_cycles, self.out_cycles = [], []
        self.violations = []

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        for model in (self.i, self.o):
            cocotb.start_soon(model.run())
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        """Count cycles, record handshakes, and check that ``o`` holds a stalled beat unchanged."""
        edge = RisingEdge(self.dut.clk)
        dut = self.dut
        stalled = None
        while True:
            await edge
            self.cycle += 1
            if dut.i__valid.value and dut.i__ready.value:
                self.in_cycles.append(self.cycle)
            valid, ready = bool(dut.o__valid.value), bool(dut.o__ready.value)
            payload = dut.o__payload.value.to_unsigned() if valid else None
            if stalled is not None and (not valid or payload != stalled):
                self.violations.append(f"cycle {self.cycle}: stalled o beat dropped or changed")
            if valid and ready:
                self.out_cycles.append(self.cycle)
            stalled = payload if valid and not ready else None

    def _pattern(self, p_pause):
        """A reproducible random pause pattern of prime length, repeated."""
        return itertools.cycle(bool(x) for x in self.rng.random(97) < p_pause)

    def set_backpressure(self, enable):
        """Random gaps on ``i`` and random backpressure on ``o``, or none."""
        self.i.set_pause_generator(self._pattern(0.3) if enable else None)
        self.o.set_pause_generator(self._pattern(0.4) if enable else None)

    # -- tiles ------------------------------------------------------------------------------

    def tile(self, acc, bias=0, multiplier=1 << 30, shift=0, zero_point=0, act_min=-128,
             act_max=127, raw=False):
        """A tile dict from an M×C ``acc``; per-column parameters may be scalars (broadcast)."""
        C = self.C
        acc = np.asarray(acc, np.int64)
        assert acc.ndim == 2 and acc.shape[1] == C
        assert (acc >= INT32_MIN).all() and (acc <= INT32_MAX).all()

        def vec(v):
            return np.broadcast_to(np.asarray(v, np.int64), (C,)).copy()

        return {"acc": acc.astype(np.int32), "bias": vec(bias), "multiplier": vec(multiplier),
                "shift": vec(shift), "zero_point": int(zero_point), "act_min": int(act_min),
                "act_max": int(act_max), "raw": bool(raw)}

    def expected(self, t):
        if t["raw"]:
            return ref_bias_add(t["acc"], t["bias"])
        if t["act_min"] > t["act_max"]:
            # Outside the golden model's contract; hw/requant.py documents that act_max wins, as
            # in TFLite's min(max(v, act_min), act_max).
            return np.full(t["acc"].shape, t["act_max"], np.int32)
        return ref_requant(t["acc"], t["bias"], t["multiplier"], t["shift"], t["zero_point"],
                           t["act_min"], t["act_max"]).astype(np.int32)

    # Beat encoding, following the layouts documented in hw/requant.py.
    def params_word(self, t):
        C = self.C
        fields = [(_pack(t["bias"], 32), 32 * C), (_pack(t["multiplier"], 32), 32 * C),
                  (_pack(t["shift"], 6), 6 * C), (t["zero_point"] & 0xff, 8),
                  (t["act_min"] & 0xff, 8), (t["act_max"] & 0xff, 8), (int(t["raw"]), 1)]
        word, pos = 0, 0
        for value, width in fields:
            word |= value << pos
            pos += width
        return word

    def send_tile(self, t):
        params = self.params_word(t)
        last_bit = 1 << (32 * self.C)
        rows = t["acc"].shape[0]
        for r in range(rows):
            payload = _pack(t["acc"][r], 32) | (last_bit if r == rows - 1 else 0)
            self.i.send_nowait((payload, params))

    def received_tiles(self, heights):
        """Decode the output beats into int32 tiles of the given heights, checking ``last``."""
        C = self.C
        mask = (1 << (32 * C)) - 1
        tiles, beat = [], 0
        for k, h in enumerate(heights):
            rows = []
            for r in range(h):
                word = self.o.beats[beat]
                last = (word >> (32 * C)) & 1
                assert last == (r == h - 1), f"tile {k} row {r}: last={last}"
                rows.append(np.frombuffer((word & mask).to_bytes(4 * C, "little"), "<i4"))
                beat += 1
            tiles.append(np.stack(rows))
        return tiles

    async def run_tiles(self, tiles):
        """Send every tile, wait (bounded) for all results, compare bit-exact with the golden."""
        heights = [t["acc"].shape[0] for t in tiles]
        expected_beats = sum(heights)
        for t in tiles:
            self.send_tile(t)
        limit = 10 * expected_beats + 100
        for _ in range(limit):
            await RisingEdge(self.dut.clk)
            if len(self.o.beats) >= expected_beats:
                break
        assert len(self.o.beats) == expected_beats, \
            f"got {len(self.o.beats)} of {expected_beats} beats within {limit} cycles"
        await ClockCycles(self.dut.clk, 2 * LATENCY)
        assert len(self.o.beats) == expected_beats, "extra output beats after the last tile"
        assert not self.dut.busy.value, "busy still high after every beat left"
        assert not self.violations, self.violations[:5]
        for k, (t, got) in enumerate(zip(tiles, self.received_tiles(heights))):
            want = self.expected(t)
            if not np.array_equal(got, want):
                r, c = np.argwhere(got != want)[0]
                raise AssertionError(
                    f"tile {k} ({'raw' if t['raw'] else 'requant'}) mismatch at ({r}, {c}): "
                    f"acc={t['acc'][r, c]} bias={t['bias'][c]} qm={t['multiplier'][c]} "
                    f"shift={t['shift'][c]} zp={t['zero_point']} "
                    f"clamp=[{t['act_min']}, {t['act_max']}]: got {got[r, c]}, "
                    f"want {want[r, c]} (seed {self.seed})")
        self.log.info("%d tiles, %d beats, %d elements bit-exact in %d cycles",
                      len(tiles), expected_beats, expected_beats * self.C, self.cycle)

    # -- random stimulus --------------------------------------------------------------------

    def random_int32(self, shape):
        return self.rng.integers(INT32_MIN, INT32_MAX, shape, endpoint=True)

    def random_params(self):
        """Per-column (bias, multiplier, shift, real scale) from a mix of distributions."""
        C, rng = self.C, self.rng
        bias, qm, shift = (np.zeros(C, np.int64) for _ in range(3))
        scale = np.zeros(C)
        for c in range(C):
            kind = rng.random()
            if kind < 0.7:      # a realistic scale through the host procedure
                scale[c] = 2.0 ** rng.uniform(-26, 3)
                qm[c], shift[c] = quantize_multiplier(scale[c])
            elif kind < 0.85:   # TFLite-range multiplier with any supported shift
                qm[c] = rng.integers(1 << 30, 1 << 31)
                shift[c] = rng.integers(SHIFT_MIN, SHIFT_MAX, endpoint=True)
            elif kind < 0.95:   # any INT32 multiplier, including negative ones
                qm[c] = self.random_int32(())
                shift[c] = rng.integers(SHIFT_MIN, SHIFT_MAX, endpoint=True)
            else:               # multiplier 0
                shift[c] = rng.integers(SHIFT_MIN, SHIFT_MAX, endpoint=True)
            if not scale[c]:
                scale[c] = abs(int(qm[c])) * 2.0 ** (int(shift[c]) - 31)
            bias[c] = (rng.integers(-(1 << 16), 1 << 16) if rng.random() < 0.8
                       else self.random_int32(()))
        return bias, qm, shift, scale

    def random_tile(self, rows):
        C, rng = self.C, self.rng
        bias, qm, shift, scale = self.random_params()
        zp = int(rng.integers(-128, 128))
        kind = rng.random()
        if kind < 0.5:
            act_min, act_max = -128, 127
        elif kind < 0.65:       # ReLU
            act_min, act_max = zp, 127
        elif kind < 0.8:        # ReLU6 with a random output scale
            act_min, act_max = zp, int(min(127, zp + rng.integers(0, 100)))
        else:
            act_min, act_max = sorted(int(v) for v in rng.integers(-128, 128, 2))
        # Accumulators: mostly near the range that maps into INT8, plus log-uniform and full-range.
        target = rng.uniform(-300, 300, (rows, C))
        near = np.round((target - zp) / np.maximum(scale, 1e-30)) - bias
        logu = np.sign(rng.random((rows, C)) - 0.5) * 2.0 ** rng.uniform(0, 31, (rows, C))
        pick = rng.random((rows, C))
        acc = np.where(pick < 0.6, near, np.where(pick < 0.85, logu, self.random_int32((rows, C))))
        acc = np.clip(np.nan_to_num(acc), INT32_MIN, INT32_MAX).astype(np.int64)
        return self.tile(acc, bias, qm, shift, zp, act_min, act_max, raw=rng.random() < 0.15)

    def random_tiles(self, elements):
        """Random tiles of 1 to 2R rows, together at least ``elements`` accumulators."""
        tiles, total = [], 0
        while total < elements:
            t = self.random_tile(int(self.rng.integers(1, 2 * self.cfg.pe_rows + 1)))
            tiles.append(t)
            total += t["acc"].size
        return tiles

    # -- corner cases -----------------------------------------------------------------------

    def by_columns(self, cases, **scalars):
        """Tiles from per-column cases ``(acc_values, bias, multiplier, shift)``, C per tile."""
        tiles = []
        for k in range(0, len(cases), self.C):
            group = list(cases[k:k + self.C])
            group += [([0], 0, 0, 0)] * (self.C - len(group))
            rows = max(len(g[0]) for g in group)
            acc = np.zeros((rows, self.C), np.int64)
            for c, (values, *_) in enumerate(group):
                acc[:len(values), c] = values
            tiles.append(self.tile(acc, [g[1] for g in group], [g[2] for g in group],
                                   [g[3] for g in group], **scalars))
        return tiles

    def corner_tiles(self):
        rng = self.rng
        wrap = lambda v: (int(v) + 2**31) % 2**32 - 2**31  # noqa: E731
        tiles = []
        specials = [0, 1, -1, 2, -2, INT32_MIN, INT32_MAX, INT32_MIN + 1, INT32_MAX - 1,
                    1 << 30, -(1 << 30), (1 << 30) + 1, 0x55555555, -0x55555555]
        # Every supported shift, with special and random accumulators and a TFLite multiplier.
        cases = []
        for s in range(SHIFT_MIN, SHIFT_MAX + 1):
            values = specials + [1 << k for k in range(0, 31, 3)] \
                + list(self.random_int32(8)) + list(rng.integers(-1000, 1000, 8))
            cases.append((values, 0, int(rng.integers(1 << 30, 1 << 31)), s))
        tiles += self.by_columns(cases, zero_point=-3)
        # Rounding ties in SaturatingRoundingDoublingHighMul: qm = 2^30 halves x, so odd x is a
        # tie (±k.5); qm = 3·2^29 gives ties at x ≡ 2 (mod 4). Positive and negative, zp = 0.
        odd = list(range(-301, 302, 2)) + [INT32_MAX, INT32_MIN + 1, INT32_MAX - 2]
        ties = list(range(-402, 403, 4))
        tiles += self.by_columns([(odd, 0, 1 << 30, 0), (ties, 0, 3 << 29, 0),
                                  (odd, 7, 1 << 30, 0), (ties, -9, 3 << 29, 0)])
        # Rounding ties in RoundingDivideByPOT for every right shift: y = (2k+1)·2^(r-1) (+-1),
        # reached through qm = 2^30 with x = 2y (and qm = 2^31-1, x = 2^30 for y = +2^30).
        cases = []
        for r in range(1, 32):
            ys = [(2 * k + 1) * (1 << (r - 1)) + d for k in range(-4, 4) for d in (-1, 0, 1)]
            xs = [2 * y for y in ys if INT32_MIN <= 2 * y <= INT32_MAX]
            cases.append((xs, 0, 1 << 30, -r))
            cases.append((xs, int(rng.integers(-1000, 1000)), 1 << 30, -r))
        cases.append(([1 << 30, (1 << 30) - 1, (1 << 30) + 1], 0, INT32_MAX, -31))
        tiles += self.by_columns(cases, zero_point=1)
        # x == INT32_MIN: directly, and from left shifts that wrap (odd·2^(31-left)); with
        # qm = INT32_MIN (the saturating pair), INT32_MIN + 1, 2^30, INT32_MAX and -1.
        cases = []
        for left in range(0, 32):
            xs_min = [wrap(o << (31 - left)) for o in (1, -1, 3, -3, 0x7fff)]
            wraps = [wrap(v) for v in self.random_int32(6)] + [wrap((1 << (32 - left)) + 5)]
            for qm in (INT32_MIN, INT32_MIN + 1, 1 << 30, INT32_MAX, -1):
                cases.append((xs_min + wraps + [INT32_MAX, 1], 0, qm, left))
        for r in range(1, 32):  # saturated y = INT32_MAX, then every right shift
            cases.append(([INT32_MIN, INT32_MIN + 1, 0], 0, INT32_MIN, -r))
        cases.append(([INT32_MAX, (1 << 30) + 1], 0, 1 << 30, 1))   # hand-checked wraps
        cases.append(([(1 << 30) + 1], 0, 1 << 30, 2))
        cases.append(([0, -1 << 31], INT32_MIN, INT32_MIN, 0))        # bias add makes INT32_MIN
        for zp in (0, 127, -128):   # extreme zero points on extreme results: no INT32 wrap
            tiles += self.by_columns(cases, zero_point=zp)
        # Multiplier 0: every output is clamp(zero_point).
        tiles += self.by_columns([(specials, 0, 0, s) for s in (-31, -5, 0, 5, 31)],
                                 zero_point=100, act_min=-20, act_max=90)
        # Clamps: ReLU, ReLU6 (zp + 6/scale with scale 1/16: 96), a single value, extreme zp.
        ramp = list(range(-4000, 4001, 37))
        for zp, lo, hi in ((0, 0, 127), (-10, -10, 127), (-40, -40, 56), (5, 5, 5),
                           (127, -128, 127), (-128, -128, 127), (-128, -100, -90)):
            tiles += self.by_columns([(ramp, 0, 1 << 30, -3), (ramp, 50, 3 << 29, -2)],
                                     zero_point=zp, act_min=lo, act_max=hi)
        # act_min > act_max (a host error): act_max wins, as documented.
        tiles += self.by_columns([(specials, 0, 1 << 30, 0), (specials, 5, 3 << 29, -4)],
                                 zero_point=-7, act_min=10, act_max=-10)
        # Raw mode: wrapping bias adds; requant parameters present but ignored.
        extremes = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX]
        raw_cases = [(extremes, b, int(rng.integers(1 << 30, 1 << 31)), -7) for b in extremes]
        tiles += self.by_columns(raw_cases, zero_point=3, act_min=-1, act_max=1, raw=True)
        tiles.append(self.tile(self.random_int32((5, self.C)), self.random_int32(self.C),
                               self.random_int32(self.C), -9, raw=True))
        # Accumulator and bias extremes, every combination, in requant mode.
        tiles += self.by_columns([(extremes, b, 1 << 30, s)
                                  for b in extremes for s in (0, 1, -1)], zero_point=0)
        return tiles


@cocotb.test()
@cocotb.parametrize(backpressure=[False, True])
async def random_tiles(dut, backpressure):
    """Thousands of random elements with random per-channel parameters, tile heights 1 to 2R."""
    tb = TB(dut)
    await tb.reset()
    tb.set_backpressure(backpressure)
    await tb.run_tiles(tb.random_tiles(max(6000, 300 * tb.C)))


@cocotb.test()
@cocotb.parametrize(backpressure=[False, True])
async def corners(dut, backpressure):
    """Every shift, rounding ties, INT32_MIN and wrapping left shifts, qm = 0, clamps, raw mode."""
    tb = TB(dut)
    await tb.reset()
    tb.set_backpressure(backpressure)
    await tb.run_tiles(tb.corner_tiles())


@cocotb.test()
async def throughput_latency(dut):
    """With no gaps or backpressure: one beat per cycle in and out, latency exactly
    ``Requant.latency`` cycles."""
    tb = TB(dut)
    await tb.reset()
    tiles = tb.random_tiles(200 * tb.C)
    await tb.run_tiles(tiles)
    beats = sum(t["acc"].shape[0] for t in tiles)
    assert len(tb.in_cycles) == len(tb.out_cycles) == beats
    span_in = tb.in_cycles[-1] - tb.in_cycles[0] + 1
    span_out = tb.out_cycles[-1] - tb.out_cycles[0] + 1
    assert span_in == beats, f"{beats} input beats took {span_in} cycles"
    assert span_out == beats, f"{beats} output beats took {span_out} cycles"
    latency = tb.out_cycles[0] - tb.in_cycles[0]
    assert latency == LATENCY, f"latency {latency}, documented {LATENCY}"
    tb.log.info("%d beats in %d cycles, latency %d", beats, span_out, latency)
