"""The register block's two bus sides (``hw/regs.py``) on Amaranth's simulator.

Both sides read through one shared first level of the read multiplexer: when they start a read
in the same cycle they take turns, and each still gets its own answer (its own command staging
registers, and 0 for a register only the other side may read). Random reads of both sides, in
the same cycle or a cycle apart, against a model of the registers written before; every answer
within the documented latency, and the turns alternating. Plus a Verilator lint.
"""

import random

import pytest
from amaranth.sim import Simulator

from hw import regmap
from hw.config import get_preset
from hw.regs import Registers
from sim.runner import generate_verilog, lint

OFFSETS = {r.name: r.offset for r in regmap.REGS}


def _registers():
    return Registers(config=get_preset("tiny"), imem_words=256)


async def _access(ctx, bus, offset, *, write=None):
    """One Wishbone access at byte ``offset``; returns (cycles to the answer, dat_r, err)."""
    ctx.set(bus.cyc, 1)
    ctx.set(bus.stb, 1)
    ctx.set(bus.adr, offset >> 2)
    ctx.set(bus.we, write is not None)
    ctx.set(bus.dat_w, write or 0)
    ctx.set(bus.sel, 0xF)
    for cycles in range(1, 20):
        await ctx.tick()
        if ctx.get(bus.ack) or ctx.get(bus.err):
            answer = (cycles, ctx.get(bus.dat_r), ctx.get(bus.err))
            ctx.set(bus.cyc, 0)
            ctx.set(bus.stb, 0)
            return answer
    raise AssertionError(f"no answer to the access at {offset:#x} in 20 cycles")


def test_reads_of_both_sides(seed):
    rng = random.Random(seed)
    dut = _registers()
    # What each side writes, and so what each side must read back.
    host_cmd = [rng.getrandbits(32) for _ in range(8)]
    fw_cmd = [rng.getrandbits(32) for _ in range(8)]
    args = [rng.getrandbits(32) for _ in range(16)]
    mailbox, fw_status = rng.getrandbits(32), rng.getrandbits(32)
    expect = {
        "host": {**{f"CMD{i}": v for i, v in enumerate(host_cmd)},
                 **{f"ARG{i}": v for i, v in enumerate(args)},
                 "MAILBOX": mailbox, "FW_STATUS": fw_status, "DOORBELL": 0,
                 "ID": regmap.ID_VALUE, "VERSION": regmap.VERSION},
        "fw": {**{f"CMD{i}": v for i, v in enumerate(fw_cmd)},
               **{f"ARG{i}": v for i, v in enumerate(args)},
               "MAILBOX": mailbox, "FW_STATUS": fw_status, "DOORBELL": 1,   # rung once
               "ID": regmap.ID_VALUE, "VERSION": regmap.VERSION},
    }
    names = sorted(expect["host"])
    trials = 300
    # Per trial: the offset of each side's start (0 or 1 cycle), and the registers read.
    plan = [(rng.choice((0, 0, 1)), rng.choice((0, 0, 1)), rng.choice(names), rng.choice(names))
            for _ in range(trials)]
    results = {"host": [], "fw": []}
    start, window = 200, 10     # trial t starts in cycle start + window·t (+ its side's delay)

    async def side(ctx, name):
        bus = getattr(dut, name)
        now = 0

        async def access(offset, write=None):
            nonlocal now
            cycles, data, err = await _access(ctx, bus, offset, write=write)
            now += cycles
            return cycles, data, err

        if name == "host":
            for i, v in enumerate(host_cmd):
                await access(OFFSETS[f"CMD{i}"], v)
            for i, v in enumerate(args):
                await access(OFFSETS[f"ARG{i}"], v)
            await access(OFFSETS["MAILBOX"], mailbox)
            await access(OFFSETS["DOORBELL"], 0)        # counts the rings
        else:
            for i, v in enumerate(fw_cmd):
                await access(OFFSETS[f"CMD{i}"], v)
            await access(OFFSETS["FW_STATUS"], fw_status)
        assert now < start
        for t, (dh, df, rh, rf) in enumerate(plan):
            delay, reg = (dh, rh) if name == "host" else (df, rf)
            await ctx.tick().repeat(start + window * t + delay - now)
            now = start + window * t + delay
            results[name].append((reg, *await access(OFFSETS[reg])))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for name in ("host", "fw"):
        async def bench(ctx, name=name):
            await side(ctx, name)
        sim.add_testbench(bench)
    sim.run()

    clashes = first = 0
    for t, (dh, df, *_) in enumerate(plan):
        for name in ("host", "fw"):
            reg, cycles, data, err = results[name][t]
            assert not err, f"trial {t}: {name} read of {reg} answered err (seed {seed})"
            assert data == expect[name][reg], \
                f"trial {t}: {name} read {reg} = {data:#x}, want {expect[name][reg]:#x} " \
                f"(seed {seed})"
        ch, cf = results["host"][t][1], results["fw"][t][1]
        if dh == df:
            # Started in the same cycle: one is answered in 2 cycles, the other in 3.
            clashes += 1
            assert sorted((ch, cf)) == [2, 3], (t, ch, cf, seed)
            first += cf == 2
        else:
            assert (ch, cf) == (2, 2), (t, ch, cf, seed)
    print(f"{clashes} reads started together; the firmware's went first in {first}")
    assert clashes > 50 and abs(2 * first - clashes) <= 2, \
        f"the two sides did not take turns: firmware first in {first} of {clashes}"


def test_regs_lint(tmp_path):
    path = tmp_path / "regs.v"
    path.write_text(generate_verilog(_registers(), "ember_tiny_regs"))
    lint(path, "ember_tiny_regs")
