"""The clock-domain crossings of the control core (``hw/cdc.py``, ``hw/host_cdc.py``) on
Amaranth's simulator, with two clocks of unrelated periods (the core's ``cpu`` slower and faster
than ``sync``): every Wishbone access reaches the target exactly once, in order, with its fields,
and its answer (``ack``/``err``, ``dat_r``) comes back right; an initiator that drops its access
(what a ``cpu_reset`` of the core does) neither loses nor duplicates it and the next accesses
still work; host writes are not lost under back-to-back bursts and the core's reset is released
only after them. Plus parameter checks and a Verilator lint of each block.
"""

import random

import pytest
from amaranth.sim import Simulator

from hw.cdc import WishboneCDC
from hw.host_cdc import HostCDC
from sim.runner import generate_verilog, lint

SYNC_PERIOD = 1e-8
#: cpu-domain periods against the 10 ns ``sync`` clock: slower (unrelated), much slower, faster.
CPU_PERIODS = {"cpu13": 1.3e-8, "cpu37": 3.7e-8, "cpu7": 0.7e-8}


def _simulator(dut, cpu_period):
    sim = Simulator(dut)
    sim.add_clock(SYNC_PERIOD)
    sim.add_clock(cpu_period, domain="cpu")
    return sim


# ---------------------------------------------------------------------------------------------
# WishboneCDC

def _run_bridge(cpu_period, *, accesses, p_drop, rng, max_wait=4):
    """Random accesses from an initiator in ``cpu`` through the bridge to a target model in
    ``sync``. With probability ``p_drop`` the initiator abandons an access after a random number
    of cycles (as the control core does when ``cpu_reset`` hits it) and, after a random pause
    (sometimes none), starts the next one. Returns (issued, answered, served, violations):
    ``issued`` every access's fields in order, ``answered`` what the initiator got for each
    (None when it dropped it), ``served`` the target's (fields, err, dat_r) per access."""
    dut = WishboneCDC(addr_width=26, i_domain="cpu", t_domain="sync")
    i, t = dut.i, dut.t
    issued, answered, served, violations = [], [], [], []
    finished = []

    def fields(ctx, bus):
        return (ctx.get(bus.adr), ctx.get(bus.we), ctx.get(bus.dat_w), ctx.get(bus.sel))

    async def initiator(ctx):
        for n in range(accesses):
            for _ in range(rng.choice((0, 0, 1, 3))):
                await ctx.tick("cpu")
            f = (rng.getrandbits(26), rng.random() < 0.5, rng.getrandbits(32), rng.getrandbits(4))
            ctx.set(i.adr, f[0])
            ctx.set(i.we, f[1])
            ctx.set(i.dat_w, f[2])
            ctx.set(i.sel, f[3])
            ctx.set(i.cyc, 1)
            ctx.set(i.stb, 1)
            issued.append(f)
            drop_after = rng.randrange(1, 9) if rng.random() < p_drop else None
            waited = 0
            taken = False
            while True:
                ack, err, dat = ctx.get(i.ack), ctx.get(i.err), ctx.get(i.dat_r)
                if drop_after is not None and waited == drop_after and not (ack or err):
                    # Dropped before the bridge took it (it was still busy with an earlier,
                    # dropped access): then it never happened.
                    answered.append(None if taken else "never taken")
                    ctx.set(i.cyc, 0)
                    ctx.set(i.stb, 0)
                    # A reset of the core holds cyc low for at least a cycle, often longer.
                    for _ in range(rng.choice((1, 1, 2, 5, 20))):
                        await ctx.tick("cpu")
                        if ctx.get(i.ack) or ctx.get(i.err):
                            violations.append(f"answer without cyc after access {n}")
                    break
                taken |= not ctx.get(dut.busy)     # the bridge takes it at this edge
                await ctx.tick("cpu")
                waited += 1
                if ack and err:
                    violations.append(f"ack and err together for access {n}")
                if ack or err:
                    answered.append((bool(err), dat if ack else None))
                    ctx.set(i.cyc, 0)
                    ctx.set(i.stb, 0)
                    # Nothing may answer in the cycle after (the bridge answers once).
                    if ctx.get(i.ack) or ctx.get(i.err):
                        violations.append(f"second answer for access {n}")
                    break
                if waited > 400:
                    violations.append(f"access {n} never answered")
                    finished.append(True)
                    return
        # Let the last (perhaps dropped) access finish on the target.
        for _ in range(40):
            await ctx.tick("cpu")
        finished.append(True)

    async def target(ctx):
        wait = None
        current = None
        acking = False
        while not finished:
            await ctx.tick("sync")
            if acking:          # the bridge sampled our answer at this edge
                ctx.set(t.ack, 0)
                ctx.set(t.err, 0)
                acking = False
            if ctx.get(t.cyc) and ctx.get(t.stb):
                f = fields(ctx, t)
                if current is None:
                    current, wait = f, rng.randrange(0, max_wait + 1)
                elif f != current:
                    violations.append(f"target fields changed mid-access: {current} -> {f}")
                if wait == 0:
                    err = rng.random() < 0.25
                    dat = rng.getrandbits(32)
                    ctx.set(t.dat_r, dat)
                    ctx.set(t.ack if not err else t.err, 1)
                    served.append((current, err, dat))
                    acking, current = True, None
                else:
                    wait -= 1
            elif current is not None:
                violations.append(f"target cyc dropped before the answer: {current}")
                current = None

    sim = _simulator(dut, cpu_period)
    sim.add_testbench(initiator)
    sim.add_testbench(target, background=True)
    sim.run()
    return issued, answered, served, violations


def _check_bridge(issued, answered, served, violations):
    assert not violations, violations[:5]
    assert len(answered) == len(issued)
    # Every access the bridge took, answered or dropped, ran on the target exactly once, in
    # order, with its fields.
    taken = [(f, a) for f, a in zip(issued, answered) if a != "never taken"]
    assert [s[0] for s in served] == [(a, int(w), d, s) for (a, w, d, s), _ in taken]
    for n, ((_, got), (_, err, dat)) in enumerate(zip(taken, served)):
        if got is not None:
            assert got == (err, None if err else dat), f"access {n}: {got} != {(err, dat)}"


@pytest.mark.parametrize("cpu", CPU_PERIODS)
def test_bridge_random(cpu, seed):
    rng = random.Random(seed)
    issued, answered, served, violations = _run_bridge(CPU_PERIODS[cpu], accesses=300,
                                                       p_drop=0.0, rng=rng)
    _check_bridge(issued, answered, served, violations)
    assert all(a is not None for a in answered)
    errs = sum(1 for s in served if s[1])
    assert 30 < errs < 150 and sum(1 for f in issued if f[1]) > 100


@pytest.mark.parametrize("cpu", CPU_PERIODS)
def test_bridge_initiator_reset_mid_access(cpu, seed):
    """The initiator abandons accesses at random points (a cpu_reset of the core): each still
    runs once on the target, its answer is not given to anyone, the next accesses are right."""
    rng = random.Random(seed)
    issued, answered, served, violations = _run_bridge(CPU_PERIODS[cpu], accesses=300,
                                                       p_drop=0.4, rng=rng)
    _check_bridge(issued, answered, served, violations)
    dropped = sum(1 for a in answered if a is None)
    assert 20 < dropped < 200, dropped
    assert sum(1 for a in answered if a == "never taken") < dropped
    # Some accesses right after a drop were answered (not all lost after the first drop).
    after = [answered[n + 1] for n in range(len(answered) - 1) if answered[n] is None]
    assert sum(1 for a in after if isinstance(a, tuple)) > 10


@pytest.mark.parametrize("cpu", CPU_PERIODS)
def test_bridge_latency(cpu):
    """Single accesses with an immediate target. Each crossing goes through two synchroniser
    stages: the target sees the request only after the second sync edge following the cpu edge
    that took it, and the initiator samples its answer no sooner than the third cpu edge after
    the sync edge at which the target answered (two stages, then the answer cycle). The whole
    access stays within the latency documented in hw/cdc.py."""
    dut = WishboneCDC(addr_width=8)
    i, t = dut.i, dut.t
    log = []                     # "cpu"/"sync" per clock edge, in time order
    taken, seen, acked, answered, cycles = [], [], [], [], []

    async def initiator(ctx):
        for n in range(20):
            for _ in range(n % 3 + 1):
                await ctx.tick("cpu")
                log.append("cpu")
            ctx.set(i.cyc, 1)
            ctx.set(i.stb, 1)
            ctx.set(i.adr, n)
            for count in range(1, 50):
                ack, busy = ctx.get(i.ack), ctx.get(dut.busy)
                await ctx.tick("cpu")
                log.append("cpu")
                if len(taken) == n and not busy:
                    taken.append(len(log) - 1)          # the cpu edge that took it
                if ack:
                    answered.append(len(log) - 1)       # the cpu edge that sampled the answer
                    cycles.append(count)
                    break
            ctx.set(i.cyc, 0)

    async def target(ctx):
        acking = False
        while True:
            await ctx.tick("sync")
            log.append("sync")
            if acking:
                acked.append(len(log) - 1)              # the sync edge that sampled our ack
                ctx.set(t.ack, 0)
                acking = False
            elif ctx.get(t.cyc):
                seen.append(len(log) - 1)
                ctx.set(t.ack, 1)
                acking = True

    sim = _simulator(dut, CPU_PERIODS[cpu])
    sim.add_testbench(initiator)
    sim.add_testbench(target, background=True)
    sim.run()
    print(cpu, "cpu cycles per access:", cycles)
    assert len(cycles) == len(taken) == len(seen) == 20
    for n in range(20):
        syncs = log[taken[n] + 1:seen[n] + 1].count("sync")
        assert syncs >= 2, f"access {n}: the target saw it {syncs} sync edge(s) after it was taken"
        cpus = log[acked[n] + 1:answered[n] + 1].count("cpu")
        assert cpus >= 3, f"access {n}: answered {cpus} cpu edge(s) after the target's ack"
        assert 3 <= cycles[n] <= {"cpu7": 12, "cpu13": 8, "cpu37": 6}[cpu], cycles


# ---------------------------------------------------------------------------------------------
# HostCDC

def _run_host(cpu_period, *, bursts, rng):
    """Bursts of back-to-back writes from a writer in ``sync`` that repeats a write until
    ``write_rdy`` (as ``hw/regs.py`` does with ``imem_backpressure``), with ``reset_i`` released
    right after the first burst's last write. Returns (sent, received, released_at, stuck):
    ``released_at`` is how many writes had arrived when ``reset_o`` first fell, ``stuck``
    whether ``reset_o`` ever rose again after that."""
    dut = HostCDC(addr_width=30, depth=4)
    wi, wo = dut.write_i, dut.write_o
    sent, received = [], []
    state = {"released_at": None, "reasserted": False, "done": False, "first_burst": 0}

    async def writer(ctx):
        ctx.set(dut.reset_i, 1)
        for _ in range(3):
            await ctx.tick()
        for b in range(bursts):
            for _ in range(rng.randrange(20, 60)):
                w = (rng.getrandbits(30), rng.getrandbits(32), rng.getrandbits(4))
                ctx.set(wi.addr, w[0])
                ctx.set(wi.data, w[1])
                ctx.set(wi.sel, w[2])
                ctx.set(wi.en, 1)
                while True:
                    rdy = ctx.get(dut.write_rdy)
                    await ctx.tick()
                    if rdy:
                        break
                sent.append(w)
            ctx.set(wi.en, 0)
            if b == 0:
                state["first_burst"] = len(sent)
                ctx.set(dut.reset_i, 0)      # release the core right after loading it
            for _ in range(rng.randrange(0, 30)):
                await ctx.tick()
        for _ in range(200):
            await ctx.tick()
        state["done"] = True

    async def reader(ctx):
        while not state["done"]:
            en, reset_o = ctx.get(wo.en), ctx.get(dut.reset_o)
            w = (ctx.get(wo.addr), ctx.get(wo.data), ctx.get(wo.sel))
            await ctx.tick("cpu")
            if en:
                received.append(w)
            if not reset_o and state["released_at"] is None:
                state["released_at"] = len(received)
            if reset_o and state["released_at"] is not None:
                state["reasserted"] = True

    sim = _simulator(dut, cpu_period)
    sim.add_testbench(writer)
    sim.add_testbench(reader, background=True)
    sim.run()
    return sent, received, state


@pytest.mark.parametrize("cpu", CPU_PERIODS)
def test_host_writes_not_lost(cpu, seed):
    rng = random.Random(seed)
    sent, received, state = _run_host(CPU_PERIODS[cpu], bursts=4, rng=rng)
    assert len(sent) >= 80
    assert received == sent
    # The core leaves reset only when the whole first burst (the firmware) has landed, and later
    # writes do not reset it again.
    assert state["released_at"] is not None and state["released_at"] >= state["first_burst"]
    assert not state["reasserted"]


def test_host_reset_comes_up_asserted():
    dut = HostCDC()
    seen = []

    async def bench(ctx):
        ctx.set(dut.reset_i, 0)
        for _ in range(10):
            seen.append(ctx.get(dut.reset_o))
            await ctx.tick("cpu")

    sim = _simulator(dut, 2.9e-8)
    sim.add_testbench(bench)
    sim.run()
    # Asserted from power-up until reset_i = 0 has crossed (two stages), then released.
    assert seen[0] == 1 and seen[1] == 1 and seen[-1] == 0


# ---------------------------------------------------------------------------------------------
# Parameters and lint

@pytest.mark.parametrize("kwargs, exc, match", [
    ({"addr_width": "8"}, TypeError, "addr_width must be an integer, not '8'"),
    ({"addr_width": True}, TypeError, "addr_width must be an integer, not True"),
    ({"addr_width": -1}, ValueError, "addr_width must be at least 0, not -1"),
    ({"addr_width": 8, "data_width": 12}, ValueError, "data_width must be .* not 12"),
    ({"addr_width": 8, "i_domain": 1}, TypeError, "i_domain must be a domain name .* not 1"),
    ({"addr_width": 8, "t_domain": "comb"}, ValueError, "t_domain must be a clock domain"),
    ({"addr_width": 8, "i_domain": "sync"}, ValueError, "must differ, not both 'sync'"),
])
def test_bridge_parameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        WishboneCDC(**kwargs)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"addr_width": 2.0}, TypeError, "addr_width must be an integer, not 2.0"),
    ({"addr_width": 0}, ValueError, "addr_width must be at least 1, not 0"),
    ({"depth": 3}, ValueError, "depth must be a power of two of at least 2, not 3"),
    ({"depth": 1}, ValueError, "depth must be a power of two of at least 2, not 1"),
    ({"depth": None}, TypeError, "depth must be an integer, not None"),
    ({"w_domain": None}, TypeError, "w_domain must be a domain name .* not None"),
    ({"r_domain": ""}, ValueError, "r_domain must be a clock domain, not ''"),
    ({"r_domain": "sync"}, ValueError, "must differ, not both 'sync'"),
])
def test_host_cdc_parameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        HostCDC(**kwargs)


@pytest.mark.parametrize("make, name", [
    (lambda: WishboneCDC(addr_width=26), "ember_wishbone_cdc"),
    (lambda: HostCDC(addr_width=30), "ember_host_cdc"),
], ids=["wishbone_cdc", "host_cdc"])
def test_cdc_lint(make, name, tmp_path):
    path = tmp_path / f"{name}.v"
    path.write_text(generate_verilog(make(), name))
    lint(path, name)
