"""cocotb testbench for the scratchpad (``hw/sram.py``).

Every port issues random reads and byte-masked writes; a Python model of the memory is updated in
grant order, so each read must return exactly the model's word, exactly ``READ_LATENCY`` cycles
after its grant. The whole memory is read back at the end and compared. A second test checks
that round-robin arbitration is fair and starvation-free, and a third, on a scratchpad built
with ``yields`` (``EMBER_SRAM_YIELDS``, "low:high"), that a yielding port never takes a bank from
the port it yields to and still gets every bank that port leaves free. A fourth, on a scratchpad
built with ``b_side`` (``EMBER_SRAM_B_SIDE``, "0,1"), checks the two sides of its dual-ported
pairs; there, the random traffic model leaves undefined what a same-cycle collision of the two
sides on one word makes undefined in the block RAM.
"""

import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from hw.config import EmberConfig
from sim.streams import random_seed

READ_LATENCY = 3
PORTS = 4




class TB:
    """Owns the clock, reset and the per-port request drivers of one scratchpad DUT."""

    def __init__(self, dut):
        self.dut = dut
        self.log = dut._log
        self.cfg = EmberConfig.from_json(os.environ["EMBER_CONFIG"])
        self.W = self.cfg.bus_bytes
        self.words = self.cfg.sram_banks * self.cfg.sram_depth
        self.seed = random_seed()
        self.rng = np.random.default_rng(self.seed)
        self.log.info("config %s, seed %d (replay with EMBER_SEED=%d)",
                      self.cfg.name, self.seed, self.seed)
        self.port = [{name: getattr(dut, f"ports__{i}__{name}")
                      for name in ("req__valid", "req__ready", "req__payload",
                                   "rsp__valid", "rsp__data")} for i in range(PORTS)]
        self.addr_bits = max((self.words - 1).bit_length(), 1)
        self.model = [0] * self.words
        # Bytes the model does not know: a same-cycle collision of the two sides left them
        # undefined (hw/sram.py, "Dual-ported pairs"). Reads check only the other bytes.
        self.unknown = [0] * self.words
        self.collisions = 0
        spec = os.environ.get("EMBER_SRAM_YIELDS", "")
        self.yields = {int(a): int(b) for a, b in (x.split(":") for x in spec.split(",") if x)}
        spec = os.environ.get("EMBER_SRAM_B_SIDE", "")
        self.b_side = {int(x) for x in spec.split(",") if x}
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    async def reset(self):
        for p in self.port:
            p["req__valid"].value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0

    def encode(self, addr, we, wdata=0, wmask=0):
        a = self.addr_bits
        return addr | (we << a) | (wdata << (a + 1)) | (wmask << (a + 1 + 8 * self.W))

    def byte_mask(self, wmask):
        return sum(0xFF << (8 * b) for b in range(self.W) if (wmask >> b) & 1)

    def apply_write(self, addr, wdata, wmask):
        mask = self.byte_mask(wmask)
        self.model[addr] = (self.model[addr] & ~mask) | (wdata & mask)
        self.unknown[addr] &= ~mask

    def apply_grants(self, granted, cycle, expect):
        """Update the model with the accesses granted in ``cycle`` (``(port, request)``, in port
        order). One side's accesses go to different banks, but a dual-ported scratchpad's two
        sides may reach one word in the same cycle: a read that meets a write of the other side
        gets an undefined word, and the bytes that two writes both enable are undefined after
        them (the block RAM's address collision). Reads are modelled before writes."""
        by_addr = {}
        for port, req in granted:
            by_addr.setdefault(req[0], []).append((port, req))
        for addr, accesses in by_addr.items():
            writes = [req for _, req in accesses if req[1]]
            clash = len(accesses) > 1 and writes
            if clash:
                self.collisions += 1
            for port, (_, we, _, _) in accesses:
                if not we:
                    unknown = (1 << 8 * self.W) - 1 if clash else self.unknown[addr]
                    expect[port].append((cycle + READ_LATENCY, self.model[addr], unknown))
            for _, _, wdata, wmask in writes:
                self.apply_write(addr, wdata, wmask)
            if len(writes) > 1:
                self.unknown[addr] |= self.byte_mask(writes[0][3]) & self.byte_mask(writes[1][3])

    async def run_traffic(self, requests, *, idle_prob=0.0):
        """Issue ``requests[i]`` (lists of (addr, we, wdata, wmask)) on port i, all at once.

        Returns (grant cycles per port, max wait of any request in cycles).
        """
        pending = [list(reversed(r)) for r in requests]
        current = [None] * PORTS
        since = [0] * PORTS
        expect = [[] for _ in range(PORTS)]     # (due cycle, data)
        grants = [[] for _ in range(PORTS)]
        max_wait = 0
        cycle = 0
        limit = 50 * sum(len(r) for r in requests) + 100
        while cycle < limit:
            await RisingEdge(self.dut.clk)
            cycle += 1
            # Responses due this cycle (their data appear READ_LATENCY cycles after the grant).
            for i, p in enumerate(self.port):
                if p["rsp__valid"].value:
                    assert expect[i], f"port {i}: unexpected response in cycle {cycle}"
                    due, want, unknown = expect[i].pop(0)
                    got = p["rsp__data"].value.to_unsigned()
                    assert due == cycle, f"port {i}: response in cycle {cycle}, due {due}"
                    assert got & ~unknown == want & ~unknown, \
                        f"port {i}: read {got:#x}, want {want:#x} (seed {self.seed})"
                else:
                    assert not expect[i] or expect[i][0][0] != cycle, \
                        f"port {i}: missing response in cycle {cycle}"
            # Grants of the cycle just ended, applied to the model in grant order.
            granted = []
            for i, p in enumerate(self.port):
                if current[i] is not None and p["req__ready"].value:
                    granted.append((i, current[i]))
                    grants[i].append(cycle)
                    max_wait = max(max_wait, cycle - since[i])
                    current[i] = None
            self.apply_grants(granted, cycle, expect)
            # Present the next requests.
            for i, p in enumerate(self.port):
                if current[i] is None and pending[i] and self.rng.random() >= idle_prob:
                    current[i] = pending[i].pop()
                    since[i] = cycle
                    p["req__payload"].value = self.encode(*current[i])
                    p["req__valid"].value = 1
                elif current[i] is None:
                    p["req__valid"].value = 0
            if not any(pending) and all(c is None for c in current) and not any(expect):
                break
        assert not any(pending) and all(c is None for c in current), \
            f"requests still waiting after {limit} cycles: arbitration hung"
        assert not any(expect), "responses missing at the end"
        return grants, max_wait

    def random_requests(self, n, banks=None):
        out = []
        for _ in range(n):
            if banks is None:
                addr = int(self.rng.integers(0, self.words))
            else:
                bank = int(self.rng.choice(banks))
                addr = bank * self.cfg.sram_depth + int(self.rng.integers(0, self.cfg.sram_depth))
            we = int(self.rng.random() < 0.5)
            wdata = int.from_bytes(self.rng.bytes(self.W), "little")
            wmask = int.from_bytes(self.rng.bytes(self.W // 8), "little") if self.rng.random() < 0.5 \
                else (1 << self.W) - 1
            out.append((addr, we, wdata, wmask))
        return out

    async def check_whole_memory(self):
        """Read every word through port 0 and compare with the model."""
        reads = [(a, 0, 0, 0) for a in range(self.words)]
        await self.run_traffic([reads] + [[] for _ in range(PORTS - 1)])


@cocotb.test()
@cocotb.parametrize(contention=["spread", "hot_banks"], idle=[0.0, 0.4])
async def random_traffic(dut, contention, idle):
    """Random masked reads/writes on every port, checked word by word and as a whole image."""
    tb = TB(dut)
    await tb.reset()
    # Start from a known image written through the ports themselves.
    fill = [(a, 1, int.from_bytes(tb.rng.bytes(tb.W), "little"), (1 << tb.W) - 1)
            for a in range(tb.words)]
    await tb.run_traffic([fill[i::PORTS] for i in range(PORTS)])
    banks = None if contention == "spread" else [0, 1]
    await tb.run_traffic([tb.random_requests(600, banks) for _ in range(PORTS)], idle_prob=idle)
    tb.log.info("same-cycle collisions of the two sides on a word: %d", tb.collisions)
    await tb.check_whole_memory()


@cocotb.test()
async def fair_arbitration(dut):
    """All ports hammer one bank: grants rotate, nobody waits more than PORTS-1 cycles."""
    tb = TB(dut)
    await tb.reset()
    n = 400
    reqs = [[(int(tb.rng.integers(0, tb.cfg.sram_depth)), 0, 0, 0) for _ in range(n)]
            for _ in range(PORTS)]
    grants, max_wait = await tb.run_traffic(reqs)
    first, last = min(g[0] for g in grants), max(g[-1] for g in grants)
    tb.log.info("4 ports on one bank: %d grants in %d cycles, max wait %d",
                PORTS * n, last - first + 1, max_wait)
    assert last - first + 1 == PORTS * n, "the bank idled while requests were waiting"
    assert max_wait <= PORTS, f"a request waited {max_wait} cycles"
    # Round-robin: in every window of PORTS consecutive grants each port appears once.
    order = sorted((c, i) for i, g in enumerate(grants) for c in g)
    for k in range(0, len(order) - PORTS + 1, PORTS):
        assert sorted(i for _, i in order[k:k + PORTS]) == list(range(PORTS)), order[k:k + PORTS]


@cocotb.test()
async def parallel_banks(dut):
    """Ports on distinct banks are all granted every cycle: no false conflicts."""
    tb = TB(dut)
    await tb.reset()
    n = 300
    reqs = [[(i * tb.cfg.sram_depth + int(tb.rng.integers(0, tb.cfg.sram_depth)),
              i % 2, 0x5A, 1) for _ in range(n)] for i in range(PORTS)]
    grants, max_wait = await tb.run_traffic(reqs)
    assert max_wait == 1, f"a request on a private bank waited {max_wait} cycles"
    for g in grants:
        assert g[-1] - g[0] == n - 1, "a port on a private bank was not granted every cycle"


@cocotb.test()
async def yield_priority(dut):
    """Port ``low`` yields to ``high``: on a shared bank it is served only after ``high`` is
    done; on a bank ``high`` leaves free it is granted every cycle."""
    tb = TB(dut)
    await tb.reset()
    assert tb.yields, "this test needs a scratchpad built with yields (EMBER_SRAM_YIELDS)"
    (low, high), = tb.yields.items()
    other = next(i for i in range(PORTS) if i not in (low, high))
    n = 200
    depth = tb.cfg.sram_depth

    def on_bank(bank):
        return [(bank * depth + int(tb.rng.integers(0, depth)), 0, 0, 0) for _ in range(n)]

    # One bank for three ports: `high` and `other` alternate, `low` waits for `high` to finish.
    reqs = [[] for _ in range(PORTS)]
    reqs[low], reqs[high], reqs[other] = on_bank(0), on_bank(0), on_bank(0)
    grants, _ = await tb.run_traffic(reqs)
    tb.log.info("shared bank: %s last grant in cycle %d, %s first in cycle %d",
                high, grants[high][-1], low, grants[low][0])
    assert grants[low][0] > grants[high][-1], \
        f"port {low} was granted in cycle {grants[low][0]} while port {high} asked for the bank"
    assert grants[high][-1] - grants[high][0] == 2 * n - 2, \
        "the port yielded to did not share the bank round-robin with the third port"
    # Different banks: `low` is not held back by `high` elsewhere.
    reqs = [[] for _ in range(PORTS)]
    reqs[low], reqs[high] = on_bank(0), on_bank(1)
    grants, max_wait = await tb.run_traffic(reqs)
    assert max_wait == 1 and grants[low][-1] - grants[low][0] == n - 1, \
        f"port {low} waited on a bank port {high} did not ask for"
    await tb.check_whole_memory()


@cocotb.test()
async def dual_sides(dut):
    """A scratchpad built with ``b_side`` (``EMBER_SRAM_B_SIDE``): a side-B port and a side-A
    port are both granted every cycle on one bank; two side-A ports on the two banks of one pair
    share it round-robin; on banks of different pairs they are both granted every cycle."""
    tb = TB(dut)
    await tb.reset()
    assert tb.b_side, "this test needs a scratchpad built with b_side (EMBER_SRAM_B_SIDE)"
    b = min(tb.b_side)
    a0, a1 = [i for i in range(PORTS) if i not in tb.b_side][:2]
    n = 200
    depth = tb.cfg.sram_depth

    def on_bank(bank, parity, we):
        rows = tb.rng.integers(0, depth // 2, n) * 2 + parity
        return [(bank * depth + int(r), we, int.from_bytes(tb.rng.bytes(tb.W), "little"),
                 (1 << tb.W) - 1) for r in rows]

    # One bank, both sides (B writes the even words, A reads the odd ones): no waiting.
    reqs = [[] for _ in range(PORTS)]
    reqs[b], reqs[a0] = on_bank(0, 0, 1), on_bank(0, 1, 0)
    grants, max_wait = await tb.run_traffic(reqs)
    assert max_wait == 1, f"ports {b} (side B) and {a0} (side A) waited on each other"
    assert all(g[-1] - g[0] == n - 1 for g in (grants[b], grants[a0]))
    # One pair, one side: the two banks of a pair are one arbitration unit.
    reqs = [[] for _ in range(PORTS)]
    reqs[a0], reqs[a1] = on_bank(0, 0, 0), on_bank(1, 0, 1)
    grants, max_wait = await tb.run_traffic(reqs)
    first, last = min(grants[a0][0], grants[a1][0]), max(grants[a0][-1], grants[a1][-1])
    tb.log.info("two side-A ports on banks 0 and 1: %d grants in %d cycles", 2 * n,
                last - first + 1)
    assert last - first + 1 == 2 * n and max_wait <= 2, \
        "banks 0 and 1 were not shared round-robin by one side"
    # Different pairs: no conflict.
    reqs = [[] for _ in range(PORTS)]
    reqs[a0], reqs[a1] = on_bank(0, 0, 1), on_bank(2, 0, 0)
    grants, max_wait = await tb.run_traffic(reqs)
    assert max_wait == 1, "side-A ports on different pairs waited on each other"
    assert tb.collisions == 0, f"{tb.collisions} collisions in traffic built to have none"
    await tb.check_whole_memory()
