"""AXI4-Lite subordinate to Wishbone classic initiator: the host port of Ember.

One transaction at a time. A write takes its AW and W beats together, a read its AR beat, and
each becomes one Wishbone cycle. Wishbone ``ack`` answers OKAY and ``err`` answers SLVERR. When
reads and writes both wait, they take turns. ``awprot``/``arprot`` are accepted and ignored.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import wishbone
from .axi import RESP_OKAY, RESP_SLVERR

__all__ = ["axil_signature", "AXILiteToWishbone"]


def axil_signature(*, addr_width, data_width=32):
    """AXI4-Lite port from the manager's side; members named as in the AXI specification."""
    return wiring.Signature({
        "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1),
        "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


class AXILiteToWishbone(wiring.Component):
    """Bridge from an AXI4-Lite subordinate port to a Wishbone classic initiator port.

    Parameters
    ----------
    addr_width : int
        AXI byte-address width; the Wishbone side has ``addr_width - 2`` word-address bits.

    Members
    -------
    axil : In(axil_signature(addr_width=addr_width))
        The host's AXI4-Lite port.
    wb : Out(wishbone.Signature(addr_width=addr_width - 2))
        Towards the registers.
    """

    def __init__(self, *, addr_width):
        if isinstance(addr_width, bool) or not isinstance(addr_width, int) or addr_width < 3:
            raise ValueError(f"addr_width must be an integer of at least 3, not {addr_width!r}")
        self.addr_width = addr_width
        super().__init__({
            "axil": In(axil_signature(addr_width=addr_width)),
            "wb": Out(wishbone.Signature(addr_width=addr_width - 2)),
        })

    def elaborate(self, platform):
        m = Module()
        axil, wb = self.axil, self.wb
        prefer_read = Signal()
        with m.FSM():
            with m.State("IDLE"):
                take_write = axil.awvalid & axil.wvalid & (~axil.arvalid | ~prefer_read)
                take_read = axil.arvalid & ~take_write
                with m.If(take_write):
                    m.d.comb += [axil.awready.eq(1), axil.wready.eq(1)]
                    m.d.sync += [wb.adr.eq(axil.awaddr[2:]), wb.dat_w.eq(axil.wdata),
                                 wb.sel.eq(axil.wstrb), wb.we.eq(1), prefer_read.eq(1)]
                    m.next = "BUS"
                with m.Elif(take_read):
                    m.d.comb += axil.arready.eq(1)
                    m.d.sync += [wb.adr.eq(axil.araddr[2:]), wb.sel.eq(0xF), wb.we.eq(0),
                                 prefer_read.eq(0)]
                    m.next = "BUS"
            with m.State("BUS"):
                m.d.comb += [wb.cyc.eq(1), wb.stb.eq(1)]
                with m.If(wb.ack | wb.err):
                    with m.If(wb.we):
                        m.d.sync += [axil.bvalid.eq(1),
                                     axil.bresp.eq(Mux(wb.err, RESP_SLVERR, RESP_OKAY))]
                        m.next = "B"
                    with m.Else():
                        m.d.sync += [axil.rvalid.eq(1), axil.rdata.eq(wb.dat_r),
                                     axil.rresp.eq(Mux(wb.err, RESP_SLVERR, RESP_OKAY))]
                        m.next = "R"
            with m.State("B"):
                with m.If(axil.bready):
                    m.d.sync += axil.bvalid.eq(0)
                    m.next = "IDLE"
            with m.State("R"):
                with m.If(axil.rready):
                    m.d.sync += axil.rvalid.eq(0)
                    m.next = "IDLE"
        return m
