"""cocotb testbench for the PE array (``hw/pe_array.py``), checked against ``sim.golden``.

Run through ``tests/test_pe_array.py``; the configuration arrives as JSON in ``EMBER_CONFIG``.
Random tests log their seed; set ``EMBER_SEED`` to replay one.
"""

import itertools
import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from hw.config import EmberConfig
from sim.golden import ref_matmul
from sim.streams import StreamSink, StreamSource, random_seed




class TB:
    """Owns the clock, reset and stream models of one PE-array DUT."""

    def __init__(self, dut):
        self.dut = dut
        self.log = dut._log
        self.cfg = EmberConfig.from_json(os.environ["EMBER_CONFIG"])
        self.R, self.C, self.L = self.cfg.pe_rows, self.cfg.pe_cols, self.cfg.pe_lanes
        self.seed = random_seed()
        self.rng = np.random.default_rng(self.seed)
        self.log.info("config %s, seed %d (replay with EMBER_SEED=%d)",
                      self.cfg.name, self.seed, self.seed)
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.a = StreamSource(dut, "a", dut.clk)
        self.b = StreamSource(dut, "b", dut.clk)
        self.o = StreamSink(dut, "o", dut.clk)
        self.cycle = 0
        self.step_cycles = []

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        for model in (self.a, self.b, self.o):
            cocotb.start_soon(model.run())
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        """Count cycles and record the cycle of every array step (a/b handshake)."""
        edge = RisingEdge(self.dut.clk)
        a_valid, a_ready, b_valid = self.dut.a__valid, self.dut.a__ready, self.dut.b__valid
        while True:
            await edge
            self.cycle += 1
            if a_valid.value and a_ready.value and b_valid.value:
                self.step_cycles.append(self.cycle)

    def _pattern(self, p_pause):
        """A reproducible random pause pattern of prime length, repeated."""
        return itertools.cycle(bool(x) for x in self.rng.random(97) < p_pause)

    def set_backpressure(self, enable):
        """Random gaps on both inputs and random backpressure on the output, or none."""
        self.a.set_pause_generator(self._pattern(0.3) if enable else None)
        self.b.set_pause_generator(self._pattern(0.3) if enable else None)
        self.o.set_pause_generator(self._pattern(0.4) if enable else None)

    # Beat encoding, following the payload layouts documented in hw/pe_array.py.
    def send_tile(self, a, b):
        R, C, L = self.R, self.C, self.L
        K = a.shape[1]
        assert a.shape == (R, K) and b.shape == (K, C)
        steps = max(1, -(-K // L))
        ap = np.zeros((R, steps * L), np.int8)
        bp = np.zeros((steps * L, C), np.int8)
        ap[:, :K] = a
        bp[:K, :] = b
        last_bit = 1 << (R * L * 8)
        for s in range(steps):
            a_word = int.from_bytes(ap[:, s * L:(s + 1) * L].tobytes(), "little")
            b_word = int.from_bytes(np.ascontiguousarray(bp[s * L:(s + 1) * L, :].T).tobytes(),
                                    "little")
            self.a.send_nowait(a_word | (last_bit if s == steps - 1 else 0))
            self.b.send_nowait(b_word)
        return steps

    def received_tiles(self):
        """Decode the output beats into R×C int32 tiles, checking the ``last`` flags."""
        R, C = self.R, self.C
        mask = (1 << (C * 32)) - 1
        rows, tiles = [], []
        for i, beat in enumerate(self.o.beats):
            last = (beat >> (C * 32)) & 1
            assert last == (i % R == R - 1), f"output beat {i}: last={last}"
            rows.append(np.frombuffer((beat & mask).to_bytes(C * 4, "little"), "<i4"))
            if last:
                tiles.append(np.stack(rows))
                rows = []
        return tiles

    async def run_tiles(self, pairs):
        """Send (a, b) tile pairs, wait (bounded) for every result, compare bit-exact."""
        steps = sum(self.send_tile(a, b) for a, b in pairs)
        expected_beats = len(pairs) * self.R
        limit = 20 * (steps + expected_beats) + 200
        for _ in range(limit):
            await RisingEdge(self.dut.clk)
            if len(self.o.beats) >= expected_beats:
                break
        assert len(self.o.beats) == expected_beats, \
            f"got {len(self.o.beats)} of {expected_beats} result rows within {limit} cycles"
        await ClockCycles(self.dut.clk, 2 * self.R + 4)
        assert len(self.o.beats) == expected_beats, "extra result rows after the last tile"
        assert not self.dut.busy.value, "array still busy after draining every tile"
        tiles = self.received_tiles()
        for i, ((a, b), got) in enumerate(zip(pairs, tiles)):
            want = ref_matmul(a, b)
            if not np.array_equal(got, want):
                bad = np.argwhere(got != want)[0]
                raise AssertionError(
                    f"tile {i} (K={a.shape[1]}) mismatch at {tuple(bad)}: "
                    f"got {got[tuple(bad)]}, want {want[tuple(bad)]} (seed {self.seed})")
        return steps

    def random_tile(self, K):
        a = self.rng.integers(-128, 128, (self.R, K), dtype=np.int8)
        b = self.rng.integers(-128, 128, (K, self.C), dtype=np.int8)
        return a, b


@cocotb.test()
@cocotb.parametrize(backpressure=[False, True])
async def random_tiles(dut, backpressure):
    """At least 200 random tiles with random K, with and without gaps and backpressure."""
    tb = TB(dut)
    await tb.reset()
    tb.set_backpressure(backpressure)
    max_k = 4 * tb.R * tb.L
    pairs = [tb.random_tile(int(tb.rng.integers(1, max_k + 1))) for _ in range(200)]
    await tb.run_tiles(pairs)
    tb.log.info("200 random tiles bit-exact, %d cycles", tb.cycle)


@cocotb.test()
async def extreme_operands(dut):
    """All-extreme operands: -128·-128, -128·127, 127·-128 and 127·127, short and at K = 2^16."""
    tb = TB(dut)
    await tb.reset()
    pairs = []
    for K in (1, tb.L, 4096, 1 << 16):
        for va, vb in ((-128, -128), (-128, 127), (127, -128), (127, 127)):
            pairs.append((np.full((tb.R, K), va, np.int8), np.full((K, tb.C), vb, np.int8)))
    # Alternating signs per element, so that every PE sees mixed extreme products.
    K = 4096
    a = np.where(np.indices((tb.R, K)).sum(0) % 2, -128, 127).astype(np.int8)
    b = np.where(np.indices((K, tb.C)).sum(0) % 3, -128, 127).astype(np.int8)
    pairs.append((a, b))
    await tb.run_tiles(pairs)
    # The K = 2^16 tile of -128·-128 reaches 2^30: no wrap may happen.
    assert ref_matmul(*pairs[12])[0, 0] == (1 << 30)


@cocotb.test()
@cocotb.parametrize(backpressure=[False, True])
async def k_corners(dut, backpressure):
    """K = 1, K not a multiple of L, K = L, and a long K of 4096, back to back."""
    tb = TB(dut)
    await tb.reset()
    tb.set_backpressure(backpressure)
    ks = [1, 1, tb.L, tb.L + 1, max(tb.L - 1, 1), 2 * tb.L - 1, 4096, 1, 4099, 1]
    await tb.run_tiles([tb.random_tile(K) for K in ks])


@cocotb.test()
async def steady_state_utilisation(dut):
    """With no backpressure, consecutive tiles run at ≥ 99% of R·C·L MACs per cycle."""
    tb = TB(dut)
    await tb.reset()
    # The shortest tile that needs no bubble: as many steps as the drain takes (R rows).
    K = tb.R * tb.L
    ntiles = 64
    steps = await tb.run_tiles([tb.random_tile(K) for _ in range(ntiles)])
    first, last = tb.step_cycles[0], tb.step_cycles[-1]
    window = last - first + 1
    utilisation = len(tb.step_cycles) / window
    macs = steps * tb.cfg.macs_per_cycle
    tb.log.info("utilisation %.4f: %d steps (%d MACs) in %d cycles, %d tiles of K=%d",
                utilisation, steps, macs, window, ntiles, K)
    report = {"config": tb.cfg.name, "utilisation": utilisation, "steps": steps,
              "cycles": window, "tiles": ntiles, "K": K}
    with open("utilisation.json", "w") as f:
        json.dump(report, f)
    assert len(tb.step_cycles) == steps
    assert utilisation >= 0.99, f"steady-state utilisation {utilisation:.4f} < 0.99"
