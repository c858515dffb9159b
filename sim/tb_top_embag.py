"""cocotb testbench: embedding bags on the whole Ember top level, driven from the host port.

The DUT is ``build_top(cfg)`` (the same build as ``tests/test_top.py``) with the pipelined DRAM
model of ``sim/tb_dma.py`` (:class:`sim.tb_top.TB` with ``dram_latency``), so that many gathers
are in flight. :func:`embag_job` runs one job the way the runtime does (``sim/embag_plan.py``):
it writes the tables and the list blocks into DRAM, pushes the plan's commands through the host
registers, waits, and then compares the *whole* DRAM with the expected image: the output rows
from the golden model (``sim/golden_embag.py``), every other byte as it was. An error job must
leave the whole DRAM as it was.

:func:`embag_job` is also used by ``sim/tb_job.py`` (``Device.embedding_bag``).
Random tests log their seed; set ``EMBER_SEED`` to replay one.
"""

import itertools
import json
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from sim import golden_embag as GE
from sim import host as H
from sim.embag_plan import EmbagTable, embag_dram_layout, plan_embag
from sim.tb_top import TB

__all__ = ["embag_job", "golden_output", "new_tb"]


def golden_output(tables, indices, lengths, weights, mode, requant):
    """The expected ``[bags, Σ dim]`` output (int32, or int8 when ``requant`` is given)."""
    cols = []
    for t, table in enumerate(tables):
        w = weights[t] if weights is not None else None
        out = GE.ref_embedding_bag(table, np.asarray(indices[t], np.int64),
                                   lengths=np.asarray(lengths[t], np.int64),
                                   per_sample_weights=w, mode=mode)
        if requant is not None:
            out = GE.requantise(out, *requant[t])
        cols.append(out)
    return np.concatenate(cols, axis=1)


async def new_tb(dut, *, latency=0, dram_size=1 << 21, seed=None, host_irq=False):
    tb = TB(dut, dram_size=dram_size, seed=seed, dram_latency=latency, host_irq=host_irq)
    await tb.reset()
    tb.fill_dram_random()
    return tb


def _specs(tables, indices, lengths, weights, requant):
    n = len(tables)
    weights = weights if weights is not None else [None] * n
    return [EmbagTable(rows=tables[t].shape[0], dim=tables[t].shape[1],
                       lengths=np.asarray(lengths[t], np.int64),
                       indices=np.asarray(indices[t], np.int64), weights=weights[t],
                       requant=None if requant is None else tuple(requant[t]))
            for t in range(n)]


def place_embag_job(tb, tables, specs, *, mode, requant, offsets=None, strides=None,
                    first_id=1):
    """Lay an embedding-bag job out in the testbench's DRAM and plan it.

    ``specs`` are :class:`EmbagTable` without addresses. A dry plan sizes the index and length
    lists, :func:`embag_dram_layout` places the tables (``offsets``, ``strides``), the lists and
    the output, and the tables and lists are written into DRAM. Returns ``(plan, layout, mem)``
    (``mem`` is the DRAM image, a view of the model's memory).
    """
    cfg = tb.cfg
    dry = plan_embag(cfg, specs, mode=mode, list_addr=0, out_addr=0)
    list_bytes = sum(len(b) for _, b in dry.blocks)
    lay = embag_dram_layout(cfg, [t.shape for t in tables], bags=len(specs[0].lengths),
                            list_bytes=list_bytes, requant=requant is not None,
                            offsets=offsets, strides=strides)
    assert lay.size <= len(tb.ram.mem), f"the job needs {lay.size} bytes of DRAM"
    specs = [EmbagTable(**{**s.__dict__, "table_addr": a, "row_stride": st})
             for s, a, st in zip(specs, lay.table_addrs, lay.row_strides)]
    plan = plan_embag(cfg, specs, mode=mode, list_addr=lay.list_addr, out_addr=lay.out_addr,
                      first_id=first_id)
    mem = tb.dram()
    for table, addr, stride in zip(tables, lay.table_addrs, lay.row_strides):
        rows, dim = table.shape
        at = addr + np.arange(rows)[:, None] * stride + np.arange(dim)[None, :]
        mem[at] = table.view(np.uint8)
    for addr, block in plan.blocks:
        mem[addr:addr + len(block)] = block
    return plan, lay, mem


async def embag_job(tb, tables, indices, lengths, *, weights=None, mode="sum", requant=None,
                    offsets=None, strides=None, first_id=1, golden=True, timeout=1_000_000,
                    dram_check=True):
    """Run one embedding-bag job through the host port and check the whole DRAM.

    ``tables`` is a list of int8 ``[rows, dim]`` arrays; ``indices``, ``lengths`` and
    ``weights`` (or None) are lists with one entry per table (a weight entry may be None);
    ``requant`` is None (INT32 output) or a list of ``(multiplier, shift, zero_point, act_min,
    act_max)`` per table. ``offsets`` (bytes added to each table's aligned DRAM address) and
    ``strides`` (row strides) place the tables. With ``golden`` the output must equal the golden
    model; otherwise it is only read back (the DRAM outside it is checked either way).

    Returns a dict: ``out``, ``plan``, ``layout``, ``perf``, ``host_cycles``.
    Raises :class:`sim.host.EmberHardwareError` (with ``table``, ``bag`` and ``pos`` of the
    whole job for an engine error) after checking that the DRAM is unchanged.
    """
    specs = _specs(tables, indices, lengths, weights, requant)
    bags = len(specs[0].lengths)
    shapes = [t.shape for t in tables]
    plan, lay, mem = place_embag_job(tb, tables, specs, mode=mode, requant=requant,
                                     offsets=offsets, strides=strides, first_id=first_id)
    expected = mem.copy()
    out_lo, out_hi = lay.out_addr, lay.out_addr + lay.out_bytes
    tb.log.info("embedding bags: %d table(s) %s, %d bags, mode %s%s, %d segments, %d commands "
                "(%s)", len(tables), shapes, bags, mode,
                "" if requant is None else ", INT8 output", len(plan.segments),
                len(plan.commands), "/".join(str(plan.count(q)) for q in range(4)))

    drv = tb.driver
    drv.timeout = timeout
    start = tb.cycle()
    await drv.set_semaphores(plan.semaphores)
    drv.write("PERF_CLEAR", 1)
    try:
        await drv.push_all(plan.commands)
        await drv.wait_idle()
    except H.EmberHardwareError as e:
        where = plan.locate(e.cmd_id, e.bag, e.pos) if e.bag is not None else None
        await ClockCycles(tb.dut.clk, 200)          # nothing more may reach DRAM
        if dram_check:
            _check_after_error(tb, plan, expected, e, where, (out_lo, out_hi),
                               tables, indices, lengths, weights, mode, requant)
        if where is None:
            raise
        raise H.EmberHardwareError(e.code, e.cmd_id, e.queue, table=where[0], bag=where[1],
                                   pos=where[2]) from None
    host_cycles = tb.cycle() - start
    perf = await drv.perf()
    out = mem[out_lo:out_hi].copy().view(plan.out_dtype).reshape(bags, -1)
    if golden:
        want = golden_output(tables, indices, lengths, weights, mode, requant)
        expected[out_lo:out_hi] = np.ascontiguousarray(want.astype(plan.out_dtype)).view(
            np.uint8).reshape(-1)
    else:
        expected[out_lo:out_hi] = mem[out_lo:out_hi]
    if dram_check:
        tb.check_dram(expected, f"embedding bags ({len(tables)} tables, {bags} bags): ")
    violations = getattr(tb.ram, "violations", [])
    assert not violations, f"DRAM bus violations: {violations[:5]}"
    err = await drv.errors()
    assert err["code"] == 0, f"error registers set after a clean run: {err}"
    tb.log.info("embedding bags: %d cycles (PERF_CYCLES %d, engine busy %d), %d bytes gathered, "
                "%.3f of the bus", host_cycles, perf["cycles"], perf["busy3"],
                plan.bytes_gathered, plan.bytes_gathered / (perf["cycles"] * tb.cfg.bus_bytes))
    return {"out": out, "plan": plan, "layout": lay, "perf": perf, "host_cycles": host_cycles}


def _check_after_error(tb, plan, expected, err, where, out_range, tables, indices, lengths,
                       weights, mode, requant):
    """The DRAM after a failed job. If the first POOL command failed, the whole DRAM is as it
    was. Otherwise stores of segments before the failing one may have run: every byte outside
    the output is as it was, and each table's part of each output row is either untouched or
    (for bags before the failing one) the golden value."""
    pools = [c.id for c in plan.commands if c.id in plan.pools]
    if not pools or err.cmd_id == pools[0] or where is None:
        tb.check_dram(expected, f"after hardware error {err}: ")
        return
    lo, hi = out_range
    mem = tb.dram()
    outside = expected.copy()
    outside[lo:hi] = mem[lo:hi]
    tb.check_dram(outside, f"after hardware error {err} (outside the output): ")
    # Golden values of the bags that may have been stored (bad indices made harmless).
    safe = [np.clip(np.asarray(i, np.int64), 0, t.shape[0] - 1) for i, t in zip(indices, tables)]
    want = golden_output(tables, safe, lengths, weights, mode, requant).astype(plan.out_dtype)
    got = mem[lo:hi].view(plan.out_dtype).reshape(want.shape)
    old = expected[lo:hi].view(plan.out_dtype).reshape(want.shape)
    col = np.concatenate([[0], np.cumsum([t.shape[1] for t in tables])])
    for t in range(len(tables)):
        sl = slice(col[t], col[t + 1])
        for b in range(want.shape[0]):
            if (got[b, sl] == old[b, sl]).all():
                continue
            late = t > where[0] or (t == where[0] and b >= where[1])
            assert not late and (got[b, sl] == want[b, sl]).all(), (
                f"after hardware error {err}: output row {b}, table {t} was written "
                f"({'after the failing bag' if late else 'with a wrong value'})")


# -- inputs ---------------------------------------------------------------------------------------

def random_bags(rng, *, rows, bags, pooling, dist="uniform", p_empty=0.15, dup=False):
    """``(indices, lengths)``: bag lengths around ``pooling`` (some empty), indices uniform or
    Zipf-distributed (many repeats of the popular rows); with ``dup`` every bag of two or more
    repeats its first index."""
    lengths = rng.integers(0, 2 * pooling + 1, bags)
    lengths[rng.random(bags) < p_empty] = 0
    n = int(lengths.sum())
    if dist == "uniform":
        idx = rng.integers(0, rows, n)
    elif dist == "zipf":
        idx = (rng.zipf(1.15, n) - 1) % rows
    else:
        raise ValueError(dist)
    if dup:
        starts = np.concatenate([[0], np.cumsum(lengths)])
        for b in range(bags):
            if lengths[b] >= 2:
                idx[starts[b] + 1:starts[b + 1]:2] = idx[starts[b]]
    return idx.astype(np.int32), lengths.astype(np.int64)


def random_requant(rng):
    lo, hi = sorted(int(x) for x in rng.integers(-128, 128, 2))
    return (int(rng.integers(2**30, 2**31)), int(rng.integers(-12, 3)),
            int(rng.integers(-128, 128)), lo, hi)


def random_table(rng, rows, dim):
    return rng.integers(-128, 128, (rows, dim)).astype(np.int8)


def _random_pauses(tb, p):
    bits = [bool(x) for x in tb.rng.random(97) < p]
    return lambda: itertools.cycle(bits)


# -- tests ----------------------------------------------------------------------------------------

@cocotb.test()
async def dims_and_modes(dut):
    """dim 1, 3, 64, 129 in sum, mean and weighted modes; uniform and Zipf indices, duplicates
    within bags, empty bags (and a job of only empty bags); tables at unaligned DRAM addresses
    and with padded row strides. Whole DRAM checked after each job."""
    tb = await new_tb(dut)
    rng = tb.rng
    next_id = 1
    cases = [(1, "sum", "uniform"), (3, "mean", "zipf"), (64, "weighted", "uniform"),
             (129, "sum", "zipf"), (3, "weighted", "zipf"), (129, "mean", "uniform"),
             (64, "sum", "zipf")]
    for n, (dim, mode, dist) in enumerate(cases):
        rows = int(rng.integers(20, 400))
        table = random_table(rng, rows, dim)
        idx, lens = random_bags(rng, rows=rows, bags=int(rng.integers(1, 12)), pooling=6,
                                dist=dist, dup=n % 2 == 0)
        weights = [rng.integers(-128, 128, len(idx)).astype(np.int8)] if mode == "weighted" \
            else None
        offsets = (int(rng.integers(0, 64)),)
        strides = (dim + int(rng.integers(0, 9)),)
        job = await embag_job(tb, [table], [idx], [lens], weights=weights,
                              mode="mean" if mode == "mean" else "sum", offsets=offsets,
                              strides=strides, first_id=next_id)
        next_id += len(job["plan"].commands)
    # Only empty bags: zeros, and no gather at all.
    table = random_table(rng, 5, 7)
    job = await embag_job(tb, [table], [np.zeros(0, np.int32)], [np.zeros(4, np.int64)],
                          mode="mean")
    assert not job["out"].any()
    assert job["perf"]["dma_rd_beats"] == job["plan"].list_bytes // tb.cfg.bus_bytes, \
        job["perf"]


@cocotb.test()
async def multi_table(dut):
    """TBE: several tables with their own rows and dim (1 to 129) in one job, pooled into
    concatenated output rows; sum, mean and a mix of weighted and unweighted tables; INT32 and
    requantised INT8 output."""
    tb = await new_tb(dut)
    rng = tb.rng
    next_id = 1
    for n, (mode, weighted, requant) in enumerate((("sum", (False, True, False), False),
                                                    ("mean", (False,) * 3, False),
                                                    ("sum", (True, False, True), True),
                                                    ("mean", (False,) * 3, True))):
        dims = [int(rng.choice([1, 3, 17, 64, 129])) for _ in range(3)]
        rows = [int(rng.integers(10, 300)) for _ in range(3)]
        bags = int(rng.integers(3, 14))
        tables = [random_table(rng, r, d) for r, d in zip(rows, dims)]
        idx, lens = zip(*(random_bags(rng, rows=r, bags=bags, pooling=5,
                                      dist="zipf" if n % 2 else "uniform") for r in rows))
        weights = [rng.integers(-128, 128, len(i)).astype(np.int8) if w else None
                   for i, w in zip(idx, weighted)] if any(weighted) else None
        rq = [random_requant(rng) for _ in range(3)] if requant else None
        offsets = tuple(int(x) for x in rng.integers(0, 64, 3))
        job = await embag_job(tb, tables, list(idx), list(lens), weights=weights, mode=mode,
                              requant=rq, offsets=offsets, first_id=next_id)
        assert job["plan"].count(3) >= 2 * 3           # a TABLE and a POOL per table
        next_id += len(job["plan"].commands)


@cocotb.test()
async def long_bags(dut):
    """Pooling factors beyond a list slot: bags of thousands of indices are split into pieces
    that the engine continues across commands (sum, weighted, mean: the mean divides by the
    whole bag's length), beside short and empty bags; and many bags over several segments."""
    tb = await new_tb(dut, dram_size=1 << 22)
    rng = tb.rng
    W, depth = tb.cfg.bus_bytes, tb.cfg.sram_depth
    slot_indices = depth * W // 4
    for mode, weighted in (("sum", False), ("mean", False), ("sum", True)):
        rows, dim = 500, 5
        table = random_table(rng, rows, dim)
        lens = np.array([3, 0, int(2.6 * slot_indices), 1, 0, slot_indices + 7, 2], np.int64)
        idx = rng.integers(0, rows, int(lens.sum())).astype(np.int32)
        w = [rng.integers(-128, 128, len(idx)).astype(np.int8)] if weighted else None
        job = await embag_job(tb, [table], [idx], [lens], weights=w, mode=mode)
        segs = job["plan"].segments
        assert any(s.cont_in and s.cont_out for s in segs), segs
        assert max(lens) > slot_indices
    # Many short bags: several segments, both list slots and both output slots.
    table = random_table(rng, 300, 64)
    idx, lens = random_bags(rng, rows=300, bags=400, pooling=4)
    job = await embag_job(tb, [table], [idx], [lens])
    assert len(job["plan"].segments) >= 3, job["plan"].segments


@cocotb.test()
async def requantised(dut):
    """INT8 output through the output stage: random parameters, saturation at both ends,
    clamps, a zero multiplier, dims that leave partial words (1, 3, 13) and dim 129."""
    tb = await new_tb(dut)
    rng = tb.rng
    cases = [(13, (2**30, 0, 0, -128, 127)), (3, (2**31 - 1, 10, 5, -128, 127)),
             (1, (2**30 + 12345, -20, -7, -10, 20)), (129, (0, 0, 3, -128, 127)),
             (64, random_requant(rng)), (13, (2**30, -31, -128, -128, 127))]
    for dim, rq in cases:
        rows = 200
        table = random_table(rng, rows, dim)
        idx, lens = random_bags(rng, rows=rows, bags=9, pooling=8)
        for mode in ("sum", "mean"):
            job = await embag_job(tb, [table], [idx], [lens], mode=mode, requant=[rq],
                                  offsets=(int(rng.integers(0, 8)),))
            assert job["out"].dtype == np.int8


@cocotb.test()
async def errors(dut):
    """An index outside [0, rows) (past the end, and negative): EmberHardwareError with code
    0x11, the POOL command's id, and the table, bag and position in the whole job; the whole
    DRAM is unchanged; later commands do not run. SOFT_RESET recovers and the next job is
    correct. A POOL before any TABLE is malformed (0x13). A SOFT_RESET during a long job
    cancels it, and the next job is correct (the cancelled job's completion is not taken for
    the next job's)."""
    tb = await new_tb(dut, latency=20)
    rng = tb.rng
    rows, dim = 100, 6
    tables = [random_table(rng, rows, dim), random_table(rng, 50, 3)]
    idx0, lens0 = random_bags(rng, rows=rows, bags=10, pooling=4, p_empty=0)
    idx1, lens1 = random_bags(rng, rows=50, bags=10, pooling=4, p_empty=0)
    for bad_value, t, k in ((rows, 0, int(lens0[:4].sum()) + 2), (-1, 1, 0),
                            (2**31 - 1, 1, int(lens1.sum()) - 1)):
        idx = [idx0.copy(), idx1.copy()]
        idx[t][k] = bad_value
        starts = np.concatenate([[0], np.cumsum([lens0, lens1][t])])
        bag = int(np.searchsorted(starts, k, side="right") - 1)
        pos = k - int(starts[bag])
        try:
            await embag_job(tb, tables, idx, [lens0, lens1], first_id=100)
        except H.EmberHardwareError as e:
            assert (e.code, e.queue, e.table, e.bag, e.pos) == (0x11, 3, t, bag, pos), str(e)
            assert "index out of range" in str(e) and f"bag {bag}, position {pos}" in str(e)
            assert 100 <= e.cmd_id < 100 + 20
        else:
            raise AssertionError("an out-of-range index did not raise EmberHardwareError")
        # One segment per table here: the registers name the same bag and position.
        assert (await tb.read_reg("EMBAG_ERR_BAG"), await tb.read_reg("EMBAG_ERR_POS")) == \
            (bag, pos)
        await tb.driver.soft_reset()
        await tb.write_reg("IRQ_STATUS", 1)

    # A POOL with no TABLE since the soft reset: malformed.
    pool = H.embag_pool_command(0x55, idx_addr=0, len_addr=0, out_addr=0, out_stride=4, bags=1)
    await tb.push_command(pool.words)
    await ClockCycles(dut.clk, 50)
    assert await tb.errors() == {"code": 0x13, "id": 0x55, "queue": 3}
    await tb.driver.soft_reset()

    # The device works after the errors.
    await embag_job(tb, tables, [idx0, idx1], [lens0, lens1])

    # SOFT_RESET during a long job: it is cancelled; the next job is correct.
    table = random_table(rng, 1000, 64)
    idx, lens = random_bags(rng, rows=1000, bags=40, pooling=20)
    cfg = tb.cfg
    spec = EmbagTable(rows=1000, dim=64, lengths=lens, indices=idx.astype(np.int64))
    mem = tb.dram()
    mem[0x10000:0x10000 + table.size] = table.view(np.uint8).reshape(-1)
    plan = plan_embag(cfg, [EmbagTable(**{**spec.__dict__, "table_addr": 0x10000,
                                          "row_stride": 64})],
                      mode="sum", list_addr=0x40000, out_addr=0x60000, first_id=7)
    for addr, block in plan.blocks:
        mem[addr:addr + len(block)] = block
    await tb.driver.set_semaphores(plan.semaphores)
    await tb.driver.push_all(plan.commands[:3])       # load, table, pool
    await ClockCycles(dut.clk, 300)
    assert await tb.read_reg("Q_PENDING3") >= 1, "the job finished before the reset"
    await tb.driver.soft_reset()
    await embag_job(tb, tables, [idx0, idx1], [lens0, lens1])


@cocotb.test()
async def backpressure(dut):
    """Random pauses on every DRAM channel and random latency (0 to 60 cycles), on jobs that
    split bags across commands and use every slot: bit-exact and whole-DRAM checked."""
    tb = await new_tb(dut)
    tb.ram.set_pause(_random_pauses(tb, 0.3))
    tb.ram.latency = (0, 60)
    rng = tb.rng
    for n in range(3):
        dims = [int(rng.choice([1, 3, 64, 129])) for _ in range(2)]
        tables = [random_table(rng, 200, d) for d in dims]
        bags = 30
        idx, lens = zip(*(random_bags(rng, rows=200, bags=bags, pooling=12,
                                      dist=("uniform", "zipf")[n % 2]) for _ in dims))
        lens = [l.copy() for l in lens]
        idx = list(idx)
        if n == 2:      # one long bag in table 0
            extra = rng.integers(0, 200, 700).astype(np.int32)
            lens[0][5] += 700
            k = int(lens[0][:5].sum())
            idx[0] = np.concatenate([idx[0][:k], extra, idx[0][k:]])
        weights = [rng.integers(-128, 128, len(idx[0])).astype(np.int8), None]
        await embag_job(tb, tables, idx, lens, weights=weights if n == 1 else None,
                        mode=("sum", "sum", "mean")[n],
                        offsets=tuple(int(x) for x in rng.integers(0, 64, 2)))


# -- bandwidth --------------------------------------------------------------------------------

@cocotb.test()
async def bandwidth(dut):
    """Gather bandwidth of single-table jobs with uniform indices at DRAM latency 0 and 100
    (figures in ``embag_top_perf.json``): bytes of table rows gathered per cycle, end to end
    (PERF_CYCLES) and while the engine held a command (PERF_BUSY3)."""
    tb = await new_tb(dut, dram_size=1 << 22)
    rng = tb.rng
    cfg = tb.cfg
    figures = []
    for dim in (64, 256):
        for latency in (0, 100):
            tb.ram.latency = (latency, latency)
            rows, bags, pooling = 1000, 32, 20
            table = random_table(rng, rows, dim)
            lens = np.full(bags, pooling, np.int64)
            idx = rng.integers(0, rows, bags * pooling).astype(np.int32)
            job = await embag_job(tb, [table], [idx], [lens])
            perf, plan = job["perf"], job["plan"]
            fig = {"dim": dim, "latency": latency, "rows": rows, "bags": bags,
                   "pooling": pooling, "bytes_gathered": plan.bytes_gathered,
                   "cycles": perf["cycles"], "engine_cycles": perf["busy3"],
                   "bandwidth_utilization": round(
                       plan.bytes_gathered / (perf["cycles"] * cfg.bus_bytes), 4),
                   "engine_bandwidth_utilization": round(
                       plan.bytes_gathered / (perf["busy3"] * cfg.bus_bytes), 4)}
            tb.log.info("bandwidth: %s", fig)
            figures.append(fig)
    Path("embag_top_perf.json").write_text(json.dumps(
        {"config": cfg.name, "outstanding": cfg.dma_outstanding, "figures": figures},
        indent=1))
