"""The host's side of the control core across clock domains: firmware writes and ``cpu_reset``.

When ``EmberConfig.cpu_async`` is set, the registers (``hw/regs.py``, domain ``sync``) load the
control core's IMEM and DMEM through a one-cycle write port with no handshake
(``Registers.imem_write``) and hold the core with ``CTRL.CPU_RESET``; the core runs in the
domain ``cpu``. :class:`HostCDC` carries both across:

- writes go through an :class:`~amaranth.lib.fifo.AsyncFIFO`. Its ``w_rdy`` is given back as
  ``write_rdy``: the registers hold the host's Wishbone ``ack`` for an IMEM-window write until the
  FIFO has taken it, so no write is lost whatever the clock ratio. On the ``cpu`` side the FIFO is
  emptied at one write per cycle into the core's host port;
- ``cpu_reset`` goes through an :class:`~amaranth.lib.cdc.FFSynchronizer` that starts (and is
  reset) asserted. Its release is held back while written words are still in the FIFO, so the
  core never starts before the firmware the host wrote before releasing it has landed. A
  running core is not reset by later writes (the hold only extends a reset in progress).

Latency: a write is taken by the FIFO in the ``sync`` cycle it is offered (if the FIFO is not
full) and reaches the core's port two to three ``cpu`` cycles later; ``cpu_reset`` arrives two to
three ``cpu`` cycles after it changes.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.fifo import AsyncFIFO
from amaranth.lib.wiring import In, Out

from .cdc import check_domains
from .wishbone import host_write_signature

__all__ = ["HostCDC"]


class HostCDC(wiring.Component):
    """Host write port and ``cpu_reset`` from the registers' domain into the core's domain.

    Parameters
    ----------
    addr_width : int
        Width of the write port's word address (``Registers.imem_write``: 30), at least 1.
    depth : int
        Writes the FIFO holds, a power of two, at least 2 (default 4).
    w_domain : str
        Domain of the registers, ``write_i``, ``write_rdy`` and ``reset_i`` (default ``"sync"``).
    r_domain : str
        Domain of the core, ``write_o`` and ``reset_o`` (default ``"cpu"``); not ``w_domain``.

    Members
    -------
    write_i : In(host_write_signature(addr_width))
        Writes from the registers. A write with ``en`` high is taken only in a cycle in which
        ``write_rdy`` is high; the writer repeats it until then.
    write_rdy : Out(1)
        The FIFO has room: a write offered in this cycle is taken.
    write_o : Out(host_write_signature(addr_width))
        Writes to the core's host port, in order, at most one a cycle.
    reset_i : In(1)
        ``CTRL.CPU_RESET`` from the registers.
    reset_o : Out(1)
        The same in ``r_domain``: asserted after a reset of that domain, released only when no
        write is left in the FIFO.
    """

    def __init__(self, *, addr_width=30, depth=4, w_domain="sync", r_domain="cpu"):
        for name, value in (("addr_width", addr_width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, not {value!r}")
        if addr_width < 1:
            raise ValueError(f"addr_width must be at least 1, not {addr_width!r}")
        if depth < 2 or depth & (depth - 1):
            raise ValueError(f"depth must be a power of two of at least 2, not {depth!r}")
        check_domains(w_domain=w_domain, r_domain=r_domain)
        self.addr_width, self.depth = addr_width, depth
        self.w_domain, self.r_domain = w_domain, r_domain
        sig = host_write_signature(addr_width)
        super().__init__({
            "write_i": In(sig),
            "write_rdy": Out(1),
            "write_o": Out(sig),
            "reset_i": In(1),
            "reset_o": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        wi, wo = self.write_i, self.write_o
        fields = (wi.addr, wi.data, wi.sel)
        width = sum(len(f) for f in fields)
        m.submodules.fifo = fifo = AsyncFIFO(width=width, depth=self.depth, exact_depth=True,
                                             w_domain=self.w_domain, r_domain=self.r_domain)
        m.d.comb += [
            fifo.w_en.eq(wi.en),
            fifo.w_data.eq(Cat(*fields)),
            self.write_rdy.eq(fifo.w_rdy),
            fifo.r_en.eq(1),
            wo.en.eq(fifo.r_rdy),
            Cat(wo.addr, wo.data, wo.sel).eq(fifo.r_data),
        ]

        reset_sync = Signal(init=1)
        m.submodules.reset_sync = FFSynchronizer(self.reset_i, reset_sync,
                                                 o_domain=self.r_domain, init=1,
                                                 reset_less=False)
        # Extend a reset in progress while written words are still on their way.
        held = Signal(init=1)
        m.d.comb += self.reset_o.eq(reset_sync | (held & fifo.r_rdy))
        m.d[self.r_domain] += held.eq(self.reset_o)
        return m
