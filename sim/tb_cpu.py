"""cocotb testbench for the control core (``hw/cpu.py``) running firmware from ``fw/``.

Run through ``tests/test_cpu.py``, which builds the firmware and passes, in the environment:

- ``EMBER_CONFIG``: the preset (JSON, as for every testbench);
- ``EMBER_CPU``: ``{"variant": ..., "imem_size": ..., "dmem_size": ...}`` of the DUT;
- ``EMBER_FIRMWARE``: ``{program name: path of its .bin}``.

The TB loads a program through the host write port while it holds ``cpu_reset``, fills DMEM with
random words first (so ``crt0`` must really copy ``.data`` and clear ``.bss``), releases the core,
and models the MMIO subordinate in Python (:class:`MmioModel`): the mailbox of ``fw/ember.h``
and a plain word store for every other offset, with optional random wait states. Every value the
firmware reports is recomputed here. Each run is bounded: a program that does not finish within
its cycle budget fails the test with what the mailbox got so far.

The MMIO model and the completion wait do not wake Python every cycle (the model sleeps on a rising
``stb`` while the bus is idle), so the core runs at Verilator speed between MMIO accesses. Each
cocotb test writes ``cpu_report.json`` (cycles and simulation speed) in its run directory.
"""

import dataclasses
import itertools
import json
import os
import time
import zlib

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, First, RisingEdge, Timer
from cocotb.utils import get_sim_time

from hw.config import EmberConfig
from sim.firmware import load_words
from sim.streams import random_seed

PERIOD_NS = 10

# Memory map (hw/cpu.py) and mailbox (fw/ember.h); tests/test_cpu.py checks that they agree.
IMEM_BASE = 0x0000_0000
DMEM_BASE = 0x1000_0000
SYS_BASE = 0xF000_0000
MMIO_BASE = 0x8000_0000
MBOX_OFFSET = 0x0FFF_F000
MBOX_DATA, MBOX_TRAP, MBOX_DONE, MBOX_PUTC, MBOX_ARG0 = 0x000, 0x004, 0x008, 0x00C, 0x010
MBOX_ERR = 0x0FFF_FFFC  # fw/buserror.c: the model answers this offset with err
MCAUSE_MEI = 0x8000_000B
MCAUSE_ILLEGAL = 2
EXIT_TRAP = 0xBAD0_0000
BERR_FETCH, BERR_LOAD, BERR_STORE = 0, 1, 2

MASK32 = (1 << 32) - 1

# Cycle budgets are set for the default variant and scaled for the slower ones.
BUDGET_SCALE = {"VexRiscv": 1, "VexRiscv_Lite": 4, "VexRiscv_Min": 10}




class MmioModel:
    """Wishbone classic subordinate on ``mmio__*``.

    Offsets (bytes from ``MMIO_BASE``) in the mailbox page behave as ``fw/ember.h`` documents;
    :data:`MBOX_ERR` and the offsets in ``err_offsets`` answer ``err``; everything else is a
    byte-maskable word store (reads of never-written words return 0). Each access is logged in
    ``accesses`` as ``(offset, we, sel, data)``.

    ``ack``/``err`` come one cycle after the request, plus the number of wait states drawn from
    ``wait_pattern`` (an iterator of ints, e.g. an ``itertools.cycle``), one draw per access.
    The model checks that the initiator holds the request unchanged until it is answered.
    """

    def __init__(self, dut, wait_pattern=None):
        self.dut = dut
        self.clk = dut.clk
        self.log = dut._log
        self.wait_pattern = wait_pattern
        self.err_offsets = {MBOX_ERR}
        self.args = []
        self.store = {}
        self.protocol_errors = []
        self.clear()
        dut.mmio__ack.value = 0
        dut.mmio__err.value = 0
        dut.mmio__dat_r.value = 0

    def clear(self):
        """Forget the logs of the previous program (the word store is kept)."""
        self.data, self.traps, self.accesses = [], [], []
        self.text = ""
        self.exit_code = None
        self.done_time = None
        self.first_time = None
        self.done = Event()

    def _read(self, offset):
        if MBOX_OFFSET + MBOX_ARG0 <= offset < MBOX_OFFSET + 0x1000:
            index = (offset - MBOX_OFFSET - MBOX_ARG0) // 4
            return self.args[index] & MASK32 if index < len(self.args) else 0
        return self.store.get(offset, 0)

    def _write(self, offset, sel, value):
        if offset == MBOX_OFFSET + MBOX_DATA:
            self.data.append(value)
        elif offset == MBOX_OFFSET + MBOX_TRAP:
            self.traps.append(value)
        elif offset == MBOX_OFFSET + MBOX_PUTC:
            self.text += chr(value & 0xFF)
            if self.text.endswith("\n"):
                self.log.info("firmware: %s", self.text.splitlines()[-1])
        elif offset == MBOX_OFFSET + MBOX_DONE:
            if self.exit_code is None:
                self.exit_code = value
                self.done_time = get_sim_time("ns")
                self.done.set()
            else:
                self.protocol_errors.append(f"second DONE write ({value:#x})")
        else:
            old = self.store.get(offset, 0)
            mask = sum(0xFF << (8 * i) for i in range(4) if sel >> i & 1)
            self.store[offset] = (old & ~mask) | (value & mask)

    async def run(self):
        dut = self.dut
        edge = RisingEdge(self.clk)
        cyc, stb = dut.mmio__cyc, dut.mmio__stb
        while True:
            await edge
            # Values read here are those of the cycle that just ended.
            if not (cyc.value and stb.value):
                if not stb.value:
                    await RisingEdge(stb)  # idle: sleep until the next request
                continue
            request = (dut.mmio__adr.value.to_unsigned(), int(dut.mmio__we.value),
                       dut.mmio__sel.value.to_unsigned(), dut.mmio__dat_w.value.to_unsigned())
            adr, we, sel, wdata = request
            offset = adr * 4
            if self.first_time is None:
                self.first_time = get_sim_time("ns") - PERIOD_NS  # the request's cycle
            waits = next(self.wait_pattern) if self.wait_pattern is not None else 0
            aborted = False
            for _ in range(waits):
                await edge
                held = (cyc.value and stb.value and
                        (dut.mmio__adr.value.to_unsigned(), int(dut.mmio__we.value),
                         dut.mmio__sel.value.to_unsigned(),
                         dut.mmio__dat_w.value.to_unsigned()) == request)
                if not held:
                    self.protocol_errors.append(f"request {request} changed or was dropped "
                                                f"before it was answered")
                    aborted = True
                    break
            if aborted:
                continue
            self.accesses.append((offset, we, sel, wdata if we else None))
            if offset in self.err_offsets:
                dut.mmio__err.value = 1
            else:
                if we:
                    self._write(offset, sel, wdata)
                else:
                    dut.mmio__dat_r.value = self._read(offset)
                dut.mmio__ack.value = 1
            await edge  # the initiator takes the answer at this edge
            dut.mmio__ack.value = 0
            dut.mmio__err.value = 0


@dataclasses.dataclass
class RunResult:
    name: str
    exit_code: int
    cycles: int
    boot_cycles: int
    wall_s: float
    data: list
    traps: list
    text: str
    accesses: list

    @property
    def cycles_per_s(self):
        return self.cycles / self.wall_s if self.wall_s > 0 else float("inf")


class TB:
    """Clock, reset, host loader and MMIO model of one ControlCore DUT."""

    def __init__(self, dut, *, waits=False):
        self.dut = dut
        self.log = dut._log
        self.cfg = EmberConfig.from_json(os.environ["EMBER_CONFIG"])
        self.cpu = json.loads(os.environ["EMBER_CPU"])
        self.firmware = json.loads(os.environ["EMBER_FIRMWARE"])
        self.seed = random_seed()
        self.rng = np.random.default_rng(self.seed)
        self.log.info("cpu %s, seed %d (replay with EMBER_SEED=%d)",
                      self.cpu, self.seed, self.seed)
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
        pattern = None
        if waits:
            # Mostly short, sometimes long, reproducible wait states; prime length.
            draws = self.rng.choice([0, 0, 0, 1, 1, 2, 3, 7], size=53)
            pattern = itertools.cycle(int(x) for x in draws)
        self.mmio = MmioModel(dut, pattern)
        self.report = {"cpu": self.cpu, "runs": []}
        dut.host__en.value = 0
        dut.host__addr.value = 0
        dut.host__data.value = 0
        dut.host__sel.value = 0
        dut.irq.value = 0

    async def reset(self):
        self.dut.rst.value = 1
        self.dut.cpu_reset.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        cocotb.start_soon(self.mmio.run())

    async def host_write(self, byte_addr, words):
        """Write ``words`` from ``byte_addr`` on, one per cycle, through the host port."""
        dut = self.dut
        edge = RisingEdge(dut.clk)
        dut.host__sel.value = 0xF
        for i, word in enumerate(words):
            dut.host__en.value = 1
            dut.host__addr.value = (byte_addr >> 2) + i
            dut.host__data.value = int(word) & MASK32
            await edge
        dut.host__en.value = 0

    async def run_program(self, name, *, args=(), max_cycles):
        """Load ``name`` with the core in reset, release it, wait (bounded) for DONE."""
        dut = self.dut
        max_cycles *= BUDGET_SCALE.get(self.cpu["variant"], 10)
        dut.cpu_reset.value = 1
        await ClockCycles(dut.clk, 2)
        words = load_words(self.firmware[name])
        assert len(words) * 4 <= self.cpu["imem_size"], f"{name} does not fit in IMEM"
        garbage = self.rng.integers(0, 1 << 32, self.cpu["dmem_size"] // 4, dtype=np.uint64)
        await self.host_write(DMEM_BASE, garbage)
        await self.host_write(IMEM_BASE, words)
        self.mmio.clear()
        self.mmio.args = list(args)
        await RisingEdge(dut.clk)
        dut.cpu_reset.value = 0
        start = get_sim_time("ns")
        wall = time.perf_counter()
        await First(self.mmio.done.wait(), Timer(max_cycles * PERIOD_NS, "ns"))
        wall = time.perf_counter() - wall
        mmio = self.mmio
        if mmio.exit_code is None:
            raise AssertionError(
                f"{name} did not finish within {max_cycles} cycles: mailbox data "
                f"{[hex(v) for v in mmio.data]}, traps {[hex(v) for v in mmio.traps]}, "
                f"text {mmio.text!r}, last accesses {mmio.accesses[-8:]}")
        cycles = round((mmio.done_time - start) / PERIOD_NS)
        # Boot: from reset release to the first MMIO access (crt0 done, main's first load).
        boot_cycles = round((mmio.first_time - start) / PERIOD_NS)
        # The program must stay quiet after DONE (ember_exit spins with interrupts off).
        seen = len(mmio.accesses)
        await ClockCycles(dut.clk, 200)
        assert len(mmio.accesses) == seen, f"{name}: MMIO accesses after DONE: " \
                                           f"{mmio.accesses[seen:]}"
        assert not mmio.protocol_errors, f"{name}: {mmio.protocol_errors}"
        result = RunResult(name, mmio.exit_code, cycles, boot_cycles, wall, list(mmio.data),
                           list(mmio.traps), mmio.text, list(mmio.accesses))
        self.log.info("%s: exit %#x after %d cycles (first MMIO access after %d; %.2f s wall, "
                      "%.0f cycles/s), %d MMIO accesses", name, result.exit_code, cycles,
                      boot_cycles, wall, result.cycles_per_s, len(result.accesses))
        self.report["runs"].append({
            "program": name, "cycles": cycles, "boot_cycles": boot_cycles, "wall_s": wall,
            "cycles_per_s": result.cycles_per_s, "mmio_accesses": len(result.accesses),
            "fib_cycles": None,
        })
        return result

    def write_report(self):
        with open("cpu_report.json", "w") as f:
            json.dump(self.report, f, indent=1)


# ---------------------------------------------------------------------------------------------
# Reference values, computed independently of the firmware.

def _s32(x):
    x &= MASK32
    return x - (1 << 32) if x >> 31 else x


def _s8(x):
    x &= 0xFF
    return x - 256 if x >> 7 else x


def _cdiv(a, b):
    """C division: truncation toward zero; returns (quotient, remainder)."""
    q = abs(a) // abs(b)
    if (a < 0) != (b < 0):
        q = -q
    return q, a - q * b


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def expected_selftest(n, seed, irq):
    """The mailbox DATA words of ``fw/selftest.c`` except word 1 (fib's cycle count)."""
    state = seed & MASK32

    def lcg():
        nonlocal state
        state = (state * 1664525 + 1013904223) & MASK32
        return state

    def lcg_range(lo, hi):
        return lo + lcg() % (hi - lo + 1)

    M, K, N = 5, 6, 7
    out = [fib(n) & MASK32]
    a = np.array([[lcg_range(-1000, 1000) for _ in range(K)] for _ in range(M)], np.int64)
    b = np.array([[lcg_range(-1000, 1000) for _ in range(N)] for _ in range(K)], np.int64)
    c = a @ b
    out += [int(v) & MASK32 for v in c.flatten()]
    for v in c.flatten():
        d = lcg_range(-48, 47)
        d = d + 1 if d >= 0 else d
        q, r = _cdiv(int(v), d)
        out += [q & MASK32, r & MASK32]
    out += [MASK32 // (seed | 1), MASK32 % (seed | 1)]
    x, y = _s32(lcg()), _s32(lcg())
    for p in (x * y, (x & MASK32) * (y & MASK32), x * (y & MASK32)):
        p &= (1 << 64) - 1
        out += [p & MASK32, p >> 32]
    va, vb = [], []
    for _ in range(64):
        va.append(_s8(lcg()))
        vb.append(_s8(lcg() >> 8))
    out.append(sum(p * q for p, q in zip(va, vb)) & MASK32)
    out.append(zlib.crc32(b"Ember control core self-test"))
    words = [0x01234567, 0x89ABCDEF, 0xDEADBEEF, 42]
    out.append(sum(words) & MASK32)
    out.append(words[3] + 1)
    out.append(0)  # non-zero words left in .bss
    lanes = bytearray(8)
    lanes[0], lanes[3] = 0x11, 0x44
    lanes[2] |= 0x33
    lanes[1] = 0x22
    lanes[4:6] = (0x6655).to_bytes(2, "little")
    lanes[7] = 0x88
    lanes[6] = (lanes[5] + 0x11) & 0xFF
    out += [int.from_bytes(lanes[:4], "little"), int.from_bytes(lanes[4:], "little")]
    out.append((irq << 1) & MASK32)  # externalInterruptArray = {irq, bus error}
    return out


def check_data(name, got, want, skip=()):
    """Compare mailbox words, ignoring the indices in ``skip``; fail at the first difference."""
    assert len(got) == len(want), \
        f"{name}: {len(got)} mailbox words, want {len(want)}: {[hex(v) for v in got]}"
    for i, (g, w) in enumerate(zip(got, want)):
        if i not in skip and g != w:
            raise AssertionError(f"{name}: mailbox word {i} is {g:#x}, want {w:#x}")


async def run_selftest(tb, *, n, seed, label="selftest"):
    max_cycles = 400_000 + 60 * fib(n + 1)
    irq = (seed * 2654435761) & 0x7FFF_FFFF
    tb.dut.irq.value = irq
    result = await tb.run_program("selftest", args=(n, seed), max_cycles=max_cycles)
    tb.dut.irq.value = 0
    assert result.exit_code == 0, \
        f"selftest exit code {result.exit_code:#x}; traps {[hex(v) for v in result.traps]}"
    assert not result.traps, f"selftest trapped: {[hex(v) for v in result.traps]}"
    want = expected_selftest(n, seed, irq)
    want.insert(1, None)  # fib's cycle count, checked for plausibility below
    check_data(label, result.data, want, skip={1})
    fib_cycles = result.data[1]
    assert 0 < fib_cycles < result.cycles, f"fib took {fib_cycles} of {result.cycles} cycles"
    # Byte and halfword stores to MMIO carry the right byte enables and lanes.
    writes = [(o, s, d) for o, we, s, d in result.accesses if we and o < MBOX_OFFSET]
    assert (0x100, 0b0010, 0xAB) in [(o, s, (d >> 8) & 0xFF) for o, s, d in writes], writes
    assert (0x104, 0b1100, 0xBEEF) in [(o, s, d >> 16) for o, s, d in writes], writes
    assert tb.mmio.store[0x100] == 0xAB << 8 and tb.mmio.store[0x104] == 0xBEEF << 16
    tb.report["runs"][-1]["fib_cycles"] = fib_cycles
    tb.report["runs"][-1]["n"] = n
    tb.log.info("%s: fib(%d) = %d in %d cycles; whole program %d cycles", label, n,
                result.data[0], fib_cycles, result.cycles)
    return result


def check_bus_errors(tb, result):
    imem_end = IMEM_BASE + tb.cpu["imem_size"]
    check_data("buserror", result.data, [0, 1, 1, 0, 1, 1, 0, 1, 0x600D])
    traps = [result.traps[i:i + 3] for i in range(0, len(result.traps), 3)]
    want = [
        (BERR_LOAD, 0x3000_0000),
        (BERR_STORE, imem_end),
        (BERR_LOAD, MMIO_BASE + MBOX_ERR),
        (BERR_STORE, MMIO_BASE + MBOX_ERR),
        (BERR_LOAD, SYS_BASE + 0x10),
    ]
    assert len(traps) == len(want) + 1 and len(traps[-1]) == 3, \
        f"trap reports {[[hex(v) for v in t] for t in traps]}"
    for i, ((mcause, status, addr), (kind, want_addr)) in enumerate(zip(traps, want)):
        assert mcause == MCAUSE_MEI, f"trap {i}: mcause {mcause:#x}"
        assert status & 1 and (status >> 2) & 3 == kind and addr == want_addr, \
            f"trap {i}: BERR_STATUS {status:#x}, BERR_ADDR {addr:#x}; want kind {kind}, " \
            f"address {want_addr:#x}"
    # The fetch from 0x4000_0000: whichever of the bus-error interrupt and the illegal-instruction
    # exception (the failed fetch returned 0) the core takes first is reported, then it stops.
    mcause, b, c = traps[-1]
    if mcause == MCAUSE_MEI:
        assert b & 1 and (b >> 2) & 3 == BERR_FETCH and c == 0x4000_0000, \
            [hex(v) for v in traps[-1]]
        assert result.exit_code == EXIT_TRAP | 0x100 | 11
    else:
        assert mcause == MCAUSE_ILLEGAL and b == 0x4000_0000, [hex(v) for v in traps[-1]]
        assert result.exit_code == EXIT_TRAP | MCAUSE_ILLEGAL
    tb.log.info("bus errors: %s; fetch error reported as mcause %#x",
                [(hex(t[0]), hex(t[1]), hex(t[2])) for t in traps], mcause)


# ---------------------------------------------------------------------------------------------

@cocotb.test()
@cocotb.parametrize(waits=[False, True])
async def selftest(dut, waits):
    """Boot, run fw/selftest.c (fib(15), GEMM, M extension, memory widths), check every result."""
    tb = TB(dut, waits=waits)
    await tb.reset()
    await run_selftest(tb, n=15, seed=tb.seed & MASK32 or 1)
    tb.write_report()


@cocotb.test()
async def bus_errors(dut):
    """Unmapped loads/stores, MMIO err and an unmapped fetch: reported, never a hang."""
    tb = TB(dut, waits=True)
    await tb.reset()
    result = await tb.run_program("buserror", max_cycles=200_000)
    check_bus_errors(tb, result)
    tb.write_report()


@cocotb.test()
async def reload(dut):
    """Run one program, hold the core in reset, load another and run it: caches start clean."""
    tb = TB(dut)
    await tb.reset()
    check_bus_errors(tb, await tb.run_program("buserror", max_cycles=200_000))
    await run_selftest(tb, n=12, seed=0x1234_5678, label="selftest after reload")
    await run_selftest(tb, n=15, seed=7, label="selftest again")
    tb.write_report()
