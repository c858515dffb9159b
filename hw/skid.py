"""A two-entry stream register slice (skid buffer).

It cuts every combinational path through a stream: its output valid and payload are registers,
and so is its input ready. It passes one transfer per cycle with one cycle of latency. Ember
puts one in front of the scratchpad ports whose clients do not count on a fixed read latency,
so that the scratchpad's same-cycle grant (``req.ready``) ends at a register instead of running
back into the client's data path (synth/README.md, "Issue 7").
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """Register slice of a stream: registered ``o.valid``, ``o.payload`` and ``i.ready``.

    The output register holds the head; the skid register catches the one transfer that
    arrives in the cycle the output stalls (``i.ready`` is only a register, so it cannot drop
    in that cycle). ``i.ready`` is high whenever the skid register is empty.

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
        High while the slice holds a transfer (the output or the skid register is full).
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
        skid_valid = Signal()
        # The payload registers have no reset: the valid flags say when they hold a transfer.
        skid = Signal.like(i.payload, reset_less=True)
        head = Signal.like(o.payload, reset_less=True)
        m.d.comb += o.payload.eq(head)
        m.d.comb += [
            i.ready.eq(~skid_valid),
            self.busy.eq(o.valid | skid_valid),
        ]
        with m.If(~o.valid | o.ready):
            # The output register is free (or being taken): refill it, from the skid register
            # first (no input is accepted while that is full).
            with m.If(skid_valid):
                m.d.sync += [o.valid.eq(1), head.eq(skid), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [o.valid.eq(i.valid), head.eq(i.payload)]
        with m.Elif(i.valid & ~skid_valid):
            m.d.sync += [skid_valid.eq(1), skid.eq(i.payload)]
        return m
