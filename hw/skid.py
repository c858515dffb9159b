"""A two-entry stream register slice (skid buffer).

It cuts every combinational path through a stream: its output valid and its input ready are
registers, and its output payload is one multiplexer after registers. It passes one transfer per
cycle with one cycle of latency. Ember puts one in front of the scratchpad ports whose clients do
not count on a fixed read latency, so that the scratchpad's same-cycle grant (``req.ready``) ends
at a register instead of running back into the client's data path (synth/README.md, "Issue 7").

It is a ring of two entries. Unlike a head-and-skid pair of registers, whose head register
reloads whenever the output is taken, a ring writes its entries only from the input side: the
output's ``ready`` (on the scratchpad, the grant) moves a read pointer and the level flags, and
never reaches the enables of the payload registers (synth/README.md, "ninth round"). Amaranth's
two-entry ``SyncFIFO`` is such a ring, but its ``r_rdy`` and ``w_rdy`` are compares of its level,
a LUT after the flip-flops; here they are flip-flops, loaded with the next level's flags.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """Register slice of a stream: registered ``o.valid`` and ``i.ready``; ``o.payload`` is
    one of two entry registers, chosen by a registered pointer.

    ``i.ready`` is high while fewer than two transfers are held, so the slice behaves, cycle for
    cycle, like a head register with a skid register behind it.

    Parameters
    ----------
    layout : data.Layout or int
        Payload shape of both streams.

    Members
    -------
    i : In(stream.Signature(layout))
        Input stream.
    o : Out(stream.Signature(layout))
        Output stream, one cycle behind the input when it flows.
    busy : Out(1)
        High while the slice holds a transfer.
    """

    def __init__(self, *, layout):
        if not isinstance(layout, (int, data.Layout)) or isinstance(layout, bool):
            raise TypeError(f"layout must be a data.Layout or a width, not {layout!r}")
        self.layout = layout
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(layout)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        # The entries have no reset: the level says which of them hold transfers.
        entries = [Signal.like(i.payload, reset_less=True, name=f"entry{n}") for n in range(2)]
        wptr, rptr = Signal(), Signal()
        level = Signal(range(3))
        i_ready = Signal(init=1)
        push = i.valid & i_ready
        pop = o.valid & o.ready
        level_next = Signal.like(level)
        m.d.comb += [
            i.ready.eq(i_ready),
            o.payload.eq(Mux(rptr, entries[1], entries[0])),
            level_next.eq(level + push - pop),
            self.busy.eq(o.valid),
        ]
        with m.If(push):
            m.d.sync += wptr.eq(~wptr)
            for n, entry in enumerate(entries):
                with m.If(wptr == n):
                    m.d.sync += entry.eq(i.payload)
        with m.If(pop):
            m.d.sync += rptr.eq(~rptr)
        m.d.sync += [level.eq(level_next), o.valid.eq(level_next != 0),
                     i_ready.eq(level_next != 2)]
        return m
