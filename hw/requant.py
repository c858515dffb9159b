"""The output stage: per-output-channel INT32 → INT8 requantisation (or raw INT32 + bias).

Arithmetic
----------
Bit-exact with TFLite's reference kernels (default build, not ``TFLITE_SINGLE_ROUNDING``; see
``shared/reference/README.md``). For an accumulator ``acc`` of output channel ``c``::

    acc   = acc + bias[c]                                    (INT32, wrapping)
    left  = max(s, 0),  right = max(-s, 0)                   (s = shift[c])
    x     = acc · 2^left                                     (INT32, wrapping)
    y     = SaturatingRoundingDoublingHighMul(x, multiplier[c])
    r     = RoundingDivideByPOT(y, right)
    out   = min(max(r + zero_point, act_min), act_max)       (INT8)

In raw mode ``out = acc + bias[c]`` (INT32, wrapping) and the other parameters are ignored.

Equivalent forms keep the logic between registers short; ``tests/test_requant.py`` checks the
RTL bit-exact against the literal formulation in ``sim/golden_requant.py``, so none is taken on
trust:

- SaturatingRoundingDoublingHighMul: with ``p = x·qm`` and C's truncating division,
  ``(p + nudge) / 2^31`` equals ``(p + 2^30) >> 31`` (arithmetic shift, i.e. floor). For
  ``p >= 0`` both are ``floor((p + 2^30) / 2^31)``. For ``p < 0``, ``v = p + 1 - 2^30 < 0`` and
  truncation is ``ceil(v / 2^31) = floor((v + 2^31 - 1) / 2^31) = floor((p + 2^30) / 2^31)``.
  So one 64-bit adder and a fixed bit slice replace the sign-dependent nudge and the division. The
  only input whose result leaves INT32 is ``x = qm = INT32_MIN`` (``p = 2^62``), which is detected
  on the operands and saturates to ``INT32_MAX`` exactly as gemmlowp does.
- RoundingDivideByPOT: with ``h = 2^(right-1)`` (``right >= 1``), ``mask = 2h - 1``, the
  remainder ``rem = y & mask`` is ``h·y[right-1] + low`` with ``low = y & (h - 1)``. gemmlowp adds
  1 when ``rem > (mask >> 1) + (y < 0) = h - 1 + (y < 0)``: for ``y >= 0`` that is
  ``rem >= h``, i.e. the half bit ``y[right-1]``; for ``y < 0`` it is ``rem >= h + 1``, i.e. the
  half bit and a nonzero sticky ``low``. So ``(y >> right) + (y[right-1] & (y >= 0 | low != 0))``,
  with no adder or comparator before the final increment (``right = 0`` adds nothing).

``r + zero_point`` is clamped as TFLite does, ``min(max(r + zp, act_min), act_max)``, with exact
arithmetic (no INT32 wrap; that is TFLite's result wherever its INT32 addition does not overflow,
and where it would, C leaves it undefined). The bounds are compared with ``r`` itself
(``r < act_min - zp``, ``r > act_max - zp``), so the sum is only needed, in 8 bits, when in range.

The multiplier is not restricted to TFLite's ``[2^30, 2^31) ∪ {0}``: the datapath is exact for any
INT32 ``multiplier``, including ``INT32_MIN`` (the saturating case). ``shift`` is a 6-bit signed
field; the supported range is ``[-31, 31]`` (TFLite produces ``[-31, 30]``; ``31`` arises for real
scales in ``[2^30, 2^31)``). ``-32``, the one other value the field holds, is reserved: its result
is unspecified (the current datapath treats it as 0).

Pipeline
--------
Nine register stages, each at most one carry chain or one multiplier deep, so that the stage
closes at 100 MHz on an ECP5 (``synth/README.md``). All advance under one enable, which is a
register: ``en = ~skid_valid`` (``i.ready = en``). When ``o`` stalls, the pipeline advances once
more and the beat in stage 9 moves into a skid register, which ``o`` then presents; the pipeline
waits until it is taken. So one row beat per cycle when ``o`` is ready, and ``o.ready`` reaches only
the skid logic, not the clock enables of the datapath.

1. bias add (32-bit wrap); decode ``shift`` into ``left``/``right``; register the parameters that
   later stages need (``multiplier``, ``right``, the per-tile scalars);
2. the variable left shift (32-bit wrap), ``x``;
3. the four 16×16 partial products of ``x·multiplier`` (``x = xh·2^16 + xl``, ``xl`` unsigned),
   each a MULT18X18D followed by a register; the saturation flag;
4. ``m = lh + hl`` and ``u = ll + 2^30``;
5. ``w = hh·2^16 + m`` and ``u >> 16``;
6. the rounding high half: ``(p + 2^30) >> 16 = w + (u >> 16)``, whose bits 15..46 are
   ``(p + 2^30) >> 31``; saturation (raw mode passes the sum on);
7. RoundingDivideByPOT's shift and rounding bit (raw mode forces ``right = 0``, which passes the
   value unchanged);
8. its increment, and beside it the clamp's comparisons and the in-range byte, from the
   increment's operands;
9. the clamp's multiplexer (raw mode passes the sum on); this is the ``o`` register.

On the ECP5-85F flow (``python -m synth --part requant``) this block alone, with 4 columns,
reaches 114 MHz, limited by a partial-product MULT18X18D; the earlier five-stage version, with a
plain 32×32 ``*`` in one stage (four MULT18X18D and two fabric adders), reached about 80 MHz.

Latency: a beat accepted on ``i`` at a clock edge is presented on ``o`` nine edges later
(:attr:`Requant.latency`), when no stall intervenes.

Parameters are sampled with each beat
--------------------------------------
``params`` is a plain input port, not a stream. The module samples it together with every beat
accepted on ``i`` (in the cycle of the ``i`` handshake) and carries what later stages need down the
pipeline, so each beat is processed with the parameters present when it was accepted. The producer
must therefore hold ``params`` valid for the current tile in every cycle in which ``i.valid`` is
high; simplest is to hold it stable from the first beat of a tile until its ``last`` beat has been
accepted. It may change in the very next cycle, for the next tile: beats still in the pipeline are
not affected, so consecutive tiles with different parameters flow with no bubble. While
``i.valid`` is low, ``params`` is ignored.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Requant", "SHIFT_MIN", "SHIFT_MAX"]

INT32_MIN = -2**31
INT32_MAX = 2**31 - 1

#: Supported range of ``params.shift[c]`` (positive shifts left).
SHIFT_MIN, SHIFT_MAX = -31, 31


class Requant(wiring.Component):
    """Per-output-channel requantisation of rows of C INT32 accumulators to INT8, or raw INT32.

    Parameters
    ----------
    cols : int
        Output channels C per row beat (the PE array's column count).

    Members
    -------
    i : In(stream.Signature(i_layout))
        Accumulator rows, exactly the PE array's ``o`` stream: ``payload.data[c]`` is the signed
        INT32 accumulator of channel ``c``; ``payload.last`` is passed through unchanged.
    params : In(params_layout)
        Parameters of the tile on ``i``, sampled with every accepted beat (see the module
        docstring for the hold rule). Fields, from the least significant bit:

        - ``bias[c]``: signed INT32, added to the accumulator (wrapping);
        - ``multiplier[c]``: signed INT32 quantised multiplier (TFLite: ``[2^30, 2^31)`` or 0);
        - ``shift[c]``: signed 6-bit shift, positive left, supported range ``[-31, 31]``;
        - ``zero_point``: signed INT8 output zero point;
        - ``act_min``, ``act_max``: signed INT8 clamp bounds, ``act_min <= act_max`` (if not,
          ``act_max`` wins, as in TFLite's ``min(max(v, lo), hi)``);
        - ``raw``: 1 for raw output (``acc + bias``, INT32), 0 for INT8 requantisation.
    o : Out(stream.Signature(o_layout))
        One beat per input beat, in order, :attr:`latency` cycles later with no stall. ``o_layout``
        is ``i_layout``: in raw mode ``payload.data[c]`` is the INT32 ``acc + bias``; in requant
        mode it is the INT8 result sign-extended to 32 bits (the writer packs the low bytes).
        ``payload.last`` is the input beat's ``last``. ``valid`` never depends on ``ready``;
        a beat is held, unchanged, until it is taken.
    busy : Out(1)
        High while any beat is inside the pipeline (including one waiting on ``o``).

    Attributes
    ----------
    latency : int
        Cycles from an ``i`` handshake to the beat being presented on ``o`` (9).
    """

    latency = 9

    def __init__(self, *, cols):
        if isinstance(cols, bool) or not isinstance(cols, int):
            raise TypeError(f"cols must be an integer, not {cols!r}")
        if cols < 1:
            raise ValueError(f"cols must be at least 1, not {cols!r}")
        self.cols = cols
        self.i_layout = data.StructLayout({
            "data": data.ArrayLayout(signed(32), cols),
            "last": 1,
        })
        self.o_layout = self.i_layout
        self.params_layout = data.StructLayout({
            "bias": data.ArrayLayout(signed(32), cols),
            "multiplier": data.ArrayLayout(signed(32), cols),
            "shift": data.ArrayLayout(signed(6), cols),
            "zero_point": signed(8),
            "act_min": signed(8),
            "act_max": signed(8),
            "raw": 1,
        })
        super().__init__({
            "i": In(stream.Signature(self.i_layout)),
            "params": In(self.params_layout),
            "o": Out(stream.Signature(self.o_layout)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.cols
        prm = self.params

        # Control that travels with each beat: the valid bit (the only reset register of a
        # stage) and, without reset like the datapath, `last` and the per-tile scalars, which
        # mean something only where the valid bit is set.
        # The clamp bounds relative to the zero point are precomputed here (9-bit subtractions in
        # stage 1, off the critical path), so that stage 8 compares beside the increment.
        ctl_layout = data.StructLayout({
            "last": 1, "raw": 1,
            "zero_point": signed(8), "act_min": signed(8), "act_max": signed(8),
            "min_rel": signed(9), "min_rel1": signed(10), "max_rel": signed(9), "max_wins": 1,
        })
        valid = [None] + [Signal(name=f"s{k}_valid") for k in range(1, self.latency + 1)]
        ctl = [None] + [Signal(ctl_layout, name=f"s{k}_ctl", reset_less=True)
                       for k in range(1, self.latency + 1)]

        def lanes(name, shape):
            # Datapath registers need no reset: only the valid bits are reset.
            return Signal(data.ArrayLayout(shape, C), name=name, reset_less=True)

        # Stage registers (see "Pipeline" in the module docstring).
        s1_acc, s1_qm = lanes("s1_acc", signed(32)), lanes("s1_qm", signed(32))
        s1_left, s1_right = lanes("s1_left", unsigned(5)), lanes("s1_right", unsigned(5))
        s2_acc, s2_x = lanes("s2_acc", signed(32)), lanes("s2_x", signed(32))
        s2_qm, s2_right = lanes("s2_qm", signed(32)), lanes("s2_right", unsigned(5))
        s3_ll, s3_lh = lanes("s3_ll", unsigned(32)), lanes("s3_lh", signed(33))
        s3_hl, s3_hh = lanes("s3_hl", signed(33)), lanes("s3_hh", signed(32))
        s3_sat, s3_acc = lanes("s3_sat", unsigned(1)), lanes("s3_acc", signed(32))
        s3_right = lanes("s3_right", unsigned(5))
        s4_m, s4_u = lanes("s4_m", signed(34)), lanes("s4_u", unsigned(33))
        s4_hh, s4_sat = lanes("s4_hh", signed(32)), lanes("s4_sat", unsigned(1))
        s4_acc, s4_right = lanes("s4_acc", signed(32)), lanes("s4_right", unsigned(5))
        s5_w, s5_uh = lanes("s5_w", signed(49)), lanes("s5_uh", unsigned(17))
        s5_sat, s5_acc = lanes("s5_sat", unsigned(1)), lanes("s5_acc", signed(32))
        s5_right = lanes("s5_right", unsigned(5))
        s6_y, s6_right = lanes("s6_y", signed(32)), lanes("s6_right", unsigned(5))
        s7_q, s7_rnd = lanes("s7_q", signed(32)), lanes("s7_rnd", unsigned(1))
        s8_r = lanes("s8_r", signed(32))
        s8_below, s8_above = lanes("s8_below", unsigned(1)), lanes("s8_above", unsigned(1))
        s8_inrange = lanes("s8_inrange", unsigned(8))
        s9_out = lanes("s9_out", signed(32))

        N = self.latency
        # Skid register: when ``o`` stalls, the pipeline still advances once, and the beat in
        # stage N moves here. The enable is then a register (``~skid_valid``), so ``o.ready``
        # drives only the skid logic, not the clock enable of every pipeline register.
        skid_valid = Signal()
        skid_last = Signal(reset_less=True)
        skid_data = lanes("skid_data", signed(32))
        en = Signal()
        m.d.comb += [
            en.eq(~skid_valid),
            self.i.ready.eq(en),
            self.o.valid.eq(skid_valid | valid[N]),
            self.o.payload.data.eq(Mux(skid_valid, skid_data, s9_out)),
            self.o.payload.last.eq(Mux(skid_valid, skid_last, ctl[N].last)),
            self.busy.eq(Cat(skid_valid, *valid[1:]).any()),
        ]
        with m.If(skid_valid):
            with m.If(self.o.ready):
                m.d.sync += skid_valid.eq(0)
        with m.Elif(valid[N] & ~self.o.ready):
            m.d.sync += [skid_valid.eq(1), skid_last.eq(ctl[N].last), skid_data.eq(s9_out)]

        with m.If(en):
            m.d.sync += [
                valid[1].eq(self.i.valid),
                ctl[1].last.eq(self.i.payload.last),
                ctl[1].raw.eq(prm.raw),
                ctl[1].zero_point.eq(prm.zero_point),
                ctl[1].act_min.eq(prm.act_min),
                ctl[1].act_max.eq(prm.act_max),
                ctl[1].min_rel.eq(prm.act_min - prm.zero_point),
                ctl[1].min_rel1.eq(prm.act_min - prm.zero_point - 1),
                ctl[1].max_rel.eq(prm.act_max - prm.zero_point),
                ctl[1].max_wins.eq(prm.act_min > prm.act_max),
            ]
            m.d.sync += [valid[k].eq(valid[k - 1]) for k in range(2, N + 1)]
            m.d.sync += [ctl[k].eq(ctl[k - 1]) for k in range(2, N + 1)]

            for c in range(C):
                # Stage 1: bias add (wrapping to 32 bits); decode the shift.
                shift = prm.shift[c]
                m.d.sync += [
                    s1_acc[c].eq(self.i.payload.data[c] + prm.bias[c]),
                    s1_qm[c].eq(prm.multiplier[c]),
                    s1_left[c].eq(Mux(shift > 0, shift[:5], 0)),
                    s1_right[c].eq(Mux(shift < 0, (-shift)[:5], 0)),  # -32 (reserved) gives 0
                ]

                # Stage 2: the left shift, wrapping to 32 bits.
                m.d.sync += [
                    s2_x[c].eq((s1_acc[c].as_unsigned() << s1_left[c])[:32]),
                    s2_acc[c].eq(s1_acc[c]), s2_qm[c].eq(s1_qm[c]),
                    s2_right[c].eq(s1_right[c]),
                ]

                # Stage 3: the four 16×16 partial products of x·qm, x = xh·2^16 + xl (xl
                # unsigned), each one MULT18X18D with a register after it; the saturation flag.
                x, qm = s2_x[c], s2_qm[c]
                xl, xh, ql, qh = x[:16], x[16:].as_signed(), qm[:16], qm[16:].as_signed()
                m.d.sync += [
                    s3_ll[c].eq(xl * ql), s3_lh[c].eq(xl * qh),
                    s3_hl[c].eq(xh * ql), s3_hh[c].eq(xh * qh),
                    s3_sat[c].eq((x == INT32_MIN) & (qm == INT32_MIN)),
                    s3_acc[c].eq(s2_acc[c]), s3_right[c].eq(s2_right[c]),
                ]

                # Stages 4-5: p + 2^30 = hh·2^32 + (lh + hl)·2^16 + (ll + 2^30), one adder per
                # stage: m = lh + hl and u = ll + 2^30; then w = hh·2^16 + m and u's high part.
                m.d.sync += [
                    s4_m[c].eq(s3_lh[c] + s3_hl[c]),
                    s4_u[c].eq(s3_ll[c] + (1 << 30)),
                    s4_hh[c].eq(s3_hh[c]), s4_sat[c].eq(s3_sat[c]),
                    s4_acc[c].eq(s3_acc[c]), s4_right[c].eq(s3_right[c]),
                    s5_w[c].eq((s4_hh[c] << 16) + s4_m[c]),
                    s5_uh[c].eq(s4_u[c][16:]),
                    s5_sat[c].eq(s4_sat[c]), s5_acc[c].eq(s4_acc[c]),
                    s5_right[c].eq(s4_right[c]),
                ]

                # Stage 6: rounding doubling high half, (p + 2^30) >> 31 (see the docstring):
                # (p + 2^30) >> 16 = w + uh, so the high half is bits 15..46 of that sum.
                high = (s5_w[c] + s5_uh[c])[15:47].as_signed()
                m.d.sync += [
                    s6_y[c].eq(Mux(ctl[5].raw, s5_acc[c],
                                   Mux(s5_sat[c], INT32_MAX, high))),
                    s6_right[c].eq(Mux(ctl[5].raw, 0, s5_right[c])),
                ]

                # Stage 7: RoundingDivideByPOT as (y >> right) + round, where round is the half
                # bit y[right-1], except that a negative y also needs a nonzero sticky
                # y[right-2:0] (see the docstring). One 33-bit shifter of 2y gives both y >> right
                # (bits 1..32) and the half bit (bit 0, which is 0 for right = 0).
                y, r = s6_y[c], s6_right[c]
                w = Signal(signed(33), name=f"w{c}")
                below_half = Signal(32, name=f"below_half{c}")   # bits j < right - 1
                m.d.comb += [
                    w.eq(Cat(Const(0, 1), y).as_signed() >> r),
                    below_half.eq(Cat(r > j + 1 for j in range(30))),   # right <= 31
                ]
                sticky = (y.as_unsigned() & below_half).any()
                m.d.sync += [
                    s7_q[c].eq(w[1:].as_signed()),
                    s7_rnd[c].eq(w[0] & (~y[31] | sticky)),
                ]

                # Stage 8: the rounding increment, r = q + rnd, and the clamp's decisions on r,
                # taken from q and rnd in parallel with the adder (see stage 9): r < act_min - zp
                # is q < act_min - zp - rnd, r > act_max - zp is q > act_max - zp - rnd, and the
                # in-range value (r + zp) mod 2^8 needs only the low byte.
                q, rnd, k = s7_q[c], s7_rnd[c], ctl[7]
                m.d.sync += [
                    s8_r[c].eq(q + rnd),
                    s8_below[c].eq(Mux(rnd, q < k.min_rel1, q < k.min_rel)),
                    s8_above[c].eq(Mux(rnd, q >= k.max_rel, q > k.max_rel)),
                    s8_inrange[c].eq((q[:8] + rnd + k.zero_point)[:8]),
                ]

                # Stage 9: + zero_point and the clamp as TFLite, min(max(v, act_min), act_max):
                # below/above compare r itself with the bounds relative to the zero point, so
                # only an in-range v is formed, and it fits 8 bits. Raw mode passes r on.
                k = ctl[8]
                clamped = Mux(s8_above[c] | k.max_wins, k.act_max,
                              Mux(s8_below[c], k.act_min, s8_inrange[c].as_signed()))
                m.d.sync += s9_out[c].eq(Mux(k.raw, s8_r[c], clamped))

        return m
