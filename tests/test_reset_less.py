"""Reset in the middle of traffic, on Amaranth's simulator: the PE array and the output stage
keep their datapath registers without reset (only valid/full flags and control are reset), so
after a reset at any moment the next results must still be exact, with no stale row, beat or
accumulator value leaking out. The reset is a ``ResetInserter`` around the block, as the GEMM
engine's soft reset is in ``hw/top.py``; the simulator keeps reset-less registers' values over
it, so stale values are really there."""

import random

import numpy as np
import pytest
from amaranth.hdl import ResetInserter, Signal
from amaranth.sim import Simulator

from hw.pe_array import PEArray
from hw.requant import Requant
from sim.golden_requant import ref_bias_add, ref_requant


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("rows, cols, lanes", [(2, 2, 4), (3, 2, 3)])
def test_pe_array_reset_mid_traffic(rows, cols, lanes, seed):
    R, C, L = rows, cols, lanes
    rng = random.Random(seed)
    nrng = np.random.default_rng(rng.randrange(1 << 32))
    rst = Signal()
    arr = PEArray(rows=R, cols=C, lanes=L)

    def tile_steps(a, b):
        """Stream steps of one tile: (a payload, b payload) as packed ints."""
        steps = a.shape[1] // L
        out = []
        for s in range(steps):
            a_data = [[int(a[r, s * L + l]) for l in range(L)] for r in range(R)]
            b_data = [[int(b[s * L + l, c]) for l in range(L)] for c in range(C)]
            out.append((arr.a_layout.const({"data": a_data, "last": s == steps - 1})
                        .as_value().value,
                        arr.b_layout.const(b_data).as_value().value))
        return out

    def random_tiles(n):
        tiles = []
        for _ in range(n):
            steps = rng.choice([1, 1, 2, 3, R, 5])
            a = nrng.integers(-128, 128, (R, steps * L))
            b = nrng.integers(-128, 128, (steps * L, C))
            tiles.append((a, b))
        return tiles

    rounds = 12
    checked = 0

    async def bench(ctx):
        nonlocal checked
        for _ in range(rounds):
            # Traffic with backpressure, cut by a reset at a random moment: it leaves steps in
            # the pipeline, a half-accumulated tile, full hold and drain buffers, rows on `o`.
            queue = [st for a, b in random_tiles(8) for st in tile_steps(a, b)]
            p_ready = rng.choice([0.0, 0.3, 1.0])
            for _ in range(rng.randrange(1, 60)):
                go = bool(queue) and rng.random() < 0.9
                ctx.set(arr.a.valid, go)
                ctx.set(arr.b.valid, go)
                if go:
                    ctx.set(arr.a.payload.as_value(), queue[0][0])
                    ctx.set(arr.b.payload.as_value(), queue[0][1])
                ctx.set(arr.o.ready, rng.random() < p_ready)
                if go and ctx.get(arr.a.ready):
                    queue.pop(0)
                await ctx.tick()
            ctx.set(arr.a.valid, 0)
            ctx.set(arr.b.valid, 0)
            ctx.set(rst, 1)
            await ctx.tick().repeat(rng.choice([1, 1, 2]))
            ctx.set(rst, 0)

            # Clean traffic: every row received must be a row of these tiles, in order.
            tiles = random_tiles(rng.randrange(1, 6))
            queue = [st for a, b in tiles for st in tile_steps(a, b)]
            expect = []
            for a, b in tiles:
                c = a @ b
                expect += [([int(v) for v in c[r]], int(r == R - 1)) for r in range(R)]
            got = []
            p_valid, p_ready = rng.choice([0.5, 1.0]), rng.choice([0.3, 1.0])
            pending = False
            for _ in range(2000):
                if len(got) == len(expect):
                    break
                if not pending and queue and rng.random() < p_valid:
                    pending = True
                ctx.set(arr.a.valid, pending)
                ctx.set(arr.b.valid, pending)
                if pending:
                    ctx.set(arr.a.payload.as_value(), queue[0][0])
                    ctx.set(arr.b.payload.as_value(), queue[0][1])
                o_ready = rng.random() < p_ready
                ctx.set(arr.o.ready, o_ready)
                if pending and ctx.get(arr.a.ready):
                    queue.pop(0)
                    pending = False
                if ctx.get(arr.o.valid) and o_ready:
                    o = ctx.get(arr.o.payload)
                    got.append(([int(o.data[c]) for c in range(C)], int(o.last)))
                await ctx.tick()
            ctx.set(arr.a.valid, 0)
            ctx.set(arr.b.valid, 0)
            ctx.set(arr.o.ready, 1)
            await ctx.tick().repeat(20)
            assert not ctx.get(arr.o.valid), "a row too many after the reset"
            assert not ctx.get(arr.busy)
            assert got == expect
            checked += len(expect)

    _run(ResetInserter(rst)(arr), bench)
    assert checked > 0


@pytest.mark.parametrize("cols", [2, 3])
def test_requant_reset_mid_traffic(cols, seed):
    C = cols
    rng = random.Random(seed)
    rst = Signal()
    rq = Requant(cols=C)

    def random_beat():
        acc = [rng.randrange(-2**31, 2**31) for _ in range(C)]
        prm = {
            "bias": [rng.randrange(-2**31, 2**31) for _ in range(C)],
            "multiplier": [rng.choice([rng.randrange(2**30, 2**31), rng.randrange(-2**31, 2**31)])
                           for _ in range(C)],
            "shift": [rng.randrange(-31, 32) for _ in range(C)],
            "zero_point": rng.randrange(-128, 128),
            "raw": rng.random() < 0.3,
            "last": rng.random() < 0.3,
        }
        lo = rng.randrange(-128, 128)
        prm["act_min"], prm["act_max"] = lo, rng.randrange(lo, 128)
        if prm["raw"]:
            out = ref_bias_add(np.array([acc], np.int32), prm["bias"])[0]
        else:
            out = ref_requant(np.array([acc], np.int32), prm["bias"], prm["multiplier"],
                              prm["shift"], prm["zero_point"], prm["act_min"],
                              prm["act_max"])[0]
        last = prm.pop("last")
        i = rq.i_layout.const({"data": acc, "last": last}).as_value().value
        p = rq.params_layout.const(prm).as_value().value
        return i, p, ([int(v) for v in out], int(last))

    checked = 0

    async def bench(ctx):
        nonlocal checked
        for _ in range(15):
            queue = [random_beat() for _ in range(20)]
            p_ready = rng.choice([0.0, 0.3, 1.0])
            for _ in range(rng.randrange(1, 25)):
                go = bool(queue) and rng.random() < 0.9
                ctx.set(rq.i.valid, go)
                if go:
                    ctx.set(rq.i.payload.as_value(), queue[0][0])
                    ctx.set(rq.params.as_value(), queue[0][1])
                ctx.set(rq.o.ready, rng.random() < p_ready)
                if go and ctx.get(rq.i.ready):
                    queue.pop(0)
                await ctx.tick()
            ctx.set(rq.i.valid, 0)
            ctx.set(rst, 1)
            await ctx.tick()
            ctx.set(rst, 0)

            beats = [random_beat() for _ in range(rng.randrange(1, 12))]
            queue = list(beats)
            got = []
            pending = False
            p_valid, p_ready = rng.choice([0.5, 1.0]), rng.choice([0.3, 1.0])
            for _ in range(500):
                if len(got) == len(beats):
                    break
                if not pending and queue and rng.random() < p_valid:
                    pending = True
                ctx.set(rq.i.valid, pending)
                if queue:
                    ctx.set(rq.i.payload.as_value(), queue[0][0])
                    ctx.set(rq.params.as_value(), queue[0][1])
                o_ready = rng.random() < p_ready
                ctx.set(rq.o.ready, o_ready)
                if pending and ctx.get(rq.i.ready):
                    queue.pop(0)
                    pending = False
                if ctx.get(rq.o.valid) and o_ready:
                    o = ctx.get(rq.o.payload)
                    got.append(([int(o.data[c]) for c in range(C)], int(o.last)))
                await ctx.tick()
            ctx.set(rq.i.valid, 0)
            ctx.set(rq.o.ready, 1)
            await ctx.tick().repeat(Requant.latency + 2)
            assert not ctx.get(rq.o.valid), "a beat too many after the reset"
            assert not ctx.get(rq.busy)
            assert got == [b[2] for b in beats]
            checked += len(beats)

    _run(ResetInserter(rst)(rq), bench)
    assert checked > 0
