"""GEMM engine on the scratchpad: bit-exact block GEMMs and the conflict-free bank layout."""

import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.config import get_preset
from hw.gemm import GemmEngine
from hw.sram import Scratchpad
from sim.runner import build_rtl, generate_verilog, lint, run_cocotb


class GemmHarness(wiring.Component):
    """Test wrapper: GemmEngine + Scratchpad, with host/load/store ports for the testbench.

    Scratchpad ports: 0-3 the engine's A, B, result and parameter ports; 4 host; 5 load; 6 store;
    7 the engine's partial-sum port.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self._sram = probe = Scratchpad(banks=cfg.sram_banks, depth=cfg.sram_depth,
                                        data_bytes=cfg.bus_bytes, ports=8)
        self._engine = engine = GemmEngine(rows=cfg.pe_rows, cols=cfg.pe_cols,
                                           lanes=cfg.pe_lanes, data_bytes=cfg.bus_bytes,
                                           addr_width=probe.addr_width)
        super().__init__({
            "cmd": In(stream.Signature(engine.cmd_layout)),
            "done": Out(stream.Signature(engine.done_layout)),
            "host": In(probe.port_signature),
            "load": In(probe.port_signature),
            "store": In(probe.port_signature),
            "step": Out(1),
            "engine_stall": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.sram = sram = self._sram
        m.submodules.engine = engine = self._engine
        wiring.connect(m, wiring.flipped(self.cmd), engine.cmd)
        wiring.connect(m, engine.done, wiring.flipped(self.done))
        wiring.connect(m, engine.a_rd, sram.ports[0])
        wiring.connect(m, engine.b_rd, sram.ports[1])
        wiring.connect(m, engine.c_wr, sram.ports[2])
        wiring.connect(m, engine.p_rd, sram.ports[3])
        wiring.connect(m, wiring.flipped(self.host), sram.ports[4])
        wiring.connect(m, wiring.flipped(self.load), sram.ports[5])
        wiring.connect(m, wiring.flipped(self.store), sram.ports[6])
        wiring.connect(m, engine.d_rd, sram.ports[7])
        m.d.comb += [
            self.step.eq(engine.step),
            self.engine_stall.eq(
                (engine.a_rd.req.valid & ~engine.a_rd.req.ready) |
                (engine.b_rd.req.valid & ~engine.b_rd.req.ready) |
                (engine.p_rd.req.valid & ~engine.p_rd.req.ready) |
                (engine.c_wr.req.valid & ~engine.c_wr.req.ready)),
        ]
        return m


@pytest.mark.rtl
@pytest.mark.parametrize("testcase", ["random_gemm_blocks", "steady_state_banks",
                                      "k_split_accumulate"])
@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_gemm_engine(preset, testcase):
    cfg = get_preset(preset)
    name = f"{cfg.top_name}_gemm"
    build_dir = build_rtl(name, lambda: GemmHarness(cfg))
    run_cocotb(build_dir, name, "sim.tb_gemm", config=cfg, testcase=testcase)


def test_gemm_lint(tmp_path):
    cfg = get_preset("tiny")
    path = tmp_path / "gemm.v"
    path.write_text(generate_verilog(GemmHarness(cfg), "ember_tiny_gemm"))
    lint(path, "ember_tiny_gemm")


@pytest.mark.parametrize("kwargs, match", [
    ({"rows": 8, "cols": 8, "lanes": 16, "data_bytes": 64, "addr_width": 10},
     "rows·lanes = 128 bytes does not fit a 64-byte"),
    ({"rows": 1, "cols": 4, "lanes": 1, "data_bytes": 8, "addr_width": 10},
     "4·cols = 16 bytes"),
    ({"rows": 0, "cols": 1, "lanes": 1, "data_bytes": 8, "addr_width": 10}, "rows must be"),
])
def test_gemm_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GemmEngine(**kwargs)
