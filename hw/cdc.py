"""An asynchronous Wishbone classic bridge: the control core's MMIO port across clock domains.

When ``EmberConfig.cpu_async`` is set, the control core (``hw/cpu.py``) runs in the clock domain
``cpu`` and the registers it reaches through its MMIO window in ``sync``. :class:`WishboneCDC`
carries each single access across with a two-phase (toggle) handshake:

- initiator side: when ``cyc & stb`` and no access is in flight, latch ``adr``, ``dat_w``,
  ``sel``, ``we`` and flip the request toggle;
- target side: the request toggle arrives through an :class:`~amaranth.lib.cdc.FFSynchronizer`;
  while it differs from the ack toggle the bridge runs exactly one Wishbone classic cycle on the
  target with the latched fields (stable since before the toggle flipped), then latches
  ``dat_r``/``err`` and flips the ack toggle;
- initiator side: the ack toggle arrives through another synchroniser; the latched answer
  (``ack`` or ``err``, with ``dat_r``) is given for one cycle while ``cyc & stb`` are still up.

Each access reaches the target exactly once. The bridge is meant to stay outside the core's
``cpu_reset`` (``ResetInserter``): if the initiator drops ``cyc`` while its access is in flight
(only a reset of the initiator does that), the access still completes on the target, its answer
is discarded, and no new access is accepted before it has completed, so the toggles stay in
step. A new access after such a drop is taken once the old one is done.

Latency of one access (registers answering two cycles after the request, as ``hw/regs.py`` does
unless the host starts a read in the same cycle): one initiator cycle to latch, two to three
target cycles to synchronise the request, three target cycles on the target bus (four when
the host's read goes first), two to three initiator cycles to synchronise the ack; the answer is
given in the cycle after that. Both toggles and their synchronisers are reset by their own
domain's reset; the two domain resets must be asserted together (in Ember the ``cpu`` reset is
derived from the ``sync`` reset by a :class:`~amaranth.lib.cdc.ResetSynchronizer`).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from . import wishbone

__all__ = ["WishboneCDC", "check_domains"]


def check_domains(**domains):
    """Check the clock-domain parameters of a crossing (``name=value``): each a non-empty
    string other than ``"comb"``, and all different; ``TypeError``/``ValueError`` otherwise."""
    for name, value in domains.items():
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a domain name (str), not {value!r}")
        if value == "comb" or not value:
            raise ValueError(f"{name} must be a clock domain, not {value!r}")
    if len(set(domains.values())) < len(domains):
        names = " and ".join(domains)
        raise ValueError(f"{names} must differ, not both {next(iter(domains.values()))!r}")


class WishboneCDC(wiring.Component):
    """Wishbone classic bridge from an initiator in one clock domain to a target in another.

    Single accesses only (no bursts): one access is in flight at a time.

    Parameters
    ----------
    addr_width : int
        Width of ``adr`` (a word address), at least 0.
    data_width : int
        Width of ``dat_w``/``dat_r`` (default 32), a multiple of 8.
    i_domain : str
        Clock domain of the initiator side ``i`` (default ``"cpu"``).
    t_domain : str
        Clock domain of the target side ``t`` (default ``"sync"``); not ``i_domain``.

    Members
    -------
    i : In(wishbone.Signature(addr_width=addr_width, data_width=data_width))
        Subordinate port for the initiator, in ``i_domain``. ``ack`` or ``err`` is high for one
        cycle per access.
    t : Out(wishbone.Signature(addr_width=addr_width, data_width=data_width))
        Initiator port towards the target, in ``t_domain``. ``cyc``/``stb`` rise once per access
        of ``i`` and fall in the cycle after the target's ``ack`` or ``err``.
    busy : Out(1)
        In ``i_domain``: an access has been taken and its answer not yet given or discarded.
    """

    def __init__(self, *, addr_width, data_width=32, i_domain="cpu", t_domain="sync"):
        for name, value in (("addr_width", addr_width), ("data_width", data_width)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, not {value!r}")
        if addr_width < 0:
            raise ValueError(f"addr_width must be at least 0, not {addr_width!r}")
        if data_width < 8 or data_width % 8:
            raise ValueError(f"data_width must be a positive multiple of 8, not {data_width!r}")
        check_domains(i_domain=i_domain, t_domain=t_domain)
        self.addr_width, self.data_width = addr_width, data_width
        self.i_domain, self.t_domain = i_domain, t_domain
        sig = wishbone.Signature(addr_width=addr_width, data_width=data_width)
        super().__init__({"i": In(sig), "t": Out(sig), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        i, t = self.i, self.t
        di, dt = m.d[self.i_domain], m.d[self.t_domain]

        # Initiator side: the request, latched with the request toggle.
        req_toggle = Signal()
        adr, dat_w = Signal.like(i.adr), Signal.like(i.dat_w)
        sel, we = Signal.like(i.sel), Signal()
        waiting = Signal()      # an access is in flight or its answer not yet given
        orphan = Signal()       # the initiator dropped cyc/stb while it was in flight
        ack_seen = Signal()     # the ack toggle, synchronised into i_domain

        # Target side: the answer, latched with the ack toggle.
        ack_toggle = Signal()
        dat_r, err = Signal.like(t.dat_r), Signal()
        req_seen = Signal()     # the request toggle, synchronised into t_domain

        m.submodules.req_sync = FFSynchronizer(req_toggle, req_seen, o_domain=self.t_domain,
                                               reset_less=False)
        m.submodules.ack_sync = FFSynchronizer(ack_toggle, ack_seen, o_domain=self.i_domain,
                                               reset_less=False)

        # Initiator side.
        request = i.cyc & i.stb
        done = ack_seen == req_toggle      # the target has answered the latched access
        m.d.comb += self.busy.eq(waiting)
        with m.If(~waiting):
            with m.If(request):
                di += [adr.eq(i.adr), dat_w.eq(i.dat_w), sel.eq(i.sel), we.eq(i.we),
                       req_toggle.eq(~req_toggle), waiting.eq(1), orphan.eq(0)]
        with m.Else():
            with m.If(done):
                # Answer the access if its initiator is still there; otherwise drop the answer.
                di += waiting.eq(0)
                with m.If(request & ~orphan):
                    m.d.comb += [i.ack.eq(~err), i.err.eq(err), i.dat_r.eq(dat_r)]
            with m.Elif(~request):
                di += orphan.eq(1)

        # Target side: one classic cycle per request toggle, with the latched (stable) fields.
        pending = req_seen != ack_toggle
        m.d.comb += [
            t.cyc.eq(pending), t.stb.eq(pending),
            t.adr.eq(adr), t.dat_w.eq(dat_w), t.sel.eq(sel), t.we.eq(we),
        ]
        with m.If(pending & (t.ack | t.err)):
            dt += [dat_r.eq(t.dat_r), err.eq(t.err & ~t.ack), ack_toggle.eq(~ack_toggle)]
        return m
