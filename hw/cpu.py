"""The control core: a VexRiscv RV32 CPU with private instruction and data SRAMs.

The core runs Ember's firmware (``fw/``): it tiles GEMMs and writes command descriptors to the
command processor through its MMIO window. The host loads the firmware through a write port while
it holds the core in reset, then releases it.

Memory map (byte addresses, as seen by the core)
------------------------------------------------
============  =====================  ==================  =========================================
Base          Size (default)         Reached from        Contents
============  =====================  ==================  =========================================
0x0000_0000   ``imem_size`` (16 KB)  iBus, dBus (r/w)    IMEM: boot address, code, ``.rodata``, the
                                                         load image of ``.data``
0x1000_0000   ``dmem_size`` (8 KB)   dBus                DMEM: ``.data``, ``.bss``, stack (at top)
0x8000_0000   256 MB                 dBus                MMIO window: the ``mmio`` Wishbone port
                                                         (``adr`` = word offset in the window)
0xF000_0000   4 KB                   dBus                core-local registers (below)
anything else                        ERR                 bus error (below)
============  =====================  ==================  =========================================

Each window answers only its own size (a 16 KB IMEM is 0x0000_0000–0x0000_3FFF; 0x0000_4000 is
unmapped). The iBus reaches IMEM only; a fetch from anywhere else is a bus error.

Caching: VexRiscv's static memory translator treats the addresses with bit 31 set as I/O. The MMIO
window and the core-local registers are up there on purpose: with the data cache of the default
variant they are never cached (every load and store reaches the bus once, in program order, as a
single classic cycle). IMEM and DMEM are below 0x8000_0000 and are cached by that variant (the data
cache is write-through; a read miss refills a 32-byte line with an incrementing burst); this is
safe because only this core and the host (while the core is in reset; the caches are invalidated
at reset) write them. Anything shared with other agents must be reached through MMIO. A load from
an unmapped address below 0x8000_0000 refills a whole line, so it fails eight times (the record
keeps the first and sets ``overflow``).

Core-local registers (0xF000_0000)
----------------------------------
====== ============ ====================================================================
Offset Name         Meaning
====== ============ ====================================================================
0x00   BERR_STATUS  bit 0 pending, bit 1 overflow (another error while pending),
                    bits 3:2 kind of the recorded error (0 fetch, 1 load, 2 store).
                    Writing a 1 to bit 0 clears the record (pending and overflow).
0x04   BERR_ADDR    byte address of the recorded failed access
0x08   CYCLE_LO     free-running cycle counter since the core left reset, bits 31:0
0x0C   CYCLE_HI     bits 63:32 (read HI, LO, HI again to get a consistent 64-bit value)
====== ============ ====================================================================
Other offsets are bus errors; writes to the read-only registers are ignored.

Bus errors
----------
The decoders answer an unmapped access with Wishbone ``err`` (one cycle later, never a hang),
and so may the MMIO subordinate. The pre-generated VexRiscv cores in ``pythondata-cpu-vexriscv``
*ignore* their ``ERR`` inputs (their Wishbone bridges tie the internal error flag to 0), so a bare
``err`` would hang them. :class:`hw.wishbone.ErrorCatcher` therefore turns ``err`` into ``ack``
with read data 0 at each CPU bus, and the failed access is recorded in ``BERR_*``:

- the record raises external interrupt line 0 (``externalInterruptArray[0]``) and the
  ``bus_error`` output until software clears it;
- a failed load returns 0, a failed store is dropped; the interrupt follows a few instructions
  later (imprecise);
- a failed instruction fetch returns the word 0, an illegal instruction, so the core also takes a
  precise illegal-instruction trap at the faulting PC;
- with the caches of the default variant, a failed refill leaves a line of zeros in the cache, so
  later accesses to that line hit and raise nothing more (it stays wrong until the next reset).

The firmware runtime (``fw/runtime.c``) enables line 0 at boot and reports both to the mailbox.

Interrupts, timer
-----------------
``externalInterruptArray`` = ``{irq[30:0], bus_error}``: line 0 is the bus-error record, lines
1–31 are the ``irq`` input (e.g. command-processor completion). VexRiscv's CSR 0xBC0 masks them
and CSR 0xFC0 shows the pending ones; any unmasked line raises the machine external interrupt.
``timerInterrupt`` and ``softwareInterrupt`` are tied to 0 (no CLINT); firmware can poll
``CYCLE_*`` instead. The ``small`` CSR configuration of these cores has no ``mcycle``.

Host port and reset
-------------------
``cpu_reset`` holds the CPU and its bus fabric (decoders, RAM handshakes, core-local registers) in
reset; the RAM contents are kept. Whatever drives it should come out of system reset *asserted*,
so the core does not run an empty IMEM. ``host`` is a one-cycle write port in the core's
(word) address space: a write with ``en`` high lands in IMEM or DMEM if ``addr`` falls in one;
anything else is ignored. It may be used at any time (it takes priority over the core's own stores,
which then wait a cycle), but is meant for loading firmware and data while the core is in reset.
Boot address: ``IMEM_BASE``.

Variants
--------
See :data:`VARIANTS`; all are pre-generated by ``pythondata-cpu-vexriscv`` with the top module
``VexRiscv`` and the same ports, so only one can be in a Verilator build. The default is
``VexRiscv`` (RV32IM, 4 KB I$ and D$, single-cycle multiplier, barrel shifter). Measured with
``fw/selftest.c`` (fib(15) plus a small GEMM, divisions, 64-bit products, CRC-32) under
cocotb/Verilator 5.048:

==============  ==============  ================  ====================  ==================
Variant         selftest        of which fib(15)  simulation speed      Verilator build
==============  ==============  ================  ====================  ==================
VexRiscv        46.8 k cycles   34.7 k cycles     ~115 k cycles/s       ~45 s
VexRiscv_Lite   93.7 k cycles   45.5 k cycles     ~120 k cycles/s       ~45 s
VexRiscv_Min    1.96–2.08 M     66.4 k cycles     ~150–190 k cycles/s   ~40 s
==============  ==============  ================  ====================  ==================

``VexRiscv_Min`` is 40× slower on arithmetic: without M, compiler-rt multiplies and divides with
shift loops, and its shifter moves one bit per cycle. The simulation speed is about the same for
all three (the cocotb/VPI time step dominates), so the fastest core is also the fastest to
simulate. Boot (reset release to ``main``'s first MMIO access) takes about 1.2 k cycles, mostly
the caches' invalidation and ``crt0`` clearing ``.bss``.
"""

from pathlib import Path

from amaranth.hdl import (Cat, ClockSignal, Const, Instance, Module, ResetInserter, ResetSignal,
                          Signal)
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import wishbone
from .wishbone import Decoder, ErrorCatcher, SRAM, host_write_signature

__all__ = [
    "IMEM_BASE", "DMEM_BASE", "SYS_BASE", "SYS_SIZE", "MMIO_BASE", "MMIO_SIZE",
    "VARIANTS", "DEFAULT_VARIANT", "DEFAULT_IMEM_SIZE", "DEFAULT_DMEM_SIZE",
    "vexriscv_source", "firmware_cpu", "CoreLocal", "ControlCore",
]

IMEM_BASE = 0x0000_0000
DMEM_BASE = 0x1000_0000
SYS_BASE = 0xF000_0000  # bit 31 set: uncached, like MMIO
SYS_SIZE = 0x1000
MMIO_BASE = 0x8000_0000
MMIO_SIZE = 0x1000_0000

# Core-local register offsets (bytes) and BERR_STATUS fields.
SYS_BERR_STATUS = 0x00
SYS_BERR_ADDR = 0x04
SYS_CYCLE_LO = 0x08
SYS_CYCLE_HI = 0x0C
BERR_FETCH, BERR_LOAD, BERR_STORE = 0, 1, 2

#: Supported VexRiscv variants (file ``<name>.v`` of ``pythondata-cpu-vexriscv``): whether they
#: implement M, and a summary.
VARIANTS = {
    "VexRiscv": (True, "RV32IM, 4 KB I$ + 4 KB write-through D$, 1-cycle MUL, 33-cycle DIV, "
                       "barrel shifter, bypassing, static branch prediction"),
    "VexRiscv_Lite": (True, "RV32IM with iterative MUL/DIV, 2 KB I$, no D$, multi-cycle shifts"),
    "VexRiscv_Min": (False, "RV32I, no caches, no bypassing, no branch prediction"),
}
DEFAULT_VARIANT = "VexRiscv"
DEFAULT_IMEM_SIZE = 16 * 1024
DEFAULT_DMEM_SIZE = 8 * 1024


def _check_variant(variant):
    if variant not in VARIANTS:
        raise ValueError(f"unknown VexRiscv variant {variant!r}; choose one of "
                         f"{sorted(VARIANTS)!r}")


def vexriscv_source(variant=DEFAULT_VARIANT):
    """Path of the variant's Verilog, to pass to Verilator beside the generated file."""
    _check_variant(variant)
    import pythondata_cpu_vexriscv
    path = Path(pythondata_cpu_vexriscv.data_location) / f"{variant}.v"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from pythondata-cpu-vexriscv")
    return path


def firmware_cpu(variant=DEFAULT_VARIANT):
    """The compiler's ``-mcpu`` for firmware running on ``variant``."""
    _check_variant(variant)
    return "generic_rv32+m" if VARIANTS[variant][0] else "generic_rv32"


def _error_signature(addr_width):
    return wiring.Signature({"valid": Out(1), "adr": Out(addr_width), "we": Out(1)})


class CoreLocal(wiring.Component):
    """The core-local registers: bus-error record and cycle counter (see the module docstring).

    Members
    -------
    bus : In(wishbone.Signature(addr_width=10))
    ierr, derr : In(error signature)
        Failed accesses reported by the iBus and dBus :class:`~hw.wishbone.ErrorCatcher`.
    pending : Out(1)
        A bus error is recorded (interrupt line 0).
    """

    def __init__(self):
        super().__init__({
            "bus": In(wishbone.Signature(addr_width=(SYS_SIZE // 4).bit_length() - 1)),
            "ierr": In(_error_signature(30)),
            "derr": In(_error_signature(30)),
            "pending": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        overflow = Signal()
        kind = Signal(2)
        addr = Signal(32)
        cycle = Signal(64)
        m.d.sync += cycle.eq(cycle + 1)

        regs = {
            SYS_BERR_STATUS // 4: Cat(self.pending, overflow, kind),
            SYS_BERR_ADDR // 4: addr,
            SYS_CYCLE_LO // 4: cycle[:32],
            SYS_CYCLE_HI // 4: cycle[32:],
        }
        ack = Signal()
        err = Signal()
        req = Signal()
        m.d.comb += [
            req.eq(bus.cyc & bus.stb & ~ack & ~err),
            bus.ack.eq(ack),
            bus.err.eq(err),
        ]
        m.d.sync += [ack.eq(0), err.eq(0)]
        with m.If(req):
            m.d.sync += err.eq(1)
            for index, value in regs.items():
                with m.If(bus.adr == index):
                    m.d.sync += [ack.eq(1), err.eq(0), bus.dat_r.eq(value)]

        clear = Signal()
        m.d.comb += clear.eq(req & bus.we & (bus.adr == SYS_BERR_STATUS // 4)
                             & bus.sel[0] & bus.dat_w[0])
        with m.If(clear):
            m.d.sync += [self.pending.eq(0), overflow.eq(0)]
        ierr, derr = self.ierr, self.derr
        with m.If(ierr.valid | derr.valid):
            with m.If(~self.pending | clear):
                m.d.sync += [
                    self.pending.eq(1),
                    overflow.eq(ierr.valid & derr.valid),
                    kind.eq(BERR_FETCH),
                    addr.eq(Cat(Const(0, 2), ierr.adr)),
                ]
                with m.If(~ierr.valid):
                    m.d.sync += [
                        kind.eq(Cat(~derr.we, derr.we)),  # 1 load, 2 store
                        addr.eq(Cat(Const(0, 2), derr.adr)),
                    ]
            with m.Else():
                m.d.sync += overflow.eq(1)
        return m


class ControlCore(wiring.Component):
    """VexRiscv with IMEM, DMEM, core-local registers and an MMIO window (see the module docs).

    Parameters
    ----------
    variant : str
        A key of :data:`VARIANTS`; its ``.v`` file must be compiled beside the generated Verilog
        (:func:`vexriscv_source`).
    imem_size, dmem_size : int
        Bytes of IMEM and DMEM, powers of two (defaults 16 KB and 8 KB; at most 256 MB). The
        firmware's ``fw/link.ld`` must agree.
    imem_init, dmem_init : iterable of int
        Optional initial words (simulation; normally the host loads the firmware).

    Members
    -------
    cpu_reset : In(1)
        Hold the CPU and its fabric in reset.
    host : In(host_write_signature(30))
        Host write port: ``en``, ``addr`` (word address in the core's map), ``data``, ``sel``.
    mmio : Out(wishbone.Signature(addr_width=26))
        Wishbone classic initiator for the MMIO window; ``adr`` is the word offset from
        ``MMIO_BASE``. Only single accesses (no bursts); ``err`` is accepted and reported as a
        bus error.
    irq : In(31)
        External interrupt lines 1–31 of the core.
    bus_error : Out(1)
        A bus error is recorded and not yet cleared by the firmware.
    """

    def __init__(self, *, variant=DEFAULT_VARIANT, imem_size=DEFAULT_IMEM_SIZE,
                 dmem_size=DEFAULT_DMEM_SIZE, imem_init=(), dmem_init=()):
        _check_variant(variant)
        for name, size in (("imem_size", imem_size), ("dmem_size", dmem_size)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 64 \
                    or size & (size - 1) or size > 0x1000_0000:
                raise ValueError(f"{name} must be a power of two in [64, 256 MB], not {size!r}")
        self.variant = variant
        self.imem_size, self.dmem_size = imem_size, dmem_size
        self.imem_init, self.dmem_init = list(imem_init), list(dmem_init)
        super().__init__({
            "cpu_reset": In(1),
            "host": In(host_write_signature(30)),
            "mmio": Out(wishbone.Signature(addr_width=(MMIO_SIZE // 4).bit_length() - 1)),
            "irq": In(31),
            "bus_error": Out(1),
        })

    @property
    def source(self):
        """The VexRiscv Verilog file this core needs."""
        return vexriscv_source(self.variant)

    def elaborate(self, platform):
        m = Module()
        fabric = ResetInserter(self.cpu_reset)

        imem = SRAM(size=self.imem_size, ports=("r", "rw"), burst=True, init=self.imem_init)
        dmem = SRAM(size=self.dmem_size, ports=("rw",), burst=True, init=self.dmem_init)
        sysregs = CoreLocal()
        icatch = ErrorCatcher(wishbone.Signature(addr_width=30, burst=True))
        dcatch = ErrorCatcher(wishbone.Signature(addr_width=30, burst=True))
        idec = Decoder(addr_width=30, burst=True, windows={
            "imem": (IMEM_BASE, self.imem_size),
        })
        ddec = Decoder(addr_width=30, burst=True, windows={
            "imem": (IMEM_BASE, self.imem_size),
            "dmem": (DMEM_BASE, self.dmem_size),
            "sys": (SYS_BASE, SYS_SIZE, False),
            "mmio": (MMIO_BASE, MMIO_SIZE, False),
        })
        m.submodules.imem = fabric(imem)
        m.submodules.dmem = fabric(dmem)
        m.submodules.sysregs = fabric(sysregs)
        m.submodules.icatch = icatch
        m.submodules.dcatch = dcatch
        m.submodules.idec = fabric(idec)
        m.submodules.ddec = fabric(ddec)

        wiring.connect(m, icatch.sub, idec.bus)
        wiring.connect(m, idec.subs.imem, imem.buses[0])
        wiring.connect(m, dcatch.sub, ddec.bus)
        wiring.connect(m, ddec.subs.imem, imem.buses[1])
        wiring.connect(m, ddec.subs.dmem, dmem.buses[0])
        wiring.connect(m, ddec.subs.sys, sysregs.bus)
        wiring.connect(m, ddec.subs.mmio, wiring.flipped(self.mmio))
        wiring.connect(m, icatch.error, sysregs.ierr)
        wiring.connect(m, dcatch.error, sysregs.derr)
        m.d.comb += self.bus_error.eq(sysregs.pending)

        # Host writes: decode the word address into IMEM or DMEM.
        host = self.host
        for ram, base in ((imem, IMEM_BASE), (dmem, DMEM_BASE)):
            aw = ram.addr_width
            hit = host.addr[aw:] == (base >> 2) >> aw
            m.d.comb += [
                ram.host.en.eq(host.en & hit),
                ram.host.addr.eq(host.addr[:aw]),
                ram.host.data.eq(host.data),
                ram.host.sel.eq(host.sel),
            ]

        ib, db = icatch.bus, dcatch.bus
        ibus_dat_w = Signal(32)  # the iBus never writes; VexRiscv drives x here
        m.submodules.cpu = Instance(
            "VexRiscv",
            i_clk=ClockSignal(),
            i_reset=ResetSignal() | self.cpu_reset,
            i_externalResetVector=Const(IMEM_BASE, 32),
            i_timerInterrupt=Const(0, 1),
            i_softwareInterrupt=Const(0, 1),
            i_externalInterruptArray=Cat(sysregs.pending, self.irq),
            o_iBusWishbone_CYC=ib.cyc,
            o_iBusWishbone_STB=ib.stb,
            i_iBusWishbone_ACK=ib.ack,
            o_iBusWishbone_WE=ib.we,
            o_iBusWishbone_ADR=ib.adr,
            i_iBusWishbone_DAT_MISO=ib.dat_r,
            o_iBusWishbone_DAT_MOSI=ibus_dat_w,
            o_iBusWishbone_SEL=ib.sel,
            i_iBusWishbone_ERR=ib.err,
            o_iBusWishbone_CTI=ib.cti,
            o_iBusWishbone_BTE=ib.bte,
            o_dBusWishbone_CYC=db.cyc,
            o_dBusWishbone_STB=db.stb,
            i_dBusWishbone_ACK=db.ack,
            o_dBusWishbone_WE=db.we,
            o_dBusWishbone_ADR=db.adr,
            i_dBusWishbone_DAT_MISO=db.dat_r,
            o_dBusWishbone_DAT_MOSI=db.dat_w,
            o_dBusWishbone_SEL=db.sel,
            i_dBusWishbone_ERR=db.err,
            o_dBusWishbone_CTI=db.cti,
            o_dBusWishbone_BTE=db.bte,
        )
        return m
