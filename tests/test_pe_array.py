"""PE array regression: cocotb on Verilator, every result bit-exact with ``sim.golden``."""

import json

import pytest

from hw.config import get_preset
from hw.pe_array import PEArray
from sim.runner import build_rtl, run_cocotb

TESTCASES = ["random_tiles", "extreme_operands", "k_corners", "steady_state_utilisation"]


def _build(preset):
    cfg = get_preset(preset)
    name = f"{cfg.top_name}_pe_array"
    build_dir = build_rtl(
        name, lambda: PEArray(rows=cfg.pe_rows, cols=cfg.pe_cols, lanes=cfg.pe_lanes))
    return cfg, name, build_dir


@pytest.mark.rtl
@pytest.mark.parametrize("testcase", TESTCASES)
@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_pe_array(preset, testcase):
    cfg, name, build_dir = _build(preset)
    test_dir = run_cocotb(build_dir, name, "sim.tb_pe_array", config=cfg, testcase=testcase)
    if testcase == "steady_state_utilisation":
        report = json.loads((test_dir / "utilisation.json").read_text())
        print(f"{preset}: steady-state utilisation {report['utilisation']:.4f}")
        assert report["utilisation"] >= 0.99
