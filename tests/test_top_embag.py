"""Embedding bags end to end on the whole chip: the plan (``sim/embag_plan.py``) executed on a
Python model of the queues and the engine, cocotb on Verilator (``sim/tb_top_embag.py``, AxiRam-
based pipelined DRAM, bit-exact against ``sim/golden_embag.py`` with the whole DRAM checked), and
the runtime (``Device.embedding_bag``) and ``python -m sim embedding-bag``."""

import json
import subprocess
import sys

import numpy as np
import pytest

from hw.config import get_preset
from sim import golden_embag as GE
from sim import host as H
from sim.device import Device, EmberHardwareError
from sim.embag_plan import (EMBAG_SEMAPHORES, MAX_DIM, EmbagTable, plan_embag,
                            scratchpad_map)
from sim.runner import ROOT, VEXRISCV_VLT, build_rtl, run_cocotb

def build_top_rtl(cfg):
    """The Verilator model of the whole top level (the same build as tests/test_top.py)."""
    from hw.cpu import vexriscv_source
    from hw.top import build_top
    return build_rtl(cfg.top_name, lambda: build_top(cfg),
                     extra_sources=[VEXRISCV_VLT, vexriscv_source()])


TOP_EMBAG_TESTS = ["dims_and_modes", "multi_table", "long_bags", "requantised", "errors",
                   "backpressure"]


@pytest.mark.rtl
@pytest.mark.parametrize("testcase", TOP_EMBAG_TESTS)
def test_top_embag(testcase):
    cfg = get_preset("tiny")
    run_cocotb(build_top_rtl(cfg), cfg.top_name, "sim.tb_top_embag", config=cfg,
               testcase=testcase)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("testcase", ["dims_and_modes", "multi_table", "long_bags",
                                      "requantised", "bandwidth"])
def test_top_embag_default(testcase):
    cfg = get_preset("default")
    test_dir = run_cocotb(build_top_rtl(cfg), cfg.top_name, "sim.tb_top_embag", config=cfg,
                          testcase=testcase)
    if testcase == "bandwidth":
        print((test_dir / "embag_top_perf.json").read_text())


# ---------------------------------------------------------------------------------------------
# The plan, without simulation.

class EmbagPlanModel:
    """Executes a plan on a model of the command processor, the DMA and the engine.

    Queues issue in order when their semaphores allow; up to ``inflight`` commands per queue are
    in flight and complete in order at random moments. Data moves at issue: loads and stores copy
    bytes, a TABLE sets the table registers, a POOL reads its lists from the scratchpad, gathers
    the rows from DRAM and writes the pooled (or requantised) bags into the scratchpad, carrying
    an open bag (``cont_out``) to the next POOL (``cont_in``). Every scratchpad word a command in
    flight touches is held until it completes; any overlap other than two reads is a race."""

    def __init__(self, cfg, plan, dram, rng, inflight=4):
        self.cfg, self.plan, self.dram, self.rng = cfg, plan, dram, rng
        self.W = cfg.bus_bytes
        self.sram = np.zeros(cfg.sram_bytes, np.uint8)
        self.sems = [0] * 16
        for s, v in plan.semaphores.items():
            self.sems[s] = v
        self.queues = [[c for c in plan.commands if c.queue == q] for q in range(4)]
        self.flight = [[] for _ in range(4)]
        self.inflight = inflight
        self.holds = {}
        self.table = None
        self.carry = None          # (sum vector int64, count)

    def _touch(self, cmd, lo, hi, kind):
        for w in range(lo // self.W, (hi - 1) // self.W + 1) if hi > lo else ():
            held = self.holds.get(w)
            if held and not (held[0] == "r" and kind == "r") and held[1] != {cmd.id}:
                raise AssertionError(f"race on scratchpad word {w}: {cmd.note} against "
                                     f"commands {sorted(held[1])}")
            kind = "w" if held and held[0] == "w" else kind
            self.holds[w] = (kind, (held[1] if held else set()) | {cmd.id})

    def _release(self, cmd):
        for w in list(self.holds):
            kind, ids = self.holds[w]
            ids = ids - {cmd.id}
            if ids:
                self.holds[w] = (kind, ids)
            else:
                del self.holds[w]

    def _issue(self, cmd):
        a = H.decode_command(cmd.words)["args"]
        if cmd.queue in (0, 1):
            dram, sram, rows, row_bytes, dstride, sstride = a
            for r in range(rows):
                s0, d0 = sram + r * sstride, dram + r * dstride
                self._touch(cmd, s0, s0 + row_bytes, "w" if cmd.queue == 0 else "r")
                if cmd.queue == 0:
                    self.sram[s0:s0 + row_bytes] = self.dram[d0:d0 + row_bytes]
                else:
                    self.dram[d0:d0 + row_bytes] = self.sram[s0:s0 + row_bytes]
            return
        assert cmd.queue == 3
        if a[3] >> 31:                       # TABLE
            scal = a[5]
            s8 = [((scal >> (8 * i)) & 0xFF) for i in range(4)]
            s8 = [v - 256 if v >= 128 else v for v in s8]
            mult = a[4] - (1 << 32) if a[4] >> 31 else a[4]
            self.table = dict(addr=a[0], rows=a[1], stride=a[2], dim=a[3] & 0xFFFF,
                              requant=(a[3] >> 16) & 1, rq=(mult, *s8))
            return
        t, W = self.table, self.W
        idx_addr, len_addr = (a[0] & 0xFFFF) * W, (a[0] >> 16) * W
        wgt_addr, mode = (a[1] & 0xFFFF) * W, (a[1] >> 16) & 3
        cont_in, cont_out = (a[1] >> 18) & 1, (a[1] >> 19) & 1
        out_addr, out_stride, bags = a[2], a[3], a[4]
        lens = self.sram[len_addr:len_addr + 4 * bags].view("<i4").astype(np.int64)
        n = int(lens.sum())
        idx = self.sram[idx_addr:idx_addr + 4 * n].view("<i4").astype(np.int64)
        self._touch(cmd, len_addr, len_addr + 4 * bags, "r")
        self._touch(cmd, idx_addr, idx_addr + 4 * n, "r")
        w = np.ones(n, np.int64)
        if mode == 2:
            w = self.sram[wgt_addr:wgt_addr + n].view(np.int8).astype(np.int64)
            self._touch(cmd, wgt_addr, wgt_addr + n, "r")
        assert (idx >= 0).all() and (idx < t["rows"]).all()
        dim = t["dim"]
        rows = np.stack([self.dram[t["addr"] + i * t["stride"]:][:dim].view(np.int8)
                         for i in idx]).astype(np.int64) if n else np.zeros((0, dim), np.int64)
        k = 0
        e = 1 if t["requant"] else 4
        for b in range(bags):
            acc = rows[k:k + lens[b]] * w[k:k + lens[b], None]
            s, cnt = acc.sum(axis=0), int(lens[b])
            k += int(lens[b])
            if b == 0 and cont_in:
                assert self.carry is not None, "cont_in with nothing open"
                s, cnt = s + self.carry[0], cnt + self.carry[1]
                self.carry = None
            if b == bags - 1 and cont_out:
                self.carry = (s, cnt)
                continue
            s = ((s + 2**31) % 2**32) - 2**31
            if mode == 1 and cnt:
                s = GE.mean_round(s, np.full(dim, cnt))
            out = s.astype(np.int32)[None, :]
            if t["requant"]:
                out = GE.requantise(out, *t["rq"])
            at = out_addr + b * out_stride
            self._touch(cmd, at, at + e * dim, "w")
            self.sram[at:at + e * dim] = np.ascontiguousarray(
                out[0].astype("<i4" if e == 4 else np.int8)).view(np.uint8)

    def run(self):
        steps = 0
        while any(self.queues) or any(self.flight):
            steps += 1
            assert steps < 1_000_000, "no progress"
            moves = []
            for q in range(4):
                if self.queues[q] and len(self.flight[q]) < self.inflight:
                    f = H.decode_command(self.queues[q][0].words)
                    waits = [w for w in (f["wait"], f["wait2"]) if w != H.SEM_NONE]
                    if all(self.sems[w] for w in waits):
                        moves.append(("issue", q))
                if self.flight[q]:
                    moves.append(("done", q))
            assert moves, f"deadlock: sems {self.sems[4:8]}"
            kind, q = moves[self.rng.integers(len(moves))]
            if kind == "issue":
                if q == 3 and self.flight[3]:
                    # The engine takes one command at a time: model it as completing first.
                    moves = [("done", 3)]
                    kind = "done"
                else:
                    cmd = self.queues[q].pop(0)
                    f = H.decode_command(cmd.words)
                    for w in (f["wait"], f["wait2"]):
                        if w != H.SEM_NONE:
                            self.sems[w] -= 1
                    self._issue(cmd)
                    self.flight[q].append(cmd)
                    continue
            cmd = self.flight[q].pop(0)
            self._release(cmd)
            f = H.decode_command(cmd.words)
            for s in (f["signal"], f["signal2"]):
                if s != H.SEM_NONE:
                    self.sems[s] += 1
        assert [self.sems[s] for s in EMBAG_SEMAPHORES] == list(EMBAG_SEMAPHORES.values())
        assert self.carry is None


def _job(rng, cfg, specs, mode, requant=False):
    """Lay out ``specs`` (rows, dim, lengths, indices, weights) in a DRAM image; plan; run the
    model; return (output, golden)."""
    tables, ets = [], []
    at = 0x100
    for n, (rows, dim, lens, idx, w) in enumerate(specs):
        tab = rng.integers(-128, 128, (rows, dim)).astype(np.int8)
        stride = dim + n                     # padded strides for all but the first table
        tables.append((tab, at, stride))
        rq = (int(rng.integers(2**30, 2**31)), int(rng.integers(-10, 2)), 3, -100, 90) \
            if requant else None
        ets.append(EmbagTable(rows=rows, dim=dim, lengths=np.asarray(lens, np.int64),
                              indices=np.asarray(idx, np.int64), weights=w, requant=rq,
                              table_addr=at + 3, row_stride=stride))
        at += rows * stride + 64
    list_addr = -(-at // 64) * 64 + 64
    dry = plan_embag(cfg, ets, mode=mode, list_addr=list_addr, out_addr=0)
    out_addr = list_addr + sum(len(b) for _, b in dry.blocks) + 64
    plan = plan_embag(cfg, ets, mode=mode, list_addr=list_addr, out_addr=out_addr)
    size = out_addr + plan.bags * plan.row_bytes + 64
    dram = rng.integers(0, 256, size).astype(np.uint8)
    for (tab, base, stride), et in zip(tables, ets):
        for r in range(tab.shape[0]):
            dram[et.table_addr + r * stride:][:tab.shape[1]] = tab[r].view(np.uint8)
    for addr, block in plan.blocks:
        dram[addr:addr + len(block)] = block
    before = dram.copy()
    EmbagPlanModel(cfg, plan, dram, rng, inflight=int(rng.integers(1, 5))).run()
    out = dram[out_addr:out_addr + plan.bags * plan.row_bytes].view(plan.out_dtype) \
        .reshape(plan.bags, -1)
    golden = []
    for (tab, _, _), et in zip(tables, ets):
        g = GE.ref_embedding_bag(tab, et.indices, lengths=et.lengths,
                                 per_sample_weights=et.weights, mode=mode)
        golden.append(GE.requantise(g, *et.requant) if requant else g)
    golden = np.concatenate(golden, axis=1)
    outside = np.ones(len(dram), bool)
    outside[out_addr:out_addr + plan.bags * plan.row_bytes] = False
    assert (dram[outside] == before[outside]).all(), "the plan wrote outside the output"
    return plan, out, golden


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_plan_is_race_free_and_exact(preset):
    """Plans of single tables and TBE jobs, with empty bags, many bags, and bags far larger than
    a list slot (split across commands), executed in random legal orders: no race, no deadlock,
    the golden output, nothing written outside the output."""
    cfg = get_preset(preset)
    rng = np.random.default_rng(3)
    slot = cfg.sram_depth * cfg.bus_bytes // 4           # int32 entries in a list slot
    for trial in range(6):
        specs = []
        bags = int(rng.integers(1, 60))
        for _ in range(int(rng.integers(1, 4))):
            rows, dim = int(rng.integers(1, 300)), int(rng.choice([1, 3, 64, 129, MAX_DIM]))
            lens = rng.integers(0, 9, bags)
            if trial % 2:
                lens[int(rng.integers(bags))] = int(rng.integers(slot, 3 * slot))
            idx = rng.integers(0, rows, int(lens.sum()))
            w = rng.integers(-128, 128, len(idx)).astype(np.int8) if rng.random() < 0.4 \
                else None
            specs.append((rows, dim, lens, idx, w))
        mode = "mean" if trial % 3 == 2 and all(s[4] is None for s in specs) else "sum"
        plan, out, golden = _job(rng, cfg, specs, mode, requant=trial == 4)
        np.testing.assert_array_equal(out, golden)
        if trial % 2:
            assert any(s.cont_out for s in plan.segments)


def test_plan_segments_and_commands():
    cfg = get_preset("tiny")
    smap = scratchpad_map(cfg)
    bank = cfg.sram_depth * cfg.bus_bytes
    assert smap == {"lists": ((0, bank), (bank, 2 * bank)),
                    "outputs": ((2 * bank, 4 * bank), (4 * bank, 6 * bank)),
                    "ring": (6 * bank, 8 * bank)}
    # One bag of 2000 indices on tiny (a list slot holds 511 with one length): four pieces.
    lens = np.array([2, 2000, 0, 1])
    t = EmbagTable(rows=10, dim=4, lengths=lens, indices=np.zeros(2003, np.int64),
                   table_addr=0x1000, row_stride=4)
    plan = plan_embag(cfg, [t], mode="mean", list_addr=0x4000, out_addr=0x8000, first_id=9)
    flags = [(s.bags, s.n, s.cont_in, s.cont_out) for s in plan.segments]
    assert flags[0] == (1, 2, False, False)
    assert [f[2:] for f in flags[1:]] == [(False, True), (True, True), (True, True),
                                          (True, False)]
    assert sum(f[1] for f in flags) == 2003 and flags[-1][0] == 3
    assert [c.id for c in plan.commands] == list(range(9, 9 + len(plan.commands)))
    assert plan.count(3) == len(plan.segments) + 1 and plan.count(0) == len(plan.segments)
    assert plan.count(1) == 2                      # only the segments that complete bags
    # Errors are located in the whole job.
    pools = [c.id for c in plan.commands if c.id in plan.pools]
    assert plan.locate(pools[2], 0, 5) == (0, 1, plan.segments[2].pos0 + 5)
    assert plan.locate(pools[4], 2, 0) == (0, 3, 0)
    assert plan.locate(12345, 0, 0) is None
    # Encoding (hw/embag.py EmbagCommands).
    tw = H.decode_command(H.embag_table_command(3, table_addr=0x123, rows=7, row_stride=9, dim=5,
                                                requant=True, multiplier=-2, shift=-3,
                                                zero_point=-4, act_min=-5, act_max=6).words)
    assert tw["opcode"] == 4 and tw["args"] == [0x123, 7, 9, 5 | 1 << 16 | 1 << 31,
                                                 0xFFFFFFFE, 0xFD | 0xFC << 8 | 0xFB << 16 |
                                                 6 << 24]
    pw = H.decode_command(H.embag_pool_command(3, idx_addr=1, len_addr=2, wgt_addr=3,
                                               out_addr=0x804, out_stride=12, bags=5,
                                               mode="weighted", cont_in=True).words)
    assert pw["args"] == [1 | 2 << 16, 3 | 2 << 16 | 1 << 18, 0x804, 12, 5, 0]
    with pytest.raises(ValueError, match=r"shift must be in \[-31, 31\]"):
        H.embag_table_command(1, table_addr=0, rows=1, row_stride=1, dim=1, shift=32)
    assert "index out of range" in H.describe_error(0x11, 3)


def test_max_dim_matches_engine():
    from hw.embag import embag_params
    assert all(embag_params(get_preset(p))["max_dim"] == MAX_DIM for p in ("tiny", "default"))


# ---------------------------------------------------------------------------------------------
# Runtime and CLI

T = np.arange(40, dtype=np.int8).reshape(10, 4)
I = np.array([1, 2, 3], np.int32)
O = np.array([0, 2], np.int32)


@pytest.mark.parametrize("args, kwargs, exc, match", [
    ((T.tolist(), I), {"offsets": O}, TypeError, r"table\[0\] must be a numpy array"),
    ((T.astype(np.int16), I), {"offsets": O}, TypeError, "table must have dtype int8"),
    ((T[0], I), {"offsets": O}, ValueError, "table must be 2-D"),
    ((np.zeros((3, 1025), np.int8), I), {"offsets": O}, ValueError,
     r"table must have dim in \[1, 1024\]"),
    ((T, I.tolist()), {"offsets": O}, TypeError, "indices must be a numpy array"),
    ((T, I.astype(np.float32)), {"offsets": O}, TypeError, "indices must have an integer dtype"),
    ((T, I), {}, ValueError, "give exactly one of offsets and lengths"),
    ((T, I), {"offsets": O, "lengths": np.array([3])}, ValueError, "exactly one of"),
    ((T, I), {"offsets": np.array([1])}, ValueError, r"offsets\[0\] must be 0"),
    ((T, I), {"offsets": O, "include_last_offset": True}, ValueError,
     r"offsets\[-1\] must equal len\(indices\)"),
    ((T, I), {"lengths": np.array([2])}, ValueError, "lengths must sum to"),
    ((T, I), {"offsets": O, "mode": "max"}, ValueError, "mode must be 'sum' or 'mean'"),
    ((T, I), {"offsets": O, "per_sample_weights": np.ones(3, np.float32)}, TypeError,
     "per_sample_weights must have dtype int8"),
    ((T, I), {"offsets": O, "per_sample_weights": np.ones(2, np.int8)}, ValueError,
     "per_sample_weights must have the shape of indices"),
    ((T, I), {"offsets": O, "per_sample_weights": np.ones(3, np.int8), "mode": "mean"},
     ValueError, "per_sample_weights needs mode 'sum'"),
    ((T, I), {"offsets": O, "multiplier": 2**30}, ValueError, "multiplier is given but shift"),
    ((T, I), {"offsets": O, "multiplier": 2**30, "shift": 40}, ValueError,
     r"shift must be in \[-31, 31\]"),
    ((T, I), {"offsets": O, "zero_point": 1}, ValueError, "apply to requantised"),
    (([T, T], I), {"offsets": O}, TypeError, "indices must be a list with one entry per table"),
    (([T, T], [I, I]), {"offsets": [O]}, ValueError, r"offsets must have one entry per table"),
    (([T, T], [I, I[:2]]), {"lengths": [np.array([3]), np.array([1, 1])]}, ValueError,
     "every table needs the same number of bags"),
    (([], []), {"offsets": []}, ValueError, "table must hold at least one table"),
])
def test_embedding_bag_argument_errors(args, kwargs, exc, match):
    dev = Device("tiny")
    with pytest.raises(exc, match=match):
        dev.embedding_bag(*args, **kwargs)
    assert dev.last_stats is None


def test_no_bags_needs_no_hardware():
    out = Device("tiny").embedding_bag(T, np.zeros(0, np.int32), offsets=np.zeros(0, np.int32))
    assert out.shape == (0, 4) and out.dtype == np.int32


@pytest.mark.rtl
def test_device_embedding_bag():
    """Device.embedding_bag on tiny: offsets with include_last_offset, mean, weights, TBE with
    INT8 output, statistics; an out-of-range index is an EmberHardwareError naming the table,
    bag and position; the device works after it."""
    dev = Device("tiny")
    rng = np.random.default_rng(4)
    table = rng.integers(-128, 128, (50, 7)).astype(np.int8)
    idx = rng.integers(0, 50, 30).astype(np.int32)
    offsets = np.array([0, 4, 4, 19, 30], np.int32)
    got = dev.embedding_bag(table, idx, offsets, mode="mean", include_last_offset=True)
    want = GE.ref_embedding_bag(table, idx, offsets, mode="mean", include_last_offset=True)
    np.testing.assert_array_equal(got, want)
    s = dev.last_stats
    assert s["bags"] == 4 and s["bytes_gathered"] == 30 * 7 and s["bus_bytes_per_cycle"] == 8
    assert s["gather_utilization"] == pytest.approx(30 * 7 / (s["cycles"] * 8))
    # Lists: 4 lengths (two 8-byte words) and 30 indices (15 words), in one segment.
    assert s["list_bytes"] == 16 + 120
    assert s["bandwidth_utilization"] == pytest.approx((30 * 7 + 136) / (s["cycles"] * 8))
    assert 0 < s["engines"]["embag"]["busy"] <= s["cycles"]

    t2 = rng.integers(-128, 128, (20, 3)).astype(np.int8)
    i2 = rng.integers(0, 20, 9).astype(np.int32)
    w = rng.integers(-128, 128, 30).astype(np.int8)
    lens = [np.diff(offsets), np.array([3, 0, 5, 1])]
    got = dev.embedding_bag([table, t2], [idx, i2], lengths=lens,
                            per_sample_weights=[w, None], multiplier=[2**30, 2**31 - 1],
                            shift=[-6, -9], zero_point=2)
    want = np.concatenate([
        GE.requantise(GE.ref_embedding_bag(table, idx, lengths=lens[0], per_sample_weights=w),
                      2**30, -6, 2),
        GE.requantise(GE.ref_embedding_bag(t2, i2, lengths=lens[1]), 2**31 - 1, -9, 2)], axis=1)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, want)

    bad = idx.copy()
    bad[21] = 50
    stats = dev.last_stats
    with pytest.raises(EmberHardwareError, match=r"0x11 \(embag engine: index out of range\) "
                                                 r"on command id \d+ in queue 3 at table 1, "
                                                 r"bag 3, position 2") as info:
        dev.embedding_bag([t2, table], [i2, bad], lengths=[lens[1], lens[0]])
    e = info.value
    assert (e.code, e.queue, e.table, e.bag, e.pos) == (0x11, 3, 1, 3, 2)
    assert dev.last_stats is stats
    np.testing.assert_array_equal(dev.embedding_bag(table, idx, offsets[:-1]),
                                  GE.ref_embedding_bag(table, idx, offsets[:-1]))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "sim", "embedding-bag", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.rtl
def test_cli_embedding_bag():
    """The issue's command: ok true, and the bandwidth fields."""
    r = _cli("--rows", "1000", "--dim", "64", "--bags", "32", "--pooling", "20", "--seed", "1",
             "--config", "tiny")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["ok"] is True and report["mismatches"] == 0
    assert report["bytes_gathered"] == 32 * 20 * 64 and report["bus_bytes_per_cycle"] == 8
    assert report["gather_utilization"] == pytest.approx(
        report["bytes_gathered"] / (report["cycles"] * 8), abs=1e-4)
    # Lengths and indices, each list padded to an 8-byte word in every segment.
    lists = 32 * 4 + 32 * 20 * 4
    assert lists <= report["list_bytes"] <= lists + 2 * 8 * report["segments"]
    assert report["bandwidth_utilization"] == pytest.approx(
        (report["bytes_gathered"] + report["list_bytes"]) / (report["cycles"] * 8), abs=1e-4)
    assert report["bytes_per_cycle"] == pytest.approx(report["bytes_gathered"] / report["cycles"],
                                                      abs=1e-4)
    print(r.stdout.strip().splitlines()[-1])


@pytest.mark.rtl
def test_cli_embedding_bag_files(tmp_path):
    """Files in, file out, weights, include-last-offset, Zipf generation, DRAM latency; an
    out-of-range index exits non-zero with one line naming the bag and the position."""
    rng = np.random.default_rng(6)
    table = rng.integers(-128, 128, (30, 5)).astype(np.int8)
    idx = rng.integers(0, 30, 12).astype(np.int32)
    offsets = np.array([0, 5, 5, 12], np.int32)
    w = rng.integers(-128, 128, 12).astype(np.int8)
    for name, value in (("t", table), ("i", idx), ("o", offsets), ("w", w)):
        np.save(tmp_path / f"{name}.npy", value)
    out = tmp_path / "y.npy"
    r = _cli("--table", str(tmp_path / "t.npy"), "--indices", str(tmp_path / "i.npy"),
             "--offsets", str(tmp_path / "o.npy"), "--weights", str(tmp_path / "w.npy"),
             "--include-last-offset", "--out", str(out), "--dram-latency", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["dram_latency"] == 30 and report["weighted"]
    np.testing.assert_array_equal(np.load(out), GE.ref_embedding_bag(
        table, idx, offsets, per_sample_weights=w, include_last_offset=True))
    bad = idx.copy()
    bad[7] = -3
    np.save(tmp_path / "i.npy", bad)
    r = _cli("--table", str(tmp_path / "t.npy"), "--indices", str(tmp_path / "i.npy"),
             "--offsets", str(tmp_path / "o.npy"), "--mode", "mean")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "0x11" in lines[0] and "bag 2, position 2" in lines[0], r.stderr


@pytest.mark.parametrize("args, match", [
    (["--rows", "10", "--dim", "4"], "give --table, --indices and --offsets, or all of"),
    (["--rows", "0", "--dim", "4", "--bags", "1", "--pooling", "1"], "--rows must be at least 1"),
    (["--rows", "5", "--dim", "2000", "--bags", "1", "--pooling", "1"],
     r"table must have dim in [1, 1024]"),
    (["--table", "/nonexistent.npy"], "--indices, --offsets missing"),
    (["--table", "/none.npy", "--indices", "/none.npy", "--offsets", "/none.npy"],
     "--table /none.npy"),
    (["--rows", "5", "--dim", "2", "--bags", "1", "--pooling", "1", "--mode", "max"],
     "invalid choice: 'max'"),
    (["--rows", "5", "--dim", "2", "--bags", "1", "--pooling", "1", "--weighted", "--mode",
      "mean"], "per_sample_weights needs mode 'sum'"),
    (["--rows", "5", "--dim", "2", "--bags", "1", "--pooling", "1", "--config", "nope"],
     "unknown preset 'nope'"),
])
def test_cli_embedding_bag_errors(args, match):
    """Bad arguments exit non-zero with a one-line message, before any simulation."""
    r = _cli(*args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_cli_embedding_bag_mismatch(monkeypatch, capsys):
    """A wrong result exits non-zero naming the first mismatch (Device.embedding_bag replaced)."""
    from sim import __main__ as cli

    def fake(self, table, indices, **kw):
        out = GE.ref_embedding_bag(table, indices, kw["offsets"]).copy()
        out[1, 0] += 1
        self.last_stats = {"cycles": 10, "engine_cycles": 5, "bytes_gathered": 8,
                           "list_bytes": 16, "bytes_per_cycle": 0.8, "bus_bytes_per_cycle": 8,
                           "bandwidth_utilization": 0.3, "gather_utilization": 0.1,
                           "engine_bandwidth_utilization": 0.2,
                           "plan": {"segments": 1, "commands": [1, 1, 0, 2]}, "engines": {},
                           "sim_seconds": 0.0, "output": "int32"}
        return out
    monkeypatch.setattr(Device, "embedding_bag", fake)
    with pytest.raises(SystemExit) as info:
        cli.main(["embedding-bag", "--rows", "9", "--dim", "3", "--bags", "2", "--pooling",
                  "2"])
    assert "differs from the golden model at 1 of 6 elements, first at [1, 0]" in \
        str(info.value.code)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"] is False
