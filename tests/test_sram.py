"""Scratchpad regression: random multi-port traffic against a model, fairness, bank parallelism."""

import pytest

from hw.config import get_preset
from hw.sram import Scratchpad
from sim.runner import build_rtl, generate_verilog, lint, run_cocotb

PORTS = 4  # matches sim/tb_sram.py


YIELDS = {3: 1}    # for the `yield_priority` build: port 3 yields to port 1
B_SIDE = (0, 1)    # for the `dual_sides` build: ports 0 and 1 on side B, like the top's DMA


def _factory(cfg, yields=None, b_side=()):
    return lambda: Scratchpad(banks=cfg.sram_banks, depth=cfg.sram_depth,
                              data_bytes=cfg.bus_bytes, ports=PORTS, yields=yields,
                              b_side=b_side)


@pytest.mark.rtl
@pytest.mark.parametrize("testcase", ["random_traffic", "fair_arbitration", "parallel_banks"])
@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_sram(preset, testcase):
    cfg = get_preset(preset)
    name = f"{cfg.top_name}_sram"
    build_dir = build_rtl(name, _factory(cfg))
    run_cocotb(build_dir, name, "sim.tb_sram", config=cfg, testcase=testcase)


@pytest.mark.rtl
@pytest.mark.parametrize("testcase", ["yield_priority", "random_traffic"])
def test_sram_yields(testcase):
    """A scratchpad with a yielding port: the priority, and the data still exact."""
    cfg = get_preset("tiny")
    name = f"{cfg.top_name}_sram_yields"
    build_dir = build_rtl(name, _factory(cfg, YIELDS))
    run_cocotb(build_dir, name, "sim.tb_sram", config=cfg, testcase=testcase,
               extra_env={"EMBER_SRAM_YIELDS": ",".join(f"{a}:{b}" for a, b in YIELDS.items())})


@pytest.mark.rtl
@pytest.mark.parametrize("testcase", ["dual_sides", "random_traffic"])
def test_sram_dual(testcase):
    """Dual-ported pairs of banks, as the top builds them: the sides, and the data still exact
    (the random traffic's hot banks are one pair, so the two sides meet there)."""
    cfg = get_preset("tiny")
    name = f"{cfg.top_name}_sram_dual"
    build_dir = build_rtl(name, _factory(cfg, b_side=B_SIDE))
    run_cocotb(build_dir, name, "sim.tb_sram", config=cfg, testcase=testcase,
               extra_env={"EMBER_SRAM_B_SIDE": ",".join(map(str, B_SIDE))})


@pytest.mark.parametrize("b_side", [(), B_SIDE])
def test_sram_lint(tmp_path, b_side):
    cfg = get_preset("tiny")
    path = tmp_path / "sram.v"
    path.write_text(generate_verilog(_factory(cfg, b_side=b_side)(), "ember_tiny_sram"))
    lint(path, "ember_tiny_sram")


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"banks": 3, "depth": 16, "data_bytes": 8, "ports": 2}, ValueError, "banks must be a power"),
    ({"banks": 4, "depth": 0, "data_bytes": 8, "ports": 2}, ValueError, "depth must be at least"),
    ({"banks": 4, "depth": 16, "data_bytes": 8, "ports": "2"}, TypeError, "ports must be an int"),
    ({"banks": 4, "depth": 16, "data_bytes": 8, "ports": 2, "yields": [(1, 0)]}, TypeError,
     "yields must be a dict"),
    ({"banks": 4, "depth": 16, "data_bytes": 8, "ports": 2, "yields": {1: 2}}, ValueError,
     r"yields names port 2, which is not in \[0, 2\)"),
    ({"banks": 4, "depth": 16, "data_bytes": 8, "ports": 3, "yields": {1: 1}}, ValueError,
     "yields must map a port to another"),
    ({"banks": 4, "depth": 16, "data_bytes": 8, "ports": 3, "yields": {1: 0, 0: 2}}, ValueError,
     "yields must map a port to another"),
    ({"banks": 4, "depth": 16, "data_bytes": 8, "ports": 3, "b_side": 1}, TypeError,
     "b_side must be a tuple"),
    ({"banks": 4, "depth": 16, "data_bytes": 8, "ports": 3, "b_side": (3,)}, ValueError,
     r"b_side names port 3, which is not in \[0, 3\)"),
    ({"banks": 4, "depth": 16, "data_bytes": 8, "ports": 3, "b_side": (1, 1)}, ValueError,
     "b_side names a port twice"),
    ({"banks": 4, "depth": 16, "data_bytes": 8, "ports": 2, "b_side": (0, 1)}, ValueError,
     "b_side must leave at least one port on side A"),
    ({"banks": 1, "depth": 16, "data_bytes": 8, "ports": 2, "b_side": (0,)}, ValueError,
     "needs at least 2 banks"),
    ({"banks": 4, "depth": 16, "data_bytes": 8, "ports": 3, "b_side": (0,), "yields": {1: 0}},
     ValueError, "yields must map ports of the same side"),
])
def test_sram_parameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Scratchpad(**kwargs)
