"""cocotb testbench for the command processor (``hw/cmdproc.py``) with Python model engines.

The engines accept commands under random backpressure and complete them in order after a random
latency. A ledger replays every issue and completion in cycle order and checks each semaphore:
no command may issue without a count, and counts must match the hardware's at the end.
"""

import collections

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from sim.streams import random_seed

QUEUES = 3                 # opcodes 1, 2, 3 (see tests/test_cmdproc.py)
N_SEMS, SEM_NONE = 16, 31
CMD_WORDS = 8




def header(opcode, wait=SEM_NONE, signal=SEM_NONE, cid=0, wait2=SEM_NONE, signal2=SEM_NONE):
    """The two header words of a command."""
    return [opcode | (wait << 6) | (signal << 11) | (cid << 16), wait2 | (signal2 << 5)]


class Engine:
    """A model engine: random acceptance and latency, in-order completion, optional error."""

    def __init__(self, tb, q):
        self.tb, self.q = tb, q
        p = f"engines__{q}__"
        d = tb.dut
        self.cmd_valid, self.cmd_ready = getattr(d, p + "cmd__valid"), getattr(d, p + "cmd__ready")
        self.cmd_payload = getattr(d, p + "cmd__payload")
        self.done_valid, self.done_payload = getattr(d, p + "done__valid"), getattr(d, p + "done__payload")
        self.done_ready = getattr(d, p + "done__ready")
        self.cmd_ready.value = 0
        self.done_valid.value = 0
        self.received = []
        self.inflight = collections.deque()
        self.accept_p = 0.7
        self.latency = (1, 12)
        self.fail = {}          # command id → engine error code to report
        self.stalled = False    # never accept (to fill the queue)

    async def run(self):
        rng, edge = self.tb.rng, RisingEdge(self.tb.dut.clk)
        ready = False
        done_pending = None
        while True:
            await edge
            cyc = self.tb.cycle
            if ready and self.cmd_valid.value:
                word = self.cmd_payload.value.to_unsigned()
                cid = (word >> 16) & 0xFFFF
                self.received.append(word)
                self.tb.events.append((cyc, "issue", self.q, word))
                self.inflight.append((cyc + int(rng.integers(*self.latency)), cid))
            if done_pending is not None and self.done_ready.value:
                self.tb.events.append((cyc, "done", self.q, done_pending))
                done_pending = None
                self.done_valid.value = 0
            if done_pending is None and self.inflight and self.inflight[0][0] <= cyc:
                _, cid = self.inflight.popleft()
                self.done_payload.value = cid | (self.fail.get(cid, 0) << 16)
                self.done_valid.value = 1
                done_pending = cid
            ready = not self.stalled and rng.random() < self.accept_p
            self.cmd_ready.value = int(ready)


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.log = dut._log
        self.seed = random_seed()
        self.rng = np.random.default_rng(self.seed)
        self.log.info("seed %d (replay with EMBER_SEED=%d)", self.seed, self.seed)
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.cycle = 0
        self.events = []
        self.engines = [Engine(self, q) for q in range(QUEUES)]
        dut.push__valid.value = 0
        dut.sem_write__valid.value = 0
        dut.clear.value = 0
        self.busy_all = 0

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        cocotb.start_soon(self._count())
        for e in self.engines:
            cocotb.start_soon(e.run())

    async def _count(self):
        edge = RisingEdge(self.dut.clk)
        while True:
            await edge
            self.cycle += 1
            if self.dut.busy.value.to_unsigned() == (1 << QUEUES) - 1:
                self.busy_all += 1

    async def push(self, words):
        value = sum(w << (32 * i) for i, w in enumerate(words))
        self.dut.push__payload.value = value
        self.dut.push__valid.value = 1
        await RisingEdge(self.dut.clk)
        self.dut.push__valid.value = 0

    async def set_sem(self, index, value):
        self.events.append((self.cycle + 1, "set", index, value))
        self.dut.sem_write__index.value = index
        self.dut.sem_write__value.value = value
        self.dut.sem_write__valid.value = 1
        await RisingEdge(self.dut.clk)
        self.dut.sem_write__valid.value = 0

    def sems(self):
        v = self.dut.sems.value.to_unsigned()
        return [(v >> (8 * s)) & 0xFF for s in range(N_SEMS)]

    def error(self):
        return (self.dut.error.value.to_unsigned(), self.dut.error_id.value.to_unsigned(),
                self.dut.error_queue.value.to_unsigned())

    async def wait_for(self, cond, limit, what):
        for _ in range(limit):
            if cond():
                return
            await RisingEdge(self.dut.clk)
        d = self.dut
        raise AssertionError(
            f"timed out after {limit} cycles waiting for {what}: sems={self.sems()} "
            f"pending={d.pending.value.to_unsigned():#x} busy={d.busy.value.to_unsigned():#x} "
            f"waiting={d.waiting.value.to_unsigned():#x} error={self.error()} "
            f"received={[len(e.received) for e in self.engines]} (seed {self.seed})")

    def check_ledger(self, initial):
        """Replay issues and completions in cycle order against the semaphore rules."""
        count = list(initial)
        signal_of = {}
        by_cycle = collections.defaultdict(list)
        for ev in self.events:
            by_cycle[ev[0]].append(ev)
        for cyc in sorted(by_cycle):
            for _, kind, sem, value in by_cycle[cyc]:
                if kind == "set":
                    count[sem] = value
            # Hardware takes a count the cycle before the engine sees the command (issue
            # register), and completions add theirs after; replay issues first.
            for _, kind, q, word in by_cycle[cyc]:
                if kind == "issue":
                    cid = (word >> 16) & 0xFFFF
                    waits = [(word >> 6) & 31, (word >> 32) & 31]
                    signal_of[(q, cid)] = [(word >> 11) & 31, (word >> 37) & 31]
                    for wait in waits:
                        if wait != SEM_NONE:
                            assert count[wait] > 0, f"cycle {cyc}: id {cid} issued without a " \
                                f"count on semaphore {wait} (seed {self.seed})"
                            count[wait] -= 1
            for _, kind, q, cid in by_cycle[cyc]:
                if kind == "done":
                    for sig in signal_of[(q, cid)]:
                        if sig != SEM_NONE:
                            count[sig] += 1
        return count


@cocotb.test()
async def pipeline_dependencies(dut):
    """Load/compute/store over two buffers: order, dependencies, overlap, pass-through."""
    tb = TB(dut)
    await tb.reset()
    # Two input buffers and two output buffers (semaphore base + buffer):
    # load waits IN_FREE, signals IN_FULL; compute waits IN_FULL and OUT_FREE, signals IN_FREE
    # and OUT_FULL; store waits OUT_FULL, signals OUT_FREE.
    IN_FREE, IN_FULL, OUT_FREE, OUT_FULL = 0, 2, 4, 6
    initial = [0] * N_SEMS
    for sem in (IN_FREE, IN_FREE + 1, OUT_FREE, OUT_FREE + 1):
        await tb.set_sem(sem, 1)
        initial[sem] = 1
    ntiles = 40
    pushed = [[] for _ in range(QUEUES)]
    for t in range(ntiles):
        b = t % 2
        headers = (
            header(1, IN_FREE + b, IN_FULL + b, t),
            header(2, IN_FULL + b, IN_FREE + b, 1000 + t, OUT_FREE + b, OUT_FULL + b),
            header(3, OUT_FULL + b, OUT_FREE + b, 2000 + t),
        )
        for q, head in enumerate(headers):
            words = head + [int(x) for x in tb.rng.integers(0, 2**32, CMD_WORDS - 2,
                                                            dtype=np.uint64)]
            pushed[q].append(sum(w << (32 * i) for i, w in enumerate(words)))
            await tb.push(words)
            # Keep queues from overflowing: pace the pushes by each queue's progress.
            await tb.wait_for(lambda: dut.pending.value.to_unsigned() >> (8 * q) & 0xFF < 6,
                              5000, "queue space")
    await tb.wait_for(lambda: all(len(e.received) == ntiles for e in tb.engines)
                      and not dut.busy.value.to_unsigned(), 20000, "all commands complete")
    await ClockCycles(dut.clk, 5)
    for q, e in enumerate(tb.engines):
        assert e.received == pushed[q], f"queue {q}: commands reordered or altered"
    completed = dut.completed.value.to_unsigned()
    assert [(completed >> (32 * q)) & 0xFFFFFFFF for q in range(QUEUES)] == [ntiles] * QUEUES
    final = tb.check_ledger(initial)
    assert final == tb.sems(), f"ledger {final} != hardware {tb.sems()}"
    assert final == initial, f"semaphores did not return to their initial counts: {final}"
    assert tb.error() == (0, 0, 0)
    tb.log.info("%d cycles with all three engines busy at once", tb.busy_all)
    assert tb.busy_all > 0, "load, compute and store never overlapped"


@cocotb.test()
async def shared_semaphore_race(dut):
    """Two queues wait on one semaphore: each count lets exactly one command through."""
    tb = TB(dut)
    await tb.reset()
    for e in tb.engines:
        e.accept_p = 1.0
    rounds = 20
    for k in range(rounds):
        await tb.push(header(1, 7, SEM_NONE, k) + [0] * 6)
        await tb.push(header(2, 7, SEM_NONE, 100 + k) + [0] * 6)
        for count in (1, 2):
            await tb.set_sem(7, 1)
            await ClockCycles(dut.clk, 6)
            issued = sum(1 for ev in tb.events if ev[1] == "issue")
            assert issued == 2 * k + count, f"round {k}: {issued} issues on {2 * k + count} counts"
            assert tb.sems()[7] == 0
    tb.check_ledger([0] * N_SEMS)


@cocotb.test()
async def errors_and_clear(dut):
    """Illegal opcode, malformed header, overflow and an engine error: code, id, halt, clear."""
    tb = TB(dut)
    await tb.reset()
    # Illegal opcode.
    await tb.push(header(9, cid=0x111) + [0] * 6)  # no queue has opcode 9
    await ClockCycles(dut.clk, 2)
    assert tb.error() == (0x01, 0x111, 0) and dut.irq.value
    # Sticky: a later error does not overwrite it.
    await tb.push(header(1, wait=20, cid=0x222) + [0] * 6)
    await ClockCycles(dut.clk, 2)
    assert tb.error() == (0x01, 0x111, 0)
    dut.clear.value = 1
    await RisingEdge(dut.clk)
    dut.clear.value = 0
    await RisingEdge(dut.clk)
    assert tb.error() == (0, 0, 0) and not dut.irq.value
    # Malformed semaphore index.
    await tb.push(header(1, wait=20, cid=0x222) + [0] * 6)
    await ClockCycles(dut.clk, 2)
    assert tb.error() == (0x02, 0x222, 0)
    dut.clear.value = 1
    await RisingEdge(dut.clk)
    dut.clear.value = 0
    # Overflow: engine 1 accepts nothing; its queue (8) plus issue register (1) fill up.
    tb.engines[1].stalled = True
    for k in range(12):
        await tb.push(header(2, cid=0x300 + k) + [0] * 6)
    await ClockCycles(dut.clk, 2)
    code, cid, q = tb.error()
    assert code == 0x03 and q == 1 and 0x300 + 8 <= cid <= 0x300 + 11, tb.error()
    dut.clear.value = 1
    await RisingEdge(dut.clk)
    dut.clear.value = 0
    tb.engines[1].stalled = False
    # Engine error: nothing new is issued once the error is held; commands the engine already
    # holds finish (they cannot be recalled).
    eng = tb.engines[2]
    eng.fail[0x400] = 5
    eng.latency = (20, 21)
    eng.accept_p = 1.0
    for k in range(8):
        await tb.push(header(3, cid=0x400 + k) + [0] * 6)
    await tb.wait_for(lambda: tb.error()[0] != 0, 500, "the engine error")
    error_cycle = tb.cycle
    await ClockCycles(dut.clk, 100)
    assert tb.error() == (0x15, 0x400, 2), tb.error()
    late = [ev for ev in tb.events if ev[1] == "issue" and ev[2] == 2 and ev[0] > error_cycle]
    assert not late, f"{len(late)} commands issued after the error was held"
    assert len(eng.received) < 8, "every command was issued despite the error"
    # A malformed pair of waits on the same semaphore.
    dut.clear.value = 1
    await RisingEdge(dut.clk)
    dut.clear.value = 0
    await tb.push(header(1, wait=3, cid=0x666, wait2=3) + [0] * 6)
    await ClockCycles(dut.clk, 2)
    assert tb.error() == (0x02, 0x666, 0), tb.error()
    # Soft reset, then a normal job works.
    dut.clear.value = 1
    await RisingEdge(dut.clk)
    dut.clear.value = 0
    await RisingEdge(dut.clk)
    before = len(tb.engines[0].received)
    await tb.push(header(1, cid=0x500) + [1, 2, 3, 4, 5, 6])
    await tb.wait_for(lambda: len(tb.engines[0].received) > before, 200, "the next command")
    await tb.wait_for(lambda: not dut.busy.value.to_unsigned(), 200, "completion")
    assert tb.error() == (0, 0, 0)
