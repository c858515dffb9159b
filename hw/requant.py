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
Five register stages, all advancing under one global enable ``en = ~o.valid | o.ready``
(``i.ready = en``), so one row beat per cycle when ``o`` is ready and a full stall otherwise:

1. bias add (32-bit wrap) and the variable left shift; register ``x``, the raw sum, and the
   parameters that later stages need (``multiplier``, ``right``, the per-tile scalars);
2. the 32×32 → 64-bit signed multiply, a plain ``*`` between two registers into a register, so
   that synthesis maps it to DSP blocks with input and output registers; the saturation flag;
3. the rounding high half ``(p + 2^30) >> 31`` with saturation (raw mode passes the sum on);
4. RoundingDivideByPOT (raw mode forces ``right = 0``, which passes the value unchanged);
5. ``+ zero_point`` and the clamp (raw mode passes the sum on); this is the ``o`` register.

On an ECP5-85 (yosys ``synth_ecp5`` + nextpnr, ``cols=2``) this reaches about 80 MHz, limited by
the 32×32 multiply (four MULT18X18D and fabric adders), against about 75 MHz for the ``tiny`` PE
array on the same flow.

Latency: a beat accepted on ``i`` at a clock edge is presented on ``o`` five edges later
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
        Cycles from an ``i`` handshake to the beat being presented on ``o`` (5).
    """

    latency = 5

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

        # Control that travels with each beat: valid/last and the per-tile scalars.
        # The clamp bounds relative to the zero point are precomputed here (9-bit subtractions in
        # stage 1, off the critical path), so that stage 5 compares before it adds.
        ctl_layout = data.StructLayout({
            "valid": 1, "last": 1, "raw": 1,
            "zero_point": signed(8), "act_min": signed(8), "act_max": signed(8),
            "min_rel": signed(9), "max_rel": signed(9), "max_wins": 1,
        })
        ctl = [None] + [Signal(ctl_layout, name=f"s{k}_ctl") for k in range(1, 6)]

        def lanes(name, shape):
            # Datapath registers need no reset: only the valid bits are reset.
            return Signal(data.ArrayLayout(shape, C), name=name, reset_less=True)

        s1_acc, s1_x = lanes("s1_acc", signed(32)), lanes("s1_x", signed(32))
        s1_qm, s1_right = lanes("s1_qm", signed(32)), lanes("s1_right", unsigned(5))
        s2_acc, s2_p = lanes("s2_acc", signed(32)), lanes("s2_p", signed(64))
        s2_sat, s2_right = lanes("s2_sat", unsigned(1)), lanes("s2_right", unsigned(5))
        s3_y, s3_right = lanes("s3_y", signed(32)), lanes("s3_right", unsigned(5))
        s4_r = lanes("s4_r", signed(32))
        s5_out = lanes("s5_out", signed(32))

        en = Signal()
        m.d.comb += [
            en.eq(~ctl[5].valid | self.o.ready),
            self.i.ready.eq(en),
            self.o.valid.eq(ctl[5].valid),
            self.o.payload.data.eq(s5_out),
            self.o.payload.last.eq(ctl[5].last),
            self.busy.eq(ctl[1].valid | ctl[2].valid | ctl[3].valid | ctl[4].valid
                         | ctl[5].valid),
        ]

        with m.If(en):
            m.d.sync += [
                ctl[1].valid.eq(self.i.valid),
                ctl[1].last.eq(self.i.payload.last),
                ctl[1].raw.eq(prm.raw),
                ctl[1].zero_point.eq(prm.zero_point),
                ctl[1].act_min.eq(prm.act_min),
                ctl[1].act_max.eq(prm.act_max),
                ctl[1].min_rel.eq(prm.act_min - prm.zero_point),
                ctl[1].max_rel.eq(prm.act_max - prm.zero_point),
                ctl[1].max_wins.eq(prm.act_min > prm.act_max),
            ]
            m.d.sync += [ctl[k].eq(ctl[k - 1]) for k in range(2, 6)]

            for c in range(C):
                # Stage 1: bias add and left shift, both wrapping to 32 bits.
                acc = Signal(signed(32), name=f"acc{c}")
                shift = prm.shift[c]
                left = Mux(shift > 0, shift[:5], 0)
                right = Mux(shift < 0, (-shift)[:5], 0)  # -32 (reserved) gives 0
                m.d.comb += acc.eq(self.i.payload.data[c] + prm.bias[c])
                m.d.sync += [
                    s1_acc[c].eq(acc),
                    s1_x[c].eq((acc.as_unsigned() << left)[:32]),
                    s1_qm[c].eq(prm.multiplier[c]),
                    s1_right[c].eq(right),
                ]

                # Stage 2: the 64-bit product, and the one operand pair that saturates.
                m.d.sync += [
                    s2_p[c].eq(s1_x[c] * s1_qm[c]),
                    s2_sat[c].eq((s1_x[c] == INT32_MIN) & (s1_qm[c] == INT32_MIN)),
                    s2_acc[c].eq(s1_acc[c]),
                    s2_right[c].eq(s1_right[c]),
                ]

                # Stage 3: rounding doubling high half, (p + 2^30) >> 31 (see the docstring).
                high = (s2_p[c] + (1 << 30))[31:63].as_signed()
                m.d.sync += [
                    s3_y[c].eq(Mux(ctl[2].raw, s2_acc[c],
                                   Mux(s2_sat[c], INT32_MAX, high))),
                    s3_right[c].eq(Mux(ctl[2].raw, 0, s2_right[c])),
                ]

                # Stage 4: RoundingDivideByPOT as (y >> right) + round, where round is the half
                # bit y[right-1], except that a negative y also needs a nonzero sticky
                # y[right-2:0] (see the docstring). One 33-bit shifter of 2y gives both y >> right
                # (bits 1..32) and the half bit (bit 0, which is 0 for right = 0).
                y, r = s3_y[c], s3_right[c]
                w = Signal(signed(33), name=f"w{c}")
                below_half = Signal(32, name=f"below_half{c}")   # bits j < right - 1
                m.d.comb += [
                    w.eq(Cat(Const(0, 1), y).as_signed() >> r),
                    below_half.eq(Cat(r > j + 1 for j in range(30))),   # right <= 31
                ]
                sticky = (y.as_unsigned() & below_half).any()
                rnd = w[0] & (~y[31] | sticky)
                m.d.sync += s4_r[c].eq(w[1:].as_signed() + rnd)

                # Stage 5: + zero_point, then clamp as TFLite, min(max(v, act_min), act_max). The
                # bounds are compared with r itself (r < act_min - zp, r > act_max - zp), so only
                # an in-range v is formed, and it fits 8 bits: (r + zp) mod 2^8.
                r = s4_r[c]
                below = r < ctl[4].min_rel
                above = r > ctl[4].max_rel
                inrange = (r[:8] + ctl[4].zero_point)[:8].as_signed()
                clamped = Mux(above | ctl[4].max_wins, ctl[4].act_max,
                              Mux(below, ctl[4].act_min, inrange))
                m.d.sync += s5_out[c].eq(Mux(ctl[4].raw, r, clamped))

        return m
