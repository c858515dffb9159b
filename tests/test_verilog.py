"""Every simulated preset elaborates to lint-clean Verilog with a ``__``-free top-module name."""

import re

import pytest

from hw.config import PRESETS
from hw.pe_array import PEArray
from hw.top import build_top
from hw.cpu import vexriscv_source
from sim.runner import VEXRISCV_VLT, generate_verilog, lint, write_if_changed


@pytest.mark.parametrize("preset", [n for n, c in PRESETS.items() if c.simulate])
def test_verilog_lint_clean(preset, tmp_path):
    cfg = PRESETS[preset]
    text = generate_verilog(build_top(cfg), cfg.top_name)
    modules = re.findall(r"^module (\S+?)\(", text, re.M)
    assert cfg.top_name in modules
    assert not [m for m in modules if "__" in m]
    path = tmp_path / f"{cfg.top_name}.v"
    path.write_text(text)
    lint(path, cfg.top_name, extra_sources=[VEXRISCV_VLT, vexriscv_source()])


def test_mtia_top_names_the_limit():
    """mtia's operands do not fit a scratchpad word: the error says why (PART=pe_array works)."""
    with pytest.raises(ValueError, match="does not fit a 64-byte scratchpad word"):
        build_top(PRESETS["mtia"]).elaborate(None)


def test_lint_catches_a_warning(tmp_path):
    path = tmp_path / "bad.v"
    path.write_text("module bad(input a, output b); wire unused_w; assign b = a; "
                    "always @(*) begin end\nendmodule\n"
                    "module bad2; endmodule\n")
    with pytest.raises(RuntimeError, match="lint of"):
        lint(path, "bad")


def test_generate_rejects_double_underscore():
    with pytest.raises(ValueError, match="'ember__x'"):
        generate_verilog(object(), "ember__x")  # the name is checked first


def test_write_if_changed(tmp_path):
    path = tmp_path / "x.v"
    assert write_if_changed(path, "a")
    mtime = path.stat().st_mtime_ns
    assert not write_if_changed(path, "a")
    assert path.stat().st_mtime_ns == mtime
    assert write_if_changed(path, "b")


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"rows": 0, "cols": 1, "lanes": 1}, ValueError, "rows must be at least 1, not 0"),
    ({"rows": 1, "cols": "2", "lanes": 1}, TypeError, "cols must be an integer, not '2'"),
])
def test_pe_array_parameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        PEArray(**kwargs)


def test_firmware_header_matches_regmap():
    """fw/ember_regs.h is generated from hw/regmap.py (`python -m sim regmap --c`)."""
    from hw import regmap
    from sim.runner import ROOT
    assert (ROOT / "fw" / "ember_regs.h").read_text() == regmap.c_header()
