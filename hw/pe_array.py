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
``a``/``b`` handshake → stage 1 (operand registers) → stage 2 (registered INT8 products, one per
lane) → the L-lane adder tree, registered every :attr:`PEArray.TREE_LEVELS` levels
(``ceil(ceil(log2 L) / 2)`` stages: none for L = 1, one for L = 2..4, two for L = 5..16) →
accumulators. When a step flagged ``last`` reaches the accumulators, the finished tile (accumulator
plus that step's dot product) is copied into a drain buffer, and the accumulators start the next
tile in the same cycle, so accumulation of tile i+1 overlaps the drain of tile i (double-buffered
accumulators). The drain buffer shifts out one row of C INT32 values per beat into the output
register, a two-entry skid buffer that drives ``o``.

The registers are there for timing (``synth/README.md``): on an ECP5 the product register ends the
path through a MULT18X18D (or a LUT multiplier), each two adder levels are one carry chain deep,
and the skid buffer keeps ``o.ready`` away from the pipeline.

Only stage 1 can stall; from stage 2 on, every register loads every cycle, so no enable fans out
to the thousands of pipeline registers (that fan-out was the GEMM engine's critical path on an
ECP5). A finished tile that finds the drain buffer still emptying waits in a two-entry hold
queue. A step flagged ``last`` leaves stage 1 only while fewer than three tiles are between
stage 2 and the end of their drain, so a tile arriving at the accumulators always has a place.

Throughput: one full step (R·C·L MACs) per cycle. The array stalls only when tiles are shorter than
the drain (``ceil(K/L) < R`` steps) or ``o`` applies backpressure, and then only once the hold
queue is full.

Arithmetic: INT8×INT8 products are exact in 16 bits (``-128·-128 = 16384``); the dot product grows
by ``ceil(log2 L)`` bits; accumulation is INT32, two's-complement wrapping. For in-range operands a
reduction of K ≤ 2^17 cannot overflow: ``|Σ| ≤ K·2^14 ≤ 2^31``, and the one value that reaches
2^31 (all products ``-128·-128``) needs K = 2^17 exactly.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PEArray"]


def _tree_level(terms):
    """One level of a balanced adder tree; Amaranth widens each sum by one bit, so nothing
    overflows."""
    paired = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
    if len(terms) % 2:
        paired.append(terms[-1])
    return paired


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
        consumed together: one step happens in a cycle where both are valid and stage 1 can
        take it.
    o : Out(stream.Signature(o_layout))
        Result rows, R beats per tile in row order. ``payload.data[c]`` is ``C[r, c]`` (signed
        INT32); ``payload.last`` marks row R-1.
    busy : Out(1)
        High while any step or result is inside the array.
    """

    #: Adder-tree levels between two pipeline registers.
    TREE_LEVELS = 2

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
        row_layout = data.ArrayLayout(signed(32), C)

        # Stage 1: operand registers, the only stage that can stall. There is no global pipeline
        # enable (on an FPGA its fan-out to every pipeline register was the GEMM engine's
        # critical path): from stage 2 on everything advances every cycle. A step flagged
        # ``last`` leaves stage 1 only while fewer than three finished-or-finishing tiles are
        # between stage 2 and the end of their drain; the accumulators hand a finished tile to
        # the drain buffer, or, while that is still emptying, to a two-entry hold queue, which
        # therefore always has room.
        # Datapath registers (operands, products, sums, accumulators, drain, hold and output data,
        # and the `last` bits that travel with a valid) have no reset: a reset clears the valid and
        # full flags, and `first`, which makes the next tile start from 0 instead of from `acc`,
        # so no stale value is used. Only that control keeps a reset.
        s1_valid = Signal()
        s1_last = Signal(reset_less=True)
        s1_a = Signal(self.a_layout.members["data"], reset_less=True)
        s1_b = Signal(self.b_layout, reset_less=True)
        pending = Signal(range(4))      # last steps past stage 1 whose tile is not yet drained
        # `pending != 3`, in a register (loaded with the next count), so stage 1's enable, which
        # fans out to its registers and to the operand readers, is one LUT on flip-flops.
        room = Signal(init=1)
        drain_done = Signal()
        s1_move = Signal()
        s1_load = Signal()
        m.d.comb += [
            s1_move.eq(s1_valid & (~s1_last | room)),
            s1_load.eq(~s1_valid | s1_move),
            self.a.ready.eq(self.b.valid & s1_load),
            self.b.ready.eq(self.a.valid & s1_load),
        ]
        with m.If(s1_load):
            m.d.sync += [
                s1_valid.eq(self.a.valid & self.b.valid),
                s1_last.eq(self.a.payload.last),
                s1_a.eq(self.a.payload.data),
                s1_b.eq(self.b.payload),
            ]
        enter = s1_move & s1_last
        with m.If(enter & ~drain_done):
            m.d.sync += [pending.eq(pending + 1), room.eq(pending != 2)]
        with m.Elif(~enter & drain_done):
            m.d.sync += [pending.eq(pending - 1), room.eq(1)]

        # Stage 2: registered products, one per lane (the multiplier, DSP or LUTs, ends here).
        s2_valid = Signal()
        s2_last = Signal(reset_less=True)
        s2_prod = Signal(data.ArrayLayout(data.ArrayLayout(
            data.ArrayLayout(signed(16), L), C), R), reset_less=True)
        m.d.sync += [s2_valid.eq(s1_move), s2_last.eq(s1_last)]
        for r in range(R):
            for c in range(C):
                for l in range(L):
                    m.d.sync += s2_prod[r][c][l].eq(s1_a[r][l] * s1_b[c][l])
        valids = [s1_valid, s2_valid]

        # Stages 3..: the adder tree, registered every TREE_LEVELS levels.
        terms = [[[s2_prod[r][c][l] for l in range(L)] for c in range(C)] for r in range(R)]
        valid, last = s2_valid, s2_last
        depth = 0
        while len(terms[0][0]) > 1:
            depth += 1
            nxt = []
            for r in range(R):
                row = []
                for c in range(C):
                    sums = terms[r][c]
                    for _ in range(self.TREE_LEVELS):
                        if len(sums) > 1:
                            sums = _tree_level(sums)
                    regs = []
                    for i, v in enumerate(sums):
                        reg = Signal(v.shape(), name=f"t{depth}_r{r}c{c}_{i}", reset_less=True)
                        m.d.sync += reg.eq(v)
                        regs.append(reg)
                    row.append(regs)
                nxt.append(row)
            terms = nxt
            v_reg = Signal(name=f"t{depth}_valid")
            l_reg = Signal(name=f"t{depth}_last", reset_less=True)
            m.d.sync += [v_reg.eq(valid), l_reg.eq(last)]
            valid, last = v_reg, l_reg
            valids.append(valid)
        dot = [[terms[r][c][0] for c in range(C)] for r in range(R)]

        # Accumulators, the hold queue and the drain buffer.
        acc = Signal(acc_layout, reset_less=True)     # used only when `first` is low
        first = Signal(init=1)
        hold = [Signal(acc_layout, name=f"hold{i}", reset_less=True) for i in range(2)]
        hold_full = [Signal(name=f"hold{i}_full") for i in range(2)]
        drain = Signal(acc_layout, reset_less=True)
        drain_full = Signal()
        drain_row = Signal(range(R), reset_less=True)   # set to 0 whenever the drain fills
        # Output register: a two-entry skid buffer, so ``o.ready`` reaches no further than it.
        out_valid = Signal(name="out_valid")
        out_last = Signal(name="out_last", reset_less=True)
        out_data = Signal(row_layout, name="out_data", reset_less=True)
        skid_valid = Signal(name="skid_valid")
        skid_last = Signal(name="skid_last", reset_less=True)
        skid_data = Signal(row_layout, name="skid_data", reset_less=True)
        out_free = ~skid_valid

        drain_take = Signal()
        # `drain_last`: row R-1 is at the head of the drain (a register, not a compare).
        drain_last = Signal()
        drain_free = Signal()       # the drain is empty, or empties in this cycle
        arrive = Signal()
        m.d.comb += [
            drain_take.eq(drain_full & out_free),
            drain_done.eq(drain_take & drain_last),
            drain_free.eq(~drain_full | drain_done),
            arrive.eq(valid & last),
            self.busy.eq(Cat(*valids).any() | hold_full[0] | drain_full | out_valid | ~first
                         | (pending != 0)),
        ]

        # Accumulate; on the last step the finished tile (accumulator plus that step's dot
        # product) leaves for the drain or the hold queue, and the next tile starts.
        acc_next = Signal(acc_layout)
        for r in range(R):
            for c in range(C):
                m.d.comb += acc_next[r][c].eq(dot[r][c] + Mux(first, 0, acc[r][c]))
        with m.If(valid):
            with m.If(last):
                m.d.sync += first.eq(1)
            with m.Else():
                m.d.sync += [acc.eq(acc_next), first.eq(0)]

        # Drain: row 0 of the buffer moves to the output register; the rows shift up. When the
        # drain is (or is becoming) empty it takes the oldest held tile, else the arriving one;
        # an arriving tile that cannot go to the drain joins the tail of the hold queue.
        # The flags follow these rules; the wide registers load whenever they are free (or
        # being freed), whether or not a tile comes, so that their clock enables are one LUT on
        # flip-flops (with `arrive` and the drain's row compare in front of them, the hold
        # queue's enable was the GEMM engine's routed critical path, 72.5 MHz).
        with m.If(drain_take):
            with m.If(drain_last):
                m.d.sync += [drain_full.eq(0), drain_row.eq(0), drain_last.eq(0)]
            with m.Else():
                m.d.sync += [drain_row.eq(drain_row + 1), drain_last.eq(drain_row == R - 2)]
        with m.If(drain_free):
            with m.If(hold_full[0] | arrive):
                m.d.sync += [drain_full.eq(1), drain_row.eq(0), drain_last.eq(R == 1)]
            with m.If(hold_full[0] & ~arrive):
                with m.If(hold_full[1]):
                    m.d.sync += hold_full[1].eq(0)
                with m.Else():
                    m.d.sync += hold_full[0].eq(0)
        with m.Elif(arrive):
            with m.If(~hold_full[0]):
                m.d.sync += hold_full[0].eq(1)
            with m.Else():
                m.d.sync += hold_full[1].eq(1)
        with m.If(~drain_full | out_free):
            with m.If(~drain_full | drain_last):
                m.d.sync += drain.eq(Mux(hold_full[0], hold[0], acc_next))
            with m.Else():
                for r in range(R - 1):
                    m.d.sync += drain[r].eq(drain[r + 1])
        with m.If(~hold_full[0] | drain_free):
            m.d.sync += hold[0].eq(Mux(hold_full[1], hold[1], acc_next))
        with m.If(~hold_full[1] | drain_free):
            m.d.sync += hold[1].eq(acc_next)

        # Skid buffer: ``out`` is presented on ``o``; a row taken from the drain while ``out`` is
        # held goes to ``skid``; the drain sends while ``skid`` is empty.
        m.d.comb += [
            self.o.valid.eq(out_valid),
            self.o.payload.data.eq(out_data),
            self.o.payload.last.eq(out_last),
        ]
        out_go = ~out_valid | self.o.ready
        with m.If(out_go):
            with m.If(skid_valid):
                m.d.sync += [out_valid.eq(1), out_data.eq(skid_data), out_last.eq(skid_last),
                             skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [out_valid.eq(drain_take), out_data.eq(drain[0]),
                             out_last.eq(drain_last)]
        with m.Elif(drain_take):
            m.d.sync += [skid_valid.eq(1), skid_data.eq(drain[0]),
                         skid_last.eq(drain_last)]

        return m
