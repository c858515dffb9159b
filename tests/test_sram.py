"""Scratchpad regression: random multi-port traffic against a model, fairness, bank parallelism."""

import pytest

from hw.config import get_preset
from hw.sram import Scratchpad
from sim.runner import build_rtl, generate_verilog, lint, run_cocotb

PORTS = 4  # matches sim/tb_sram.py


YIELDS = {3: 1}    # for the `yield_priority` build: port 3 yields to port 1


def _factory(cfg, yields=None):
    return lambda: Scratchpad(banks=cfg.sram_banks, depth=cfg.sram_depth,
                              data_bytes=cfg.bus_bytes, ports=PORTS, yields=yields)


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


def test_sram_lint(tmp_path):
    cfg = get_preset("tiny")
    path = tmp_path / "sram.v"
    path.write_text(generate_verilog(_factory(cfg)(), "ember_tiny_sram"))
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
])
def test_sram_parameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Scratchpad(**kwargs)
