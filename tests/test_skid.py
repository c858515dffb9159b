"""The register slice (``hw/skid.py``) on Amaranth's simulator: order, no loss, stream rules,
full rate with one cycle of latency, and parameter checks."""

import os
import random

import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from hw.skid import SkidBuffer
from sim.runner import generate_verilog, lint


def _run(dut, cycles, *, p_valid, p_ready, rng):
    """Drive random valid/ready for ``cycles`` cycles; return (sent, received, trace) where the
    trace holds ``(i_valid, i_ready, o_valid, o_ready, o_payload)`` per cycle."""
    sent, got, trace = [], [], []

    async def bench(ctx):
        pending, serial = None, 0
        for _ in range(cycles):
            if pending is None and rng.random() < p_valid:
                pending, serial = serial, (serial + 1) % (1 << 16)   # distinct payloads
            ctx.set(dut.i.valid, pending is not None)
            ctx.set(dut.i.payload, pending or 0)
            o_ready = rng.random() < p_ready
            ctx.set(dut.o.ready, o_ready)
            i_ready, o_valid = ctx.get(dut.i.ready), ctx.get(dut.o.valid)
            payload = ctx.get(dut.o.payload)
            trace.append((pending is not None, i_ready, o_valid, o_ready, payload))
            if pending is not None and i_ready:
                sent.append(pending)
                pending = None      # valid stays up until the transfer (stream rule)
            if o_valid and o_ready:
                got.append(payload)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return sent, got, trace


@pytest.mark.parametrize("p_valid, p_ready", [(1.0, 1.0), (0.7, 0.5), (1.0, 0.3), (0.3, 1.0)],
                         ids=["flowing", "both_random", "backpressure", "sparse"])
def test_skid_random(p_valid, p_ready):
    seed = int(os.environ.get("EMBER_SEED", random.randrange(1 << 32)))
    print(f"EMBER_SEED={seed}")
    rng = random.Random(seed)
    dut = SkidBuffer(layout=16)
    sent, got, trace = _run(dut, 600, p_valid=p_valid, p_ready=p_ready, rng=rng)
    assert len(sent) > 100
    # Everything accepted comes out, in order, except what is still inside (at most two).
    assert got == sent[:len(got)] and len(sent) - len(got) <= 2
    # An offered output stays, unchanged, until taken (valid never drops without a transfer).
    for (_, _, v0, r0, p0), (_, _, v1, _, p1) in zip(trace, trace[1:]):
        if v0 and not r0:
            assert v1 and p1 == p0
    if p_valid == 1.0 and p_ready == 1.0:
        # Full rate, one cycle of latency: a transfer in every cycle after the first.
        assert len(sent) == 600 and len(got) == 599
        assert all(t[2] for t in trace[1:]) and not trace[0][2]


def test_skid_parameters_and_lint(tmp_path):
    with pytest.raises(TypeError, match="layout must be"):
        SkidBuffer(layout="wide")
    with pytest.raises(TypeError, match="layout must be"):
        SkidBuffer(layout=True)
    dut = SkidBuffer(layout=data.StructLayout({"a": 5, "b": 9}))
    path = tmp_path / "skid.v"
    path.write_text(generate_verilog(dut, "ember_skid"))
    lint(path, "ember_skid")
