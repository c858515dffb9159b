"""A small Wishbone B4 *classic* toolkit: a bus signature, an address decoder, a RAM and an
ERR-to-ACK adapter. Enough for the control core's fabric (``hw/cpu.py``); amaranth-soc is not
on PyPI, so this is deliberately minimal.

Conventions
-----------
- 32-bit data, byte granularity (``sel`` has one bit per byte), ``adr`` is a *word* address, as
  on VexRiscv's buses (``ADR[29:0]`` = byte address bits 31:2).
- Classic cycles: the initiator holds ``cyc``, ``stb``, ``adr``, ``we``, ``dat_w`` and ``sel``
  until a cycle in which the subordinate raises ``ack`` (done) or ``err`` (failed).
- Optional registered-feedback burst tags (``cti``/``bte``, signature option ``burst=True``).
  Only ``cti`` = :data:`CTI_INCR` (incrementing, linear ``bte`` = 0) and :data:`CTI_END` are
  acted upon: :class:`SRAM` then streams read beats at one per cycle. A subordinate that ignores
  the tags still works (every beat is a classic cycle).
- Member names follow the Verilog convention ``<bus>__<member>`` at a top level, e.g.
  ``mmio__cyc``, ``mmio__dat_r``.
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = [
    "CTI_CLASSIC", "CTI_INCR", "CTI_END", "Signature", "host_write_signature",
    "Decoder", "SRAM", "ErrorCatcher",
]

#: Cycle type identifiers (Wishbone B4, 3.1.3).
CTI_CLASSIC = 0b000
CTI_INCR = 0b010
CTI_END = 0b111


def _log2_exact(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 \
            or value & (value - 1):
        raise ValueError(f"{what} must be a power of two, not {value!r}")
    return value.bit_length() - 1


class Signature(wiring.Signature):
    """Wishbone classic bus, from the initiator's side.

    Parameters
    ----------
    addr_width : int
        Width of ``adr`` (a word address).
    data_width : int
        Width of ``dat_w``/``dat_r`` (default 32).
    granularity : int
        Bits per ``sel`` bit (default 8).
    burst : bool
        Add the ``cti``/``bte`` burst tags.

    Members
    -------
    cyc, stb, we : Out(1)
    adr : Out(addr_width)
    dat_w : Out(data_width)
    sel : Out(data_width // granularity)
    cti : Out(3), bte : Out(2)
        Only with ``burst=True``.
    dat_r : In(data_width)
    ack, err : In(1)
    """

    def __init__(self, *, addr_width, data_width=32, granularity=8, burst=False):
        if isinstance(addr_width, bool) or not isinstance(addr_width, int) or addr_width < 0:
            raise ValueError(f"addr_width must be a non-negative integer, not {addr_width!r}")
        _log2_exact(granularity, "granularity")
        if data_width % granularity or data_width < granularity:
            raise ValueError(f"data_width {data_width!r} is not a multiple of granularity "
                             f"{granularity!r}")
        self.addr_width, self.data_width = addr_width, data_width
        self.granularity, self.burst = granularity, bool(burst)
        members = {
            "cyc": Out(1),
            "stb": Out(1),
            "we": Out(1),
            "adr": Out(addr_width),
            "dat_w": Out(data_width),
            "sel": Out(data_width // granularity),
            "dat_r": In(data_width),
            "ack": In(1),
            "err": In(1),
        }
        if burst:
            members["cti"] = Out(3)
            members["bte"] = Out(2)
        super().__init__(members)

    def __eq__(self, other):
        return (type(other) is Signature and self.addr_width == other.addr_width
                and self.data_width == other.data_width
                and self.granularity == other.granularity and self.burst == other.burst)

    def __hash__(self):
        return hash((Signature, self.addr_width, self.data_width, self.granularity, self.burst))

    def __repr__(self):
        return (f"wishbone.Signature(addr_width={self.addr_width}, "
                f"data_width={self.data_width}, granularity={self.granularity}, "
                f"burst={self.burst})")


def host_write_signature(addr_width, data_width=32):
    """A one-cycle write port (no handshake), from the writer's side.

    Members: ``en`` (write this cycle), ``addr`` (word address), ``data``, ``sel`` (byte enables).
    """
    return wiring.Signature({
        "en": Out(1),
        "addr": Out(addr_width),
        "data": Out(data_width),
        "sel": Out(data_width // 8),
    })


class Decoder(wiring.Component):
    """One initiator, several subordinates selected by address window.

    Each window is a power-of-two number of bytes at a base aligned to its size; its subordinate
    sees the word offset into the window on ``adr``. ``cyc`` and ``stb`` reach only the selected
    subordinate, and only the selected subordinate's ``ack``/``err``/``dat_r`` reach the initiator.
    An access that hits no window is answered with ``err`` one cycle later, so it never hangs.

    The response is chosen combinationally from the current ``adr``, which the initiator holds for
    the whole cycle; a burst must not cross a window (bursts of cache lines never do).

    Parameters
    ----------
    addr_width, data_width, granularity, burst
        The initiator bus, as in :class:`Signature`.
    windows : dict of str to (base, size) or (base, size, burst)
        Byte address and size of each window, and whether its subordinate bus carries the burst
        tags (default: as the initiator). A subordinate without them sees only classic cycles.

    Members
    -------
    bus : In(Signature(...))
        The initiator.
    subs : Out(wiring.Signature({name: Out(Signature(...)), ...}))
        One subordinate bus per window, ``dec.subs.<name>``.
    """

    def __init__(self, *, addr_width=30, data_width=32, granularity=8, burst=False, windows):
        if not windows:
            raise ValueError("a decoder needs at least one window")
        byte_shift = _log2_exact(data_width // 8, "data_width / 8") if data_width >= 8 else 0
        self.windows = {}
        spans = []
        for name, spec in windows.items():
            base, size, *rest = spec
            sub_burst = burst if not rest else bool(rest[0])
            _log2_exact(size, f"size of window {name!r}")
            if size < data_width // 8:
                raise ValueError(f"window {name!r} is smaller than one word")
            if base % size:
                raise ValueError(f"window {name!r}: base {base:#x} is not aligned to its size "
                                 f"{size:#x}")
            if base + size > 1 << (addr_width + byte_shift):
                raise ValueError(f"window {name!r} lies outside the {addr_width}-bit word space")
            for other, (lo, hi) in spans:
                if base < hi and lo < base + size:
                    raise ValueError(f"windows {name!r} and {other!r} overlap")
            spans.append((name, (base, base + size)))
            sub_aw = _log2_exact(size, "size") - byte_shift
            self.windows[name] = (base, size, sub_aw, Signature(
                addr_width=sub_aw, data_width=data_width, granularity=granularity,
                burst=sub_burst))
        self.bus_signature = Signature(addr_width=addr_width, data_width=data_width,
                                       granularity=granularity, burst=burst)
        self._byte_shift = byte_shift
        super().__init__({
            "bus": In(self.bus_signature),
            "subs": Out(wiring.Signature({name: Out(sig)
                                          for name, (*_, sig) in self.windows.items()})),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        hits = []
        for name, (base, size, sub_aw, sig) in self.windows.items():
            sub = getattr(self.subs, name)
            hit = Signal(name=f"hit_{name}")
            m.d.comb += hit.eq(bus.adr[sub_aw:] == (base >> self._byte_shift) >> sub_aw)
            hits.append(hit)
            m.d.comb += [
                sub.cyc.eq(bus.cyc & hit),
                sub.stb.eq(bus.stb & hit),
                sub.we.eq(bus.we),
                sub.adr.eq(bus.adr[:sub_aw]),
                sub.dat_w.eq(bus.dat_w),
                sub.sel.eq(bus.sel),
            ]
            if sig.burst:
                if self.bus_signature.burst:
                    m.d.comb += [sub.cti.eq(bus.cti), sub.bte.eq(bus.bte)]
                else:
                    m.d.comb += [sub.cti.eq(CTI_CLASSIC), sub.bte.eq(0)]
            with m.If(hit):
                m.d.comb += [bus.dat_r.eq(sub.dat_r), bus.ack.eq(sub.ack), bus.err.eq(sub.err)]

        miss = Signal()
        miss_err = Signal()
        m.d.comb += miss.eq(~_any(hits))
        m.d.sync += miss_err.eq(bus.cyc & bus.stb & miss & ~miss_err)
        with m.If(miss):
            m.d.comb += bus.err.eq(miss_err)
        return m


def _any(signals):
    result = signals[0]
    for s in signals[1:]:
        result = result | s
    return result


class SRAM(wiring.Component):
    """A Wishbone RAM on :class:`amaranth.lib.memory.Memory`, with several bus ports.

    Every port reads through its own synchronous read port, so ports never contend for reads; the
    single write port is shared by the one ``"rw"`` bus port and the host write port.

    Timing: ``ack`` is registered, one cycle after the request (one wait state). On a port with
    burst tags, a read whose acknowledged beat has ``cti`` = :data:`CTI_INCR` already reads the
    next word, so the beats of an incrementing read burst (a cache-line refill) come one per cycle.

    Host writes (``host.en``) take priority: a bus write in the same cycle waits one cycle.
    A write on a ``"r"`` port is answered with ``err``.

    Parameters
    ----------
    size : int
        Bytes, a power of two (at least 4).
    ports : tuple of "r" or "rw"
        Bus ports in order; at most one may be ``"rw"``.
    burst : bool
        Whether the bus ports carry burst tags.
    init : iterable of int
        Initial words (for simulation or ROM-like use); the rest are zero.

    Members
    -------
    buses : In(Signature(addr_width=log2(size/4), burst=burst)).array(len(ports))
    host : In(host_write_signature(log2(size/4)))
        Word-addressed write port with byte enables, e.g. to load firmware.
    """

    def __init__(self, *, size, ports=("rw",), burst=False, init=()):
        self.addr_width = _log2_exact(size, "size") - 2
        if self.addr_width < 0:
            raise ValueError(f"size must be at least 4 bytes, not {size!r}")
        ports = tuple(ports)
        if not ports or any(p not in ("r", "rw") for p in ports):
            raise ValueError(f"ports must be a non-empty tuple of 'r'/'rw', not {ports!r}")
        if ports.count("rw") > 1:
            raise ValueError("at most one port may be 'rw'")
        self.size, self.ports, self.burst = size, ports, bool(burst)
        self.init = list(init)
        if len(self.init) > size // 4:
            raise ValueError(f"{len(self.init)} initial words do not fit in {size} bytes")
        self.bus_signature = Signature(addr_width=self.addr_width, burst=burst)
        super().__init__({
            "buses": In(self.bus_signature).array(len(ports)),
            "host": In(host_write_signature(self.addr_width)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=32, depth=self.size // 4, init=self.init)
        wr = mem.write_port(granularity=8)
        host = self.host
        with m.If(host.en):
            m.d.comb += [wr.addr.eq(host.addr), wr.data.eq(host.data), wr.en.eq(host.sel)]

        for i, (kind, bus) in enumerate(zip(self.ports, self.buses)):
            rd = mem.read_port(transparent_for=())
            ack = Signal(name=f"ack_{i}")
            err = Signal(name=f"err_{i}")
            req = bus.cyc & bus.stb
            if self.burst:
                cont = Signal(name=f"burst_{i}")
                m.d.comb += cont.eq(ack & ~bus.we & (bus.cti == CTI_INCR))
            else:
                cont = Const(0, 1)
            m.d.comb += [
                rd.addr.eq(Mux(cont, bus.adr + 1, bus.adr)),
                bus.dat_r.eq(rd.data),
                bus.ack.eq(ack),
                bus.err.eq(err),
            ]
            read_ack = req & ~bus.we & (~ack | cont)
            if kind == "rw":
                write = Signal(name=f"write_{i}")
                m.d.comb += write.eq(req & bus.we & ~ack & ~host.en)
                with m.If(write):
                    m.d.comb += [wr.addr.eq(bus.adr), wr.data.eq(bus.dat_w), wr.en.eq(bus.sel)]
                m.d.sync += ack.eq(read_ack | write)
            else:
                m.d.sync += [
                    ack.eq(read_ack),
                    err.eq(req & bus.we & ~err),
                ]
        return m


class ErrorCatcher(wiring.Component):
    """Pass a bus through, turning the subordinate's ``err`` into ``ack`` with zero read data.

    VexRiscv's pre-generated Wishbone bridges (``pythondata-cpu-vexriscv``) leave their ``ERR``
    inputs unconnected inside the core: an access answered with ``err`` alone would hang the core.
    This adapter terminates it instead and reports it on ``error`` for one cycle, so that the
    system can record it and raise an interrupt (see :class:`hw.cpu.ControlCore`). A zero
    instruction word is illegal in RISC-V, so a failed instruction fetch still traps precisely.

    Members
    -------
    bus : In(Signature(...))
        Towards the initiator; its ``err`` is always 0.
    sub : Out(Signature(...))
        Towards the fabric.
    error : Out(wiring.Signature({"valid": Out(1), "adr": Out(addr_width), "we": Out(1)}))
        ``valid`` for one cycle per failed access, with its address and direction.
    """

    def __init__(self, signature):
        if not isinstance(signature, Signature):
            raise TypeError(f"signature must be a wishbone.Signature, not {signature!r}")
        self.bus_signature = signature
        super().__init__({
            "bus": In(signature),
            "sub": Out(signature),
            "error": Out(wiring.Signature({
                "valid": Out(1), "adr": Out(signature.addr_width), "we": Out(1),
            })),
        })

    def elaborate(self, platform):
        m = Module()
        bus, sub = self.bus, self.sub
        forward = ["cyc", "stb", "we", "adr", "dat_w", "sel"]
        if self.bus_signature.burst:
            forward += ["cti", "bte"]
        m.d.comb += [getattr(sub, n).eq(getattr(bus, n)) for n in forward]
        m.d.comb += [
            bus.ack.eq(sub.ack | sub.err),
            bus.dat_r.eq(Mux(sub.err, 0, sub.dat_r)),
            bus.err.eq(0),
            self.error.valid.eq(bus.cyc & bus.stb & sub.err),
            self.error.adr.eq(bus.adr),
            self.error.we.eq(bus.we),
        ]
        return m
