"""Faults: hardware error handling, DRAM windows, watchdog, recovery, and the chaos regression.

The cocotb testbench is ``sim/tb_faults.py`` (whole chip, ``tiny``). Here also, without
Verilator: the DMA's window check against a Python model (Amaranth simulator), the register
block's access rights for the window and watchdog registers, and the watchdog's timing.
``make chaos`` runs the full chaos regression (``test_chaos_full``, marked slow) and writes its
summary to ``build/chaos.json``.
"""

import json
import os

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw import regmap
from hw.config import get_preset
from hw.dma import DMA, ERR_MALFORMED, ERR_OK, ERR_RANGE, ERR_WINDOW, _Front
from hw.regs import Registers
from hw.watchdog import Watchdog
from sim import host as H
from sim.runner import ROOT, run_cocotb
from tests.test_top import build_top_rtl

FAULT_TESTS = ["fault_commands", "fault_sram_range", "fault_dram_window", "fault_axi_errors",
               "fault_embedding_index", "fault_queue_overflow", "fault_watchdog",
               "fault_soft_reset"]


@pytest.mark.rtl
@pytest.mark.parametrize("testcase", FAULT_TESTS)
def test_faults(testcase):
    cfg = get_preset("tiny")
    run_cocotb(build_top_rtl(cfg), cfg.top_name, "sim.tb_faults", config=cfg,
               testcase=testcase)


def _chaos(jobs):
    cfg = get_preset("tiny")
    test_dir = run_cocotb(build_top_rtl(cfg), cfg.top_name, "sim.tb_faults", config=cfg,
                          testcase="chaos", extra_env={"EMBER_CHAOS_JOBS": str(jobs)})
    summary = json.loads((test_dir / "chaos_summary.json").read_text())
    assert summary["jobs"] >= jobs
    total = summary["total"]
    assert total["lost"] == 0 and total["hangs"] == 0 and summary["oob_writes"] == 0
    assert sum(s["detected"] for f, s in summary["faults"].items() if f != "none") > 0
    return summary


@pytest.mark.rtl
def test_chaos_short():
    """The chaos regression, shortened for ``make test`` (``make chaos`` runs it in full)."""
    _chaos(40)


@pytest.mark.rtl
@pytest.mark.slow
def test_chaos_full():
    """At least 200 chaos jobs; the summary goes to ``build/chaos.json`` (the README table)."""
    summary = _chaos(int(os.environ.get("EMBER_CHAOS_JOBS", "200")))
    out = ROOT / "build" / "chaos.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["total"]), f"seed {summary['seed']}")


# -- the DMA's window check, against a model --------------------------------------------------

def _window_model(d, base, limit, sram_limit):
    if d["rows"] == 0 or d["row_bytes"] == 0:
        return ERR_MALFORMED
    if d["sram_addr"] + (d["rows"] - 1) * d["sram_stride"] + d["row_bytes"] > sram_limit:
        return ERR_RANGE
    stride = d["dram_stride"] - (1 << 32) if d["dram_stride"] >> 31 else d["dram_stride"]
    starts = [d["dram_addr"] + r * stride for r in range(d["rows"])]
    if min(starts) < base or max(starts) + d["row_bytes"] - 1 > limit:
        return ERR_WINDOW
    return ERR_OK


def test_window_check_matches_model():
    """``_Front`` with a window: 400 random descriptors (positive, negative and wrapping
    strides, rows at the window's edges) get exactly the model's error code, and rejected ones
    leave as a single row entry."""
    rng = np.random.default_rng(int(os.environ.get("EMBER_SEED", "7")))
    print(f"seed {rng.bit_generator.state['state']['state']}")
    layout = DMA.make_descriptor_layout(addr_width=32, sram_addr_width=11, data_bytes=8,
                                        tag_width=8)
    sram_limit = 2048 * 8
    dut = _Front(desc_layout=layout, sram_limit=sram_limit, window=True)
    base, limit = 0x10000, 0x1FFFF
    descs = []
    for i in range(400):
        rows = int(rng.choice([0, 1, 2, 3, 7, 100]))
        nbytes = int(rng.choice([0, 1, 8, 33, 0x1000]))
        edge = int(rng.choice([base, limit + 1, base + 0x8000]))
        addr = (edge + int(rng.integers(-0x100, 0x100))) & 0xFFFF_FFFF
        stride = int(rng.choice([0, 8, 0x100, -0x100, -8, 1 << 31, 0x7FFF_FFFF,
                                 int(rng.integers(-0x2000, 0x2000))])) & 0xFFFF_FFFF
        descs.append(dict(dram_addr=addr, sram_addr=int(rng.integers(0, 64)), rows=rows,
                          row_bytes=nbytes, dram_stride=stride, sram_stride=8, tag=i % 256))
    got = []

    async def bench(ctx):
        ctx.set(dut.base, base)
        ctx.set(dut.limit, limit)
        ctx.set(dut.rows.ready, 1)
        for d in descs:
            ctx.set(dut.desc.valid, 1)
            ctx.set(dut.desc.payload, d)
            await ctx.tick().until(dut.desc.ready)
            ctx.set(dut.desc.valid, 0)
            # Collect this descriptor's row entries (the walker emits one per cycle).
            while True:
                await ctx.tick()
                if ctx.get(dut.rows.valid):
                    err = ctx.get(dut.rows.payload.err)
                    last = ctx.get(dut.rows.payload.desc_last)
                    if last:
                        got.append(err)
                        break
    async def drain(ctx):
        pass

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = [_window_model(d, base, limit, sram_limit) for d in descs]
    assert got == want, [(i, g, w, descs[i]) for i, (g, w) in enumerate(zip(got, want))
                         if g != w][:5]
    assert want.count(ERR_WINDOW) > 50 and want.count(ERR_OK) > 50


# -- register access rights and the watchdog ---------------------------------------------------

def test_window_registers_host_only():
    """The window and watchdog registers: reset values from the map, host writes (windows in
    whole bus words), firmware writes ignored."""
    cfg = get_preset("tiny")
    dut = Registers(config=cfg, imem_words=1024)
    names = ("WATCHDOG", "DRAM_RD_BASE", "DRAM_RD_LIMIT", "DRAM_WR_BASE", "DRAM_WR_LIMIT")
    outs = {n: getattr(dut, n.lower() if n == "WATCHDOG" else n.lower()) for n in names}
    D = cfg.bus_bytes
    log = []

    async def access(ctx, bus, offset, value=None):
        ctx.set(bus.adr, offset >> 2)
        ctx.set(bus.cyc, 1)
        ctx.set(bus.stb, 1)
        ctx.set(bus.we, value is not None)
        if value is not None:
            ctx.set(bus.dat_w, value)
        await ctx.tick().until(bus.ack | bus.err)
        data = ctx.get(bus.dat_r)
        ctx.set(bus.cyc, 0)
        ctx.set(bus.stb, 0)
        await ctx.tick()
        return data

    async def bench(ctx):
        for n in names:
            assert ctx.get(outs[n]) == regmap.BY_NAME[n].reset, n
        for n in names:
            await access(ctx, dut.fw, regmap.BY_NAME[n].offset, 0x1234_5677)
            assert ctx.get(outs[n]) == regmap.BY_NAME[n].reset, f"firmware changed {n}"
            assert await access(ctx, dut.fw, regmap.BY_NAME[n].offset) == \
                regmap.BY_NAME[n].reset
        for n in names:
            await access(ctx, dut.host, regmap.BY_NAME[n].offset, 0x1234_5677)
            want = 0x1234_5677 if n == "WATCHDOG" else \
                0x1234_5677 & ~(D - 1) if n.endswith("BASE") else 0x1234_5677 | (D - 1)
            assert ctx.get(outs[n]) == want, n
            assert await access(ctx, dut.host, regmap.BY_NAME[n].offset) == want
            assert await access(ctx, dut.fw, regmap.BY_NAME[n].offset) == want
            log.append(n)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert log == list(names)


def test_watchdog_timing():
    """The watchdog fires one cycle after the limit-th cycle without progress (its verdict is
    registered; progress events are registered too, so they count one cycle late), with the oldest command's id and the queue; progress, ``halt``, ``clear`` and
    limit 0 restart or stop it."""
    dut = Watchdog(queues=2, code=0x04)
    fired = []

    async def bench(ctx):
        ctx.set(dut.limit, 10)
        ctx.set(dut.head_id[1], 0x77)
        ctx.set(dut.busy, 0b10)
        for cycle in range(30):
            ctx.set(dut.progress, 0b10 if cycle == 5 else 0)
            await ctx.delay(1e-8)
            if ctx.get(dut.error.valid):
                fired.append((cycle, ctx.get(dut.error.queue), ctx.get(dut.error.id),
                              ctx.get(dut.error.code)))
            ctx.set(dut.halt, bool(fired))
            await ctx.tick()
        ctx.set(dut.halt, 0)
        ctx.set(dut.limit, 0)
        for cycle in range(30):
            await ctx.tick()
            assert not ctx.get(dut.error.valid), "fired with limit 0"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # Progress at cycle 5 is seen (registered) in cycle 6 and restarts the count there: cycles
    # 7..16 are the ten idle ones, and the registered verdict comes out in cycle 17.
    assert fired[0] == (17, 1, 0x77, 0x04), fired
    assert len(fired) == 1


@pytest.mark.parametrize("code, queue, text", [
    (0x04, 0, "watchdog"), (0x15, 0, "outside the DRAM read window"),
    (0x15, 1, "outside the DRAM write window"), (0x1D, 3, "gather: outside the DRAM read window"),
    (0x03, 1, "queue overflow"), (0x12, 1, "AXI DECERR")])
def test_error_descriptions(code, queue, text):
    e = H.EmberHardwareError(code, 0x1234, queue)
    assert text in str(e) and "command id 4660" in str(e) and f"{code:#04x}" in str(e)


# -- the CLIs: one-line errors for bad arguments and files -------------------------------------

def _cli(kind, *args, cwd):
    import subprocess
    import sys
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "sim", kind, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind, args, match", [
    ("gemm", ["--m", "2", "--k", "2", "--n", "2", "--seed", "-1"], "--seed must be a non-neg"),
    ("embedding-bag", ["--rows", "5", "--dim", "2", "--bags", "1", "--pooling", "1", "--seed",
                       "-3"], "--seed must be a non-negative integer, not -3"),
    ("gemm", ["--m", "2", "--k", "2", "--n", "2", "--out", "/nonexistent/dir/c.npy"],
     "--out /nonexistent/dir/c.npy: directory /nonexistent/dir does not exist"),
    ("embedding-bag", ["--rows", "5", "--dim", "2", "--bags", "1", "--pooling", "1", "--out",
                       "/nonexistent/y.npy"], "directory /nonexistent does not exist"),
    ("gemm", ["--a", "garbage.npy", "--b", "a.npy"], "--a garbage.npy"),
    ("gemm", ["--a", "f32.npy", "--b", "a.npy"], "a must have dtype int8, not float32"),
    ("gemm", ["--a", "z.npz", "--b", "a.npy"], "a must be a numpy array, not NpzFile"),
    ("gemm", ["--a", "scalar.npy", "--b", "a.npy"], "a must be 2-D"),
    ("gemm", ["--a", "a.npy", "--b", "."], "--b ."),
    ("embedding-bag", ["--table", "a.npy", "--indices", "f32.npy", "--offsets", "off.npy"],
     "indices must"),
    ("embedding-bag", ["--table", "z.npz", "--indices", "idx.npy", "--offsets", "off.npy"],
     "table must be a numpy array, not NpzFile"),
    ("embedding-bag", ["--table", "a.npy", "--indices", "idx.npy", "--offsets", "off.npy",
                       "--weights", "garbage.npy"], "--weights garbage.npy"),
])
def test_cli_bad_input_one_line(tmp_path, kind, args, match):
    """Bad arguments and bad files: exit code non-zero and one line on stderr that names the
    argument, never a traceback, and no simulation."""
    np.save(tmp_path / "a.npy", np.zeros((3, 4), np.int8))
    np.save(tmp_path / "f32.npy", np.zeros((3, 4), np.float32))
    np.save(tmp_path / "scalar.npy", np.int8(3))
    np.save(tmp_path / "idx.npy", np.array([0, 1, 2], np.int64))
    np.save(tmp_path / "off.npy", np.array([0, 2], np.int64))
    np.savez(tmp_path / "z.npz", a=np.zeros(3))
    (tmp_path / "garbage.npy").write_text("not an array")
    r = _cli(kind, *args, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and match in lines[0], r.stderr
