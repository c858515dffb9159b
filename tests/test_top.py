"""The Ember top level through its host port: registers, host-driven GEMMs (whole DRAM checked),
requantisation corners, errors and soft reset, performance counters, firmware loading.

The cocotb testbench is ``sim/tb_top.py``; the GEMM command plan is ``sim/host.py``, which is
also checked here without simulation by executing plans on a Python model of the command
processor (semaphores, per-queue order, engines in flight) that flags every buffer race.
"""

import itertools

import numpy as np
import pytest

from hw.config import get_preset
from hw.cpu import vexriscv_source
from hw.top import build_top
from sim import host as H
from sim.golden import ref_matmul
from sim.golden_requant import ref_bias_add
from sim.layout import pack_a, pack_b
from sim.runner import VEXRISCV_VLT, build_rtl, run_cocotb

TOP_TESTS = ["registers", "random_gemms", "multi_block_gemm", "requant_corners",
             "error_and_recovery", "queue_pacing", "perf_counters", "firmware_boot",
             "irq_status_read", "irq_causes", "irq_driven_gemm", "dma_field_overflow", "store_blocks", "soft_reset_dma_in_flight",
             "double_signal",
             "firmware_gemms", "firmware_vs_host", "firmware_errors"]

def build_top_rtl(cfg):
    """Build (once per preset) the Verilator model of the whole top level."""
    return build_rtl(cfg.top_name, lambda: build_top(cfg),
                     extra_sources=[VEXRISCV_VLT, vexriscv_source()])


@pytest.mark.rtl
@pytest.mark.parametrize("testcase", TOP_TESTS)
def test_top(testcase):
    cfg = get_preset("tiny")
    run_cocotb(build_top_rtl(cfg), cfg.top_name, "sim.tb_top", config=cfg, testcase=testcase)


@pytest.mark.rtl
@pytest.mark.parametrize("cpu_period_ns", ["7", "29"])
def test_top_cpu_clock(cpu_period_ns):
    """tiny runs the control core on its own clock (``cpu_async``): every test above runs it
    at the default 13 ns against the 10 ns system clock; this runs a firmware GEMM (result and
    command stream checked exactly) with a faster and a much slower core clock, on the same
    build (the period is a run-time setting of the testbench)."""
    cfg = get_preset("tiny")
    assert cfg.cpu_async
    run_cocotb(build_top_rtl(cfg), cfg.top_name, "sim.tb_top", config=cfg,
               testcase="firmware_vs_host", extra_env={"EMBER_CPU_PERIOD_NS": cpu_period_ns})


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("testcase", ["random_gemms", "multi_block_gemm", "requant_corners",
                                      "firmware_gemms", "firmware_vs_host"])
def test_top_default(testcase):
    cfg = get_preset("default")
    run_cocotb(build_top_rtl(cfg), cfg.top_name, "sim.tb_top", config=cfg, testcase=testcase)


# ---------------------------------------------------------------------------------------------
# The plan, without simulation.

class PlanModel:
    """Executes a plan's commands on a model of the command processor and the engines.

    Queues issue in order when their wait semaphores are non-zero (taking a count); up to
    ``inflight`` commands per engine are in flight, and an engine completes its oldest one at a
    random moment (signalling its semaphores). Data moves at issue (loads write the scratchpad,
    GEMMs read operands and write results, stores write DRAM), and every scratchpad word that a
    command in flight reads or writes is *held* until it completes: a second command touching a
    held word, other than two reads, is a race and fails the check. The final DRAM must hold C.
    """

    def __init__(self, cfg, plan, dram, rng, inflight=4):
        self.cfg, self.plan, self.dram, self.rng = cfg, plan, dram, rng
        self.W = cfg.bus_bytes
        self.sram = np.zeros((cfg.sram_banks * cfg.sram_depth, self.W), np.uint8)
        self.sems = [0] * 16
        for s, v in plan.semaphores.items():
            self.sems[s] = v
        self.queues = [[c for c in plan.commands if c.queue == q] for q in range(3)]
        self.flight = [[] for _ in range(3)]
        self.inflight = inflight
        self.holds = {}          # word -> (kind "r"/"w", {command ids})

    def _touch(self, cmd, words, kind):
        for w in words:
            held = self.holds.get(w)
            if held and not (held[0] == "r" and kind == "r"):
                raise AssertionError(f"race on scratchpad word {w}: {cmd.note} against "
                                     f"commands {sorted(held[1])} ({held[0]})")
            ids = held[1] if held else set()
            self.holds[w] = (kind, ids | {cmd.id})

    def _release(self, cmd):
        for w in list(self.holds):
            kind, ids = self.holds[w]
            ids = ids - {cmd.id}
            if ids:
                self.holds[w] = (kind, ids)
            else:
                del self.holds[w]

    def _issue(self, cmd):
        W = self.W
        f = H.decode_command(cmd.words)
        a = f["args"]
        if cmd.queue in (0, 1):
            dram, sram, rows, row_bytes, dstride, sstride = a
            blocks = 1
            if cmd.queue == 1:      # a multi-block store: rows | (blocks - 1) << 16
                rows, blocks = rows & 0xFFFF, (rows >> 16) + 1
            # Block t: from sram + t·rows·sstride to dram + t·row_bytes.
            spans = [(dram + t * row_bytes + r * dstride, sram + (t * rows + r) * sstride)
                     for t in range(blocks) for r in range(rows)]
            words = set()
            for _, s0 in spans:
                words.update(range(s0 // W, (s0 + row_bytes - 1) // W + 1))
            self._touch(cmd, words, "w" if cmd.queue == 0 else "r")
            flat = self.sram.reshape(-1)
            for d0, s0 in spans:
                if cmd.queue == 0:
                    flat[s0:s0 + row_bytes] = self.dram[d0:d0 + row_bytes]
                else:
                    self.dram[d0:d0 + row_bytes] = flat[s0:s0 + row_bytes]
            return
        cfg = self.cfg
        R, C, L = cfg.pe_rows, cfg.pe_cols, cfg.pe_lanes
        a_addr, b_addr = a[0] & 0xFFFF, a[0] >> 16
        c_addr, p_addr = a[1] & 0xFFFF, a[1] >> 16
        steps, mt, nt = a[2] & 0xFFFF, (a[2] >> 16) & 0xFF, a[2] >> 24
        raw, acc_in = a[3] & 1, (a[3] >> 1) & 1
        self._touch(cmd, set(range(a_addr, a_addr + mt * steps)), "r")
        self._touch(cmd, set(range(b_addr, b_addr + nt * steps)), "r")
        self._touch(cmd, set(range(p_addr, p_addr + 3 * nt)), "r")
        self._touch(cmd, set(range(c_addr, c_addr + mt * nt * R)), "w")
        A = self.sram[a_addr:a_addr + mt * steps, :R * L].view(np.int8) \
            .reshape(mt, steps, R, L).transpose(0, 2, 1, 3).reshape(mt * R, steps * L)
        B = self.sram[b_addr:b_addr + nt * steps, :C * L].view(np.int8) \
            .reshape(nt, steps, C, L).transpose(1, 3, 0, 2).reshape(steps * L, nt * C)
        acc = ref_matmul(np.ascontiguousarray(A), np.ascontiguousarray(B))
        assert raw, "the plan model checks raw outputs only"
        p = self.sram[p_addr:p_addr + 3 * nt]
        if acc_in:     # a later K chunk: add the partial sums in C instead of the bias
            part = self.sram[c_addr:c_addr + mt * nt * R, :4 * C].view("<i4")
            part = part.reshape(mt, nt, R, C).transpose(0, 2, 1, 3).reshape(mt * R, nt * C)
            out = acc.astype(np.int64) + part.astype(np.int64)
            out = ((out + 2**31) % 2**32 - 2**31).astype(np.int32)
        else:
            bias = np.concatenate([p[3 * j, :4 * C].view("<i4") for j in range(nt)])
            out = ref_bias_add(acc, bias.astype(np.int64))
        rows = out.reshape(mt, R, nt, C).transpose(0, 2, 1, 3).reshape(-1, C)
        self.sram[c_addr:c_addr + len(rows), :4 * C] = \
            np.ascontiguousarray(rows.astype("<i4")).view(np.uint8)

    def run(self):
        steps = 0
        while any(self.queues) or any(self.flight):
            steps += 1
            assert steps < 100_000, "no progress: deadlock"
            moves = []
            for q in range(3):
                if self.queues[q] and len(self.flight[q]) < self.inflight:
                    f = H.decode_command(self.queues[q][0].words)
                    waits = [w for w in (f["wait"], f["wait2"]) if w != H.SEM_NONE]
                    # The GEMM engine starts an `acc` command only once the earlier ones have
                    # written their results (hw/gemm.py).
                    ordered = not (q == 2 and (f["args"][3] >> 1) & 1 and self.flight[2])
                    if ordered and all(self.sems[w] for w in waits):
                        moves.append(("issue", q))
                if self.flight[q]:
                    moves.append(("done", q))
            assert moves, f"deadlock: sems {self.sems[:4]}, heads " \
                          f"{[qq[0].note if qq else None for qq in self.queues]}"
            kind, q = moves[self.rng.integers(len(moves))]
            if kind == "issue":
                cmd = self.queues[q].pop(0)
                f = H.decode_command(cmd.words)
                for w in (f["wait"], f["wait2"]):
                    if w != H.SEM_NONE:
                        self.sems[w] -= 1
                self._issue(cmd)
                self.flight[q].append(cmd)
            else:
                cmd = self.flight[q].pop(0)
                self._release(cmd)
                f = H.decode_command(cmd.words)
                for s in (f["signal"], f["signal2"]):
                    if s != H.SEM_NONE:
                        self.sems[s] += 1
        init = [self.plan.semaphores[s] for s in range(4)]
        assert self.sems[:4] == init, f"semaphores unbalanced at the end: {self.sems[:4]}"


@pytest.mark.parametrize("preset,banks", [("tiny", 8), ("tiny", 16), ("default", 16)])
def test_plan_is_race_free(preset, banks):
    """Plans of many shapes (both loop orders, edge blocks, K filling a bank, K split into
    chunks), executed in random legal orders, never race on a scratchpad buffer, never deadlock,
    and leave exactly C (and nothing else) written in DRAM; with 2 slots per operand (8 banks)
    and with 4 (16 banks)."""
    cfg = get_preset(preset).replace(sram_banks=banks)
    R, C, L, d, W = cfg.pe_rows, cfg.pe_cols, cfg.pe_lanes, cfg.sram_depth, cfg.bus_bytes
    rng = np.random.default_rng(1)
    shapes = [(1, 1, 1), (R + 1, L + 1, C + 1), (23 * R + 1, 9 * L + 2, 12 * C - 1),
              (R + 1, 9 * L + 1, 40 * C + 1), (3 * R, (d - 1) * L + 1, 2 * C),
              (40 * R, 1, 3 * C), (R + 1, 3 * d * L + 5, 2 * C + 1), (5 * R, d * L + 1, 7 * C),
              (1, 2 * d * L, 1)]
    inners = set()
    for M, K, N in shapes:
        a = rng.integers(-128, 128, (M, K), np.int8)
        b = rng.integers(-128, 128, (K, N), np.int8)
        bias = rng.integers(-2**31, 2**31, N, dtype=np.int64)
        lay = H.dram_layout(cfg, M, K, N, raw=True, offsets=(0, 8, 16, 3))
        plan = H.plan_gemm(cfg, M, K, N, a_addr=lay.a_addr, b_addr=lay.b_addr,
                           p_addr=lay.p_addr, c_addr=lay.c_addr, raw=True)
        inners.add(plan.inner)
        for trial in range(2):
            dram = rng.integers(0, 256, lay.size, np.uint8)
            for addr, words in ((lay.a_addr, pack_a(a, rows=R, lanes=L, word_bytes=W)),
                                (lay.b_addr, pack_b(b, cols=C, lanes=L, word_bytes=W)),
                                (lay.p_addr, H.pack_params(bias, np.zeros(N), np.zeros(N),
                                                           cols=C, word_bytes=W))):
                dram[addr:addr + words.size] = words.reshape(-1)
            expected = dram.copy()
            expected[lay.c_addr:lay.c_addr + lay.c_bytes] = np.ascontiguousarray(
                ref_bias_add(ref_matmul(a, b), bias).astype("<i4")).view(np.uint8).reshape(-1)
            PlanModel(cfg, plan, dram, rng, inflight=1 + trial * 3).run()
            bad = np.flatnonzero(dram != expected)
            assert not len(bad), f"{(M, K, N)}: DRAM differs at {len(bad)} bytes"
        assert plan.array_steps == plan.m_tiles * plan.n_tiles * plan.steps
    assert inners == {"a", "b", "ab"}


def _gemm_without_wait(plan):
    cmds = []
    for c in plan.commands:
        if c.queue == 2:
            w = list(c.words)
            w[0] |= 31 << 6                     # wait = none: no wait for the operands
            c = H.Command(c.queue, tuple(w), c.note)
        cmds.append(c)
    return cmds


@pytest.mark.parametrize("banks", [8, 16])
@pytest.mark.parametrize("mutation", ["ops_free_plus_1", "c_free_plus_1", "gemm_no_wait"])
def test_plan_model_catches_a_race(mutation, banks):
    """The model is not blind: with one operand (or result) job more in flight than there are
    slots (2 with 8 banks, 4 with 16), or a GEMM that does not wait for its loads, it finds the
    race."""
    cfg = get_preset("tiny").replace(sram_banks=banks)
    ns = banks // 4
    M, K, N = 47, 38, 23
    lay = H.dram_layout(cfg, M, K, N, raw=True)
    plan = H.plan_gemm(cfg, M, K, N, a_addr=lay.a_addr, b_addr=lay.b_addr, p_addr=lay.p_addr,
                       c_addr=lay.c_addr, raw=True)
    sems, cmds = dict(plan.semaphores), plan.commands
    assert sems[H.SEM_OPS_FREE] == sems[H.SEM_C_FREE] == ns == H.plan_slots(cfg)
    if mutation == "ops_free_plus_1":
        sems[H.SEM_OPS_FREE] = ns + 1
    elif mutation == "c_free_plus_1":
        sems[H.SEM_C_FREE] = ns + 1
    else:
        cmds = _gemm_without_wait(plan)
    bad = H.GemmPlan(**{**plan.__dict__, "semaphores": sems, "commands": cmds})
    with pytest.raises(AssertionError, match="race on scratchpad word"):
        for seed in range(50):
            PlanModel(cfg, bad, np.zeros(lay.size, np.uint8), np.random.default_rng(seed)).run()


@pytest.mark.parametrize("preset,banks", [("tiny", 8), ("tiny", 16), ("default", 16)])
def test_plan_slots(preset, banks):
    """``ns = banks / 4`` slots per operand: A in banks [0, ns), B in [ns, 2ns), C in
    [2ns, 3ns), parameters in [3ns, 4ns); the inner operand of job t in slot t % ns, C of block
    u in slot u % ns; OPS_FREE and C_FREE start at ns. Weight streaming (B inner) and A inner."""
    cfg = get_preset(preset).replace(sram_banks=banks)
    R, C, L, d = cfg.pe_rows, cfg.pe_cols, cfg.pe_lanes, cfg.sram_depth
    ns = banks // 4
    assert H.plan_slots(cfg) == ns
    for M, K, N, inner in ((1, 64 * L, 40 * C, "b"), (40 * R, 64 * L, C, "a")):
        plan = H.plan_gemm(cfg, M, K, N, a_addr=0, b_addr=0, p_addr=0, c_addr=0, raw=True)
        assert plan.inner == inner and len(plan.jobs) >= 2 * ns, (plan.inner, len(plan.jobs))
        assert plan.semaphores == {H.SEM_OPS_FREE: ns, H.SEM_OPS_READY: 0, H.SEM_C_FREE: ns,
                                   H.SEM_C_READY: 0}
        gemms = [H.decode_command(c.words)["args"] for c in plan.commands if c.queue == 2]
        banks_of = [((g[0] & 0xFFFF) // d, (g[0] >> 16) // d, (g[1] & 0xFFFF) // d,
                     (g[1] >> 16) // d) for g in gemms]
        for t, (a, b, c, p) in enumerate(banks_of):
            inner_slot = (a if inner == "a" else b - ns)
            assert inner_slot == t % ns and c == 2 * ns + t % ns, (t, a, b, c, p)
            assert (a if inner == "b" else b - ns) == 0       # one outer block
            assert 0 <= a < ns and p == b + 2 * ns
        loads = [c for c in plan.commands if c.queue == 0]
        inner_banks = range(ns) if inner == "a" else range(ns, 2 * ns)
        outer_banks = {ns, 3 * ns} if inner == "a" else {0, *range(3 * ns, 4 * ns)}
        assert {H.decode_command(c.words)["args"][1] // (d * cfg.bus_bytes) for c in loads} \
            == set(inner_banks) | outer_banks


def test_plan_commands_and_limits():
    cfg = get_preset("tiny")
    R, L, W, d = cfg.pe_rows, cfg.pe_lanes, cfg.bus_bytes, cfg.sram_depth
    assert H.plan_gemm(cfg, 4, d * L, 4, a_addr=0, b_addr=0, p_addr=0, c_addr=0,
                       raw=True).k_chunks == 1
    # K beyond a bank: chunks of at most d/4 steps, covering K exactly; the first adds the bias,
    # the later ones accumulate; only the last requantises and signals the stores.
    for K in (d * L + 1, 5 * d * L + 7):
        plan = H.plan_gemm(cfg, 3 * R, K, 5, a_addr=0, b_addr=0, p_addr=0, c_addr=0, raw=False,
                           zero_point=-3)
        S, kc = -(-K // L), plan.k_chunks
        gemms = [H.decode_command(c.words) for c in plan.commands if c.queue == 2]
        assert kc > 1 and len(gemms) == kc * plan.m_blocks * plan.n_blocks
        for block in range(len(gemms) // kc):
            chunk = gemms[block * kc:(block + 1) * kc]
            steps = [g["args"][2] & 0xFFFF for g in chunk]
            assert sum(steps) == S and max(steps) <= d // 4, steps
            assert [(g["args"][3] & 3) for g in chunk] == [1] + [3] * (kc - 2) + [2]
            assert all((g["args"][3] >> 8) & 0xFF == 0xFD for g in chunk)
            assert [(g["wait2"], g["signal2"]) for g in chunk] == \
                [(H.SEM_C_FREE, H.SEM_NONE)] + [(H.SEM_NONE, H.SEM_NONE)] * (kc - 2) + \
                [(H.SEM_NONE, H.SEM_C_READY)]
    with pytest.raises(ValueError, match="at most 65535"):
        H.plan_gemm(cfg, 4, 65536 * (d // 4) * L + 1, 4, a_addr=0, b_addr=0, p_addr=0,
                    c_addr=0, raw=True)
    with pytest.raises(ValueError, match="M must be a positive integer"):
        H.plan_gemm(cfg, 0, 4, 4, a_addr=0, b_addr=0, p_addr=0, c_addr=0, raw=True)
    with pytest.raises(ValueError, match="8 scratchpad banks"):
        H.plan_gemm(cfg.replace(sram_banks=4), 4, 4, 4, a_addr=0, b_addr=0, p_addr=0,
                    c_addr=0, raw=True)
    # Stores are clipped at the matrix edge: 5×3 INT8 on a 2×2 array, C at 0x1000.
    plan = H.plan_gemm(cfg, 5, 3, 3, a_addr=0, b_addr=0x100, p_addr=0x200, c_addr=0x1000,
                       raw=False, first_id=7)
    stores = [H.decode_command(c.words) for c in plan.commands if c.queue == 1]
    got = sorted((s["args"][0] - 0x1000, s["args"][2], s["args"][3]) for s in stores)
    assert got == [(0, 2, 2), (2, 2, 1), (6, 2, 2), (8, 2, 1), (12, 1, 2), (14, 1, 1)]
    assert all(s["args"][4] == 3 and s["args"][5] == W for s in stores)
    # A row of full tiles is one multi-block store (word 2: rows | (blocks - 1) << 16); its
    # clipped last tile and a row of tiles clipped at M go one tile per store. 5×5 INT8.
    plan5 = H.plan_gemm(cfg, 5, 3, 5, a_addr=0, b_addr=0x100, p_addr=0x200, c_addr=0x1000,
                        raw=False)
    stores5 = [H.decode_command(c.words)["args"] for c in plan5.commands if c.queue == 1]
    assert plan5.mb == 3 and plan5.nb == 3, (plan5.mb, plan5.nb)
    assert [(s[0] - 0x1000, s[1] // W - 4 * d, s[2], s[3]) for s in stores5] == [
        (0, 0 * R, 2 | 1 << 16, 2), (4, 2 * R, 2, 1),        # tile row 0: tiles 0-1, tile 2
        (10, 3 * R, 2 | 1 << 16, 2), (14, 5 * R, 2, 1),      # tile row 1
        (20, 6 * R, 1, 2), (22, 7 * R, 1, 2), (24, 8 * R, 1, 1)]     # row 2 (1 row): per tile
    ids = [c.id for c in plan.commands]
    assert ids == list(range(7, 7 + len(ids)))
    # Block limits: every block fits a bank, and the GEMM fields.
    for M, K, N in itertools.product((1, 7, 300), (1, 50, d * L, 3 * d * L), (1, 9, 400)):
        p = H.plan_gemm(cfg, M, K, N, a_addr=0, b_addr=0, p_addr=0, c_addr=0, raw=True)
        chunk = -(-p.steps // p.k_chunks)
        assert p.mb * chunk <= d and p.nb * chunk <= d and 3 * p.nb <= d
        assert p.mb * p.nb * R <= d and p.mb <= 255 and p.nb <= 255
        assert p.m_blocks * p.mb >= p.m_tiles and p.n_blocks * p.nb >= p.n_tiles
    w = H.command_words(3, 0xABCD, [1, 2, 3, 4, 5, 6], wait=1, signal=2, wait2=3, signal2=4)
    assert H.decode_command(w) == {"opcode": 3, "wait": 1, "signal": 2, "id": 0xABCD,
                                   "wait2": 3, "signal2": 4, "args": [1, 2, 3, 4, 5, 6]}

