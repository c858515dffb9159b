"""The PE array: an R×C grid of L-lane INT8 dot-product units accumulating into INT32.

Dataflow: output-stationary, broadcast dot-product
--------------------------------------------------
Each step the array takes an R×L slice of A (R rows, L consecutive k) and an L×C slice of B. Row r
of the A slice is broadcast along PE row r; column c of the B slice is broadcast along PE column c.
PE (r, c) computes the L-lane dot product ``Σ_l a[r, k+l]·b[k+l, c]`` and adds it to its own INT32
accumulator, which stays in place (output-stationary) until the last step of the tile.

Why this dataflow:

- It matches MTIA, whose PEs each own a dot-product engine fed by broadcast operands.
- Any K works with one accumulator per output; K is the only unbounded dimension, and it never
  leaves the PE, so there is no partial-sum traffic to SRAM.
- Unlike a systolic (weight-stationary) array there is no fill/drain skew: a tile occupies exactly
  ``ceil(K/L)`` steps, and consecutive tiles follow with no bubble. Weight-stationary would need
  B to be reloaded for every output tile of a GEMM whose N exceeds C, costing R cycles each time.
- The cost is broadcast wiring (fan-out R on B, C on A), which is cheap at Ember's grid sizes.

Pipeline
--------
``a``/``b`` handshake → stage 1 (operand registers) → stage 2 (registered dot products) →
accumulators. When a step flagged ``last`` reaches the accumulators, the finished tile (accumulator
plus that step's dot product) is copied into a drain buffer, and the accumulators start the next
tile in the same cycle, so accumulation of tile i+1 overlaps the drain of tile i (double-buffered
accumulators). The drain buffer shifts out one row of C INT32 values per beat on ``o``.

Throughput: one full step (R·C·L MACs) per cycle. The array stalls only when a tile finishes while
the previous tile is still draining, that is when a tile has fewer than R steps
(``ceil(K/L) < R``) or ``o`` applies backpressure.

Arithmetic: INT8×INT8 products are exact in 16 bits (``-128·-128 = 16384``); the dot product grows
by ``ceil(log2 L)`` bits; accumulation is INT32, two's-complement wrapping. For in-range operands a
reduction of K ≤ 2^17 cannot overflow: ``|Σ| ≤ K·2^14 ≤ 2^31``, and the one value that reaches
2^31 (all products ``-128·-128``) needs K = 2^17 exactly.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PEArray"]


def _tree_sum(terms):
    """Balanced adder tree; Amaranth widens each sum by one bit, so nothing overflows."""
    terms = list(terms)
    while len(terms) > 1:
        paired = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
    return terms[0]


class PEArray(wiring.Component):
    """R×C PEs of L-lane INT8 dot-product units with double-buffered INT32 accumulators.

    Parameters
    ----------
    rows : int
        PE rows R (output-tile height).
    cols : int
        PE columns C (output-tile width).
    lanes : int
        Dot-product lanes L per PE (reduction elements per step).

    Members
    -------
    a : In(stream.Signature(a_layout))
        One step's A slice. ``payload.data[r][l]`` is ``A[r, k+l]`` (signed INT8);
        ``payload.last`` marks the final step of a tile. Lanes past the end of K must be zero.
    b : In(stream.Signature(b_layout))
        One step's B slice. ``payload[c][l]`` is ``B[k+l, c]`` (signed INT8). ``a`` and ``b`` are
        consumed together: one step happens in a cycle where both are valid and the array is not
        stalled.
    o : Out(stream.Signature(o_layout))
        Result rows, R beats per tile in row order. ``payload.data[c]`` is ``C[r, c]`` (signed
        INT32); ``payload.last`` marks row R-1.
    busy : Out(1)
        High while any step or result is inside the array.
    """

    def __init__(self, *, rows, cols, lanes):
        for name, value in (("rows", rows), ("cols", cols), ("lanes", lanes)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, not {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value!r}")
        self.rows, self.cols, self.lanes = rows, cols, lanes
        self.a_layout = data.StructLayout({
            "data": data.ArrayLayout(data.ArrayLayout(signed(8), lanes), rows),
            "last": 1,
        })
        self.b_layout = data.ArrayLayout(data.ArrayLayout(signed(8), lanes), cols)
        self.o_layout = data.StructLayout({
            "data": data.ArrayLayout(signed(32), cols),
            "last": 1,
        })
        super().__init__({
            "a": In(stream.Signature(self.a_layout)),
            "b": In(stream.Signature(self.b_layout)),
            "o": Out(stream.Signature(self.o_layout)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        R, C, L = self.rows, self.cols, self.lanes
        acc_layout = data.ArrayLayout(data.ArrayLayout(signed(32), C), R)

        # Global pipeline enable: everything advances together unless a finished tile would
        # overwrite a drain buffer that is still emptying.
        en = Signal()

        # Stage 1: operand registers.
        s1_valid = Signal()
        s1_last = Signal()
        s1_a = Signal(self.a_layout.members["data"])
        s1_b = Signal(self.b_layout)
        # Stage 2: registered dot products.
        s2_valid = Signal()
        s2_last = Signal()
        dot_shape = signed(16 + max(L - 1, 0).bit_length())
        s2_dot = Signal(data.ArrayLayout(data.ArrayLayout(dot_shape, C), R))
        # Accumulators and the drain buffer (the second accumulator bank).
        acc = Signal(acc_layout)
        first = Signal(init=1)
        drain = Signal(acc_layout)
        drain_full = Signal()
        drain_row = Signal(range(R))

        drain_done = Signal()
        m.d.comb += [
            drain_done.eq(drain_full & self.o.ready & (drain_row == R - 1)),
            en.eq(~(s2_valid & s2_last & drain_full & ~drain_done)),
            self.a.ready.eq(en & self.b.valid),
            self.b.ready.eq(en & self.a.valid),
            self.busy.eq(s1_valid | s2_valid | drain_full | ~first),
        ]

        with m.If(en):
            m.d.sync += [
                s1_valid.eq(self.a.valid & self.b.valid),
                s1_last.eq(self.a.payload.last),
                s1_a.eq(self.a.payload.data),
                s1_b.eq(self.b.payload),
                s2_valid.eq(s1_valid),
                s2_last.eq(s1_last),
            ]
            for r in range(R):
                for c in range(C):
                    products = [s1_a[r][l] * s1_b[c][l] for l in range(L)]
                    m.d.sync += s2_dot[r][c].eq(_tree_sum(products))

        # Accumulate; on the last step hand the tile to the drain buffer and restart.
        acc_next = Signal(acc_layout)
        for r in range(R):
            for c in range(C):
                m.d.comb += acc_next[r][c].eq(s2_dot[r][c] + Mux(first, 0, acc[r][c]))

        # Drain: row 0 of the buffer is presented; each accepted beat shifts the rows up.
        m.d.comb += [
            self.o.valid.eq(drain_full),
            self.o.payload.data.eq(drain[0]),
            self.o.payload.last.eq(drain_row == R - 1),
        ]
        with m.If(drain_full & self.o.ready):
            for r in range(R - 1):
                m.d.sync += drain[r].eq(drain[r + 1])
            with m.If(drain_row == R - 1):
                m.d.sync += [drain_full.eq(0), drain_row.eq(0)]
            with m.Else():
                m.d.sync += drain_row.eq(drain_row + 1)

        with m.If(en & s2_valid):
            with m.If(s2_last):
                m.d.sync += [
                    drain.eq(acc_next),
                    drain_full.eq(1),
                    drain_row.eq(0),
                    first.eq(1),
                ]
            with m.Else():
                m.d.sync += [acc.eq(acc_next), first.eq(0)]

        return m
