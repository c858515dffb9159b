"""Ember command line: ``python -m sim <command> ...``.

Commands
--------
presets            list the presets
verilog            elaborate a preset to build/ember_<preset>.v (with build/VexRiscv.v beside it)
lint               Verilator lint of that file, with the documented waivers
regmap             print the register map (Markdown) or write fw/ember_regs.h (--c)
gemm               run one GEMM on the simulated accelerator (``sim.device.Device``), driven by
                   the host (default) or the firmware (--driver firmware); the last line of
                   output is a JSON object (ok, driver, cycles, macs, utilization, ...)
embedding-bag      run an embedding-bag job (nn.EmbeddingBag / SparseLengthsSum, TBE) on the
                   simulated accelerator; the last line of output is a JSON object (ok, cycles,
                   bytes_gathered, list_bytes, bytes_per_cycle, bus_bytes_per_cycle,
                   bandwidth_utilization (table rows and lists read), gather_utilization (table
                   rows only), ...)
demo               the DLRM-style model end to end (``sim.demo``; ``make demo``)
"""

import argparse
import json
import sys
import time
from pathlib import Path


def _config(name):
    from hw.config import get_preset
    try:
        return get_preset(name)
    except ValueError as e:
        raise SystemExit(f"error: --config: {e}")


def cmd_presets(args):
    from hw.config import PRESETS
    print(f"{'preset':10} {'R×C×L':>14} {'MACs/cycle':>11}  simulated")
    for cfg in PRESETS.values():
        shape = f"{cfg.pe_rows}×{cfg.pe_cols}×{cfg.pe_lanes}"
        print(f"{cfg.name:10} {shape:>14} {cfg.macs_per_cycle:>11}  {'yes' if cfg.simulate else 'no'}")


PARTS = ("top", "pe_array")


def _part(cfg, part):
    """(top-module name, component factory, third-party sources) of a part of ``cfg``."""
    if part == "top":
        from hw.cpu import vexriscv_source
        from hw.top import build_top
        return cfg.top_name, lambda: build_top(cfg), [vexriscv_source()]
    from hw.pe_array import PEArray
    return f"{cfg.top_name}_pe_array", \
        lambda: PEArray(rows=cfg.pe_rows, cols=cfg.pe_cols, lanes=cfg.pe_lanes), []


def verilog_path(cfg, part="top", out_dir=None):
    from sim.runner import BUILD
    return Path(out_dir or BUILD) / f"{_part(cfg, part)[0]}.v"


def cmd_verilog(args):
    import resource
    import shutil
    from sim.runner import generate_verilog, write_if_changed
    cfg = _config(args.config)
    name, factory, third_party = _part(cfg, args.part)
    path = verilog_path(cfg, args.part, args.out_dir)
    t0 = time.monotonic()
    try:
        component = factory()
    except ValueError as e:
        raise SystemExit(f"error: --config {cfg.name}: {e}"
                         + ("; elaborate the array alone with PART=pe_array"
                            if args.part == "top" else ""))
    text = generate_verilog(component, name)
    elapsed = time.monotonic() - t0
    written = write_if_changed(path, text)
    for src in third_party:
        dst = path.parent / src.name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stats = {"config": cfg.name, "part": args.part, "top": name, "path": str(path),
             "bytes": len(text.encode()), "elaboration_s": round(elapsed, 2),
             "peak_rss_mib": round(peak_mib, 1), "written": written,
             "third_party": [src.name for src in third_party]}
    print(f"{path}: {'written' if written else 'unchanged'}, {stats['bytes']} bytes, "
          f"elaborated in {elapsed:.1f} s, peak RSS {peak_mib:.0f} MiB"
          + "".join(f"; with {s.name}" for s in third_party))
    print(json.dumps(stats))


def cmd_lint(args):
    from sim.runner import LINT_WAIVERS, VEXRISCV_VLT, lint
    cfg = _config(args.config)
    name, _, third_party = _part(cfg, args.part)
    path = verilog_path(cfg, args.part, args.out_dir)
    if not path.exists():
        raise SystemExit(f"error: {path} does not exist; run `make verilog CONFIG={cfg.name}`")
    extra = [VEXRISCV_VLT, *(path.parent / s.name for s in third_party)] if third_party else []
    try:
        lint(path, name, extra_sources=extra)
    except RuntimeError as e:
        raise SystemExit(f"error: {e}")
    print(f"{path}: lint clean (verilator -Wall, waived: {', '.join(LINT_WAIVERS)}"
          + ("; VexRiscv's own file waived by hw/vexriscv.vlt" if third_party else "") + ")")


def cmd_regmap(args):
    from hw import regmap
    from sim.runner import ROOT, write_if_changed
    if args.c:
        path = ROOT / "fw" / "ember_regs.h"
        written = write_if_changed(path, regmap.c_header())
        print(f"{path}: {'written' if written else 'unchanged'}")
    else:
        print(regmap.markdown())


def _load_npy(option, path):
    import numpy as np
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {option} {path}: {e}")


def _gemm_inputs(args):
    """(a, b, params) from .npy files or generated from --m/--k/--n/--seed."""
    import numpy as np
    files = args.a is not None or args.b is not None
    sizes = [args.m, args.k, args.n]
    if files and any(v is not None for v in sizes):
        raise SystemExit("error: give either --a and --b, or --m, --k and --n, not both")
    if files:
        if args.a is None or args.b is None:
            raise SystemExit("error: --a and --b must be given together")
        a, b = _load_npy("--a", args.a), _load_npy("--b", args.b)
    else:
        if any(v is None for v in sizes):
            raise SystemExit("error: give --a and --b, or all of --m, --k and --n")
        for name, v in zip(("--m", "--k", "--n"), sizes):
            if v < 1:
                raise SystemExit(f"error: {name} must be at least 1, not {v}")
        if args.seed < 0:
            raise SystemExit(f"error: --seed must be a non-negative integer, not {args.seed}")
        rng = np.random.default_rng(args.seed)
        a = rng.integers(-128, 128, (args.m, args.k), dtype=np.int8)
        b = rng.integers(-128, 128, (args.k, args.n), dtype=np.int8)
    params = {name: _load_npy(f"--{name}", path) for name, path in
              (("bias", args.bias), ("multiplier", args.multiplier), ("shift", args.shift))
              if path is not None}
    return a, b, params


def _check_out(path):
    """Refuse an ``--out`` whose directory does not exist before simulating anything."""
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise SystemExit(f"error: --out {path}: directory {Path(path).parent} does not exist")


def cmd_gemm(args):
    import numpy as np
    from sim.device import Device, EmberHardwareError, EmberSimulationError, EmberTimeout
    from sim.golden import ref_matmul
    from sim.golden_requant import ref_bias_add, ref_requant
    cfg = _config(args.config)
    a, b, params = _gemm_inputs(args)
    _check_out(args.out)
    scalars = {k: getattr(args, k) for k in ("zero_point", "act_min", "act_max")
               if getattr(args, k) is not None}
    try:
        dev = Device(cfg, driver=args.driver, dram_latency=args.dram_latency)
        dev.check_gemm_args(a, b, **params, **scalars)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    print(f"ember {cfg.name}: GEMM {a.shape[0]}x{a.shape[1]}x{b.shape[1]} "
          f"({'INT8' if 'multiplier' in params else 'INT32'} output, {args.driver} driver)",
          flush=True)
    try:
        c = dev.gemm(a, b, **params, **scalars)
    except EmberHardwareError as e:
        raise SystemExit(f"error: {e}")
    except (EmberTimeout, EmberSimulationError) as e:
        raise SystemExit(f"error: simulation failed: {str(e).splitlines()[0]}")
    acc = ref_matmul(a, b)
    bias = params.get("bias", np.zeros(b.shape[1], np.int32))
    if "multiplier" in params:
        golden = ref_requant(acc, bias, params["multiplier"], params["shift"], **scalars)
    else:
        golden = ref_bias_add(acc, bias)
    bad = np.argwhere(c != golden)
    if args.out:
        try:
            np.save(args.out, c)
        except OSError as e:
            raise SystemExit(f"error: --out {args.out}: {e}")
    s = dev.last_stats
    report = {"ok": not len(bad), "config": cfg.name, "m": s["m"], "k": s["k"], "n": s["n"],
              "output": s["output"], "cycles": s["cycles"], "macs": s["macs"],
              "peak_macs_per_cycle": s["peak_macs_per_cycle"],
              "utilization": round(s["utilization"], 4), "array_steps": s["array_steps"],
              "array_utilization": round(s["array_utilization"], 4),
              "engines": s["engines"], "jobs": s["plan"]["jobs"],
              "commands": sum(s["plan"]["commands"]), "mismatches": int(len(bad)),
              "out": args.out, "sim_seconds": s["sim_seconds"], "driver": dev.driver}
    if "doorbell_cycles" in s:
        report["doorbell_cycles"] = s["doorbell_cycles"]
        report["first_push_cycles"] = s["first_push_cycles"]
    print(f"{s['cycles']} cycles, {s['macs']} MACs, utilisation {s['utilization']:.3f} of "
          f"{s['peak_macs_per_cycle']} MACs/cycle; {report['commands']} commands in "
          f"{report['jobs']} jobs; golden model: {'match' if report['ok'] else 'MISMATCH'}")
    print(json.dumps(report), flush=True)
    if len(bad):
        i, j = bad[0]
        raise SystemExit(f"error: result differs from the golden model at {len(bad)} of "
                         f"{c.size} elements, first at [{i}, {j}]: got {c[i, j]}, expected "
                         f"{golden[i, j]}")


def _embag_inputs(args):
    """``(table, indices, offsets, weights, generated)`` from .npy files or generated from
    --rows/--dim/--bags/--pooling/--seed/--distribution."""
    import numpy as np
    files = any(getattr(args, k) is not None for k in ("table", "indices", "offsets"))
    gen = {k: getattr(args, k) for k in ("rows", "dim", "bags", "pooling")}
    if files and any(v is not None for v in gen.values()):
        raise SystemExit("error: give either --table, --indices and --offsets, or --rows, "
                         "--dim, --bags and --pooling, not both")
    if files:
        missing = [f"--{k}" for k in ("table", "indices", "offsets") if getattr(args, k) is None]
        if missing:
            raise SystemExit(f"error: {', '.join(missing)} missing: --table, --indices and "
                             f"--offsets go together")
        table = _load_npy("--table", args.table)
        indices = _load_npy("--indices", args.indices)
        offsets = _load_npy("--offsets", args.offsets)
        weights = _load_npy("--weights", args.weights) if args.weights else None
        return table, indices, offsets, weights, False
    if any(v is None for v in gen.values()):
        raise SystemExit("error: give --table, --indices and --offsets, or all of --rows, --dim, "
                         "--bags and --pooling")
    for name, lo in (("rows", 1), ("dim", 1), ("bags", 0), ("pooling", 0)):
        if gen[name] < lo:
            raise SystemExit(f"error: --{name} must be at least {lo}, not {gen[name]}")
    if args.weights is not None:
        raise SystemExit("error: --weights goes with --table/--indices/--offsets; with generated "
                         "inputs use --weighted")
    if args.seed < 0:
        raise SystemExit(f"error: --seed must be a non-negative integer, not {args.seed}")
    rng = np.random.default_rng(args.seed)
    table = rng.integers(-128, 128, (args.rows, args.dim)).astype(np.int8)
    # Every bag has exactly --pooling indices.
    n = args.bags * args.pooling
    if args.distribution == "uniform":
        indices = rng.integers(0, args.rows, n)
    else:
        indices = (rng.zipf(args.zipf_a, n) - 1) % args.rows
    indices = indices.astype(np.int32)
    offsets = (np.arange(args.bags + int(args.include_last_offset)) * args.pooling).astype(
        np.int32)
    weights = rng.integers(-128, 128, n).astype(np.int8) if args.weighted else None
    return table, indices, offsets, weights, True


def cmd_embedding_bag(args):
    import numpy as np
    from sim import golden_embag as GE
    from sim.device import Device, EmberHardwareError, EmberSimulationError, EmberTimeout
    cfg = _config(args.config)
    table, indices, offsets, weights, generated = _embag_inputs(args)
    _check_out(args.out)
    rq = {k: getattr(args, k) for k in ("multiplier", "shift") if getattr(args, k) is not None}
    rq.update({k: getattr(args, k) for k in ("zero_point", "act_min", "act_max")
               if getattr(args, k) is not None})
    kwargs = dict(offsets=offsets, per_sample_weights=weights, mode=args.mode,
                  include_last_offset=args.include_last_offset, **rq)
    try:
        dev = Device(cfg, dram_latency=args.dram_latency)
        job = dev.check_embedding_bag_args(table, indices, **kwargs)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    bags = len(job["lengths"][0])
    print(f"ember {cfg.name}: embedding bags, table {table.shape[0]}x{table.shape[1]}, "
          f"{bags} bags, {len(indices)} indices, mode {args.mode}"
          f"{', weighted' if weights is not None else ''}"
          f"{', INT8 output' if job['requant'] else ''}, DRAM latency "
          f"{args.dram_latency or 0}", flush=True)
    try:
        out = dev.embedding_bag(table, indices, **kwargs)
    except EmberHardwareError as e:
        raise SystemExit(f"error: {e}")
    except (EmberTimeout, EmberSimulationError) as e:
        raise SystemExit(f"error: simulation failed: {str(e).splitlines()[0]}")
    try:
        golden = GE.ref_embedding_bag(table, indices, offsets=offsets,
                                      per_sample_weights=weights, mode=args.mode,
                                      include_last_offset=args.include_last_offset)
    except GE.IndexRangeError as e:      # the hardware did not see it: that is a failure too
        raise SystemExit(f"error: the golden model reports {e}, the accelerator did not")
    if job["requant"]:
        golden = GE.requantise(golden, *job["requant"][0])
    bad = np.argwhere(out != golden)
    if args.out:
        try:
            np.save(args.out, out)
        except OSError as e:
            raise SystemExit(f"error: --out {args.out}: {e}")
    s = dev.last_stats
    if s is None:         # no bags: nothing ran
        s = {"cycles": 0, "engine_cycles": 0, "bytes_gathered": 0, "list_bytes": 0,
             "bytes_per_cycle": 0.0, "bus_bytes_per_cycle": cfg.bus_bytes,
             "bandwidth_utilization": 0.0, "gather_utilization": 0.0,
             "engine_bandwidth_utilization": 0.0, "plan": {"segments": 0, "commands": [0] * 4},
             "engines": {}, "sim_seconds": 0.0, "output": "int8" if job["requant"] else "int32"}
    report = {"ok": not len(bad), "config": cfg.name, "rows": int(table.shape[0]),
              "dim": int(table.shape[1]), "bags": bags, "indices": int(len(indices)),
              "mode": args.mode, "weighted": weights is not None, "output": s["output"],
              "dram_latency": args.dram_latency or 0,
              "cycles": s["cycles"], "engine_cycles": s["engine_cycles"],
              "bytes_gathered": s["bytes_gathered"], "list_bytes": s["list_bytes"],
              "bytes_per_cycle": round(s["bytes_per_cycle"], 4),
              "bus_bytes_per_cycle": s["bus_bytes_per_cycle"],
              "bandwidth_utilization": round(s["bandwidth_utilization"], 4),
              "gather_utilization": round(s["gather_utilization"], 4),
              "engine_bandwidth_utilization": round(s["engine_bandwidth_utilization"], 4),
              "segments": s["plan"]["segments"], "commands": sum(s["plan"]["commands"]),
              "engines": s["engines"], "mismatches": int(len(bad)), "out": args.out,
              "sim_seconds": s["sim_seconds"]}
    print(f"{s['cycles']} cycles, {s['bytes_gathered']} bytes gathered + {s['list_bytes']} "
          f"bytes of lists: read bandwidth {s['bandwidth_utilization']:.3f} of the bus (table "
          f"rows alone {s['gather_utilization']:.3f}, {s['engine_bandwidth_utilization']:.3f} "
          f"while the engine ran); golden model: "
          f"{'match' if report['ok'] else 'MISMATCH'}")
    print(json.dumps(report), flush=True)
    if len(bad):
        i, j = bad[0]
        raise SystemExit(f"error: result differs from the golden model at {len(bad)} of "
                         f"{out.size} elements, first at [{i}, {j}]: got {out[i, j]}, expected "
                         f"{golden[i, j]}")


def _one_line_errors(parser):
    """Make ``parser`` report usage errors on one line (exit status 2)."""
    def error(message):
        parser.exit(2, f"error: {parser.prog}: {message}\n")
    parser.error = error
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:                 # its own parser: python -m sim demo --help
        from sim.demo import main as demo_main
        return demo_main(argv[1:], prog="python -m sim demo")
    parser = argparse.ArgumentParser(prog="python -m sim", description="Ember command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the presets").set_defaults(func=cmd_presets)
    for name, func, text in (("verilog", cmd_verilog, "elaborate a preset to Verilog"),
                             ("lint", cmd_lint, "lint a preset's Verilog with Verilator")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", default="tiny", help="preset name (default: tiny)")
        p.add_argument("--part", default="top", choices=PARTS,
                       help="the whole accelerator (top, default) or the PE array alone")
        p.add_argument("--out-dir", default=None, help="output directory (default: build/)")
        p.set_defaults(func=func)
    p = sub.add_parser("regmap", help="print the register map or write fw/ember_regs.h")
    p.add_argument("--c", action="store_true", help="write fw/ember_regs.h")
    p.set_defaults(func=cmd_regmap)
    sub.add_parser("demo", help="the DLRM-style model end to end (python -m sim demo --help)")
    p = _one_line_errors(sub.add_parser(
        "gemm", help="run a GEMM on the simulated accelerator and check it",
        description="Run C = A·B (INT8 operands) on the Verilator model of the whole "
                    "accelerator, driven from the host port, and compare with the golden model. "
                    "The last line of output is a JSON object."))
    p.add_argument("--config", default="tiny", help="preset name (default: tiny)")
    p.add_argument("--a", metavar="A.npy", help="int8 M×K matrix")
    p.add_argument("--b", metavar="B.npy", help="int8 K×N matrix")
    p.add_argument("--out", metavar="C.npy", help="write the result here")
    p.add_argument("--m", type=int, help="generate A and B: rows of A")
    p.add_argument("--k", type=int, help="generate A and B: columns of A / rows of B")
    p.add_argument("--n", type=int, help="generate A and B: columns of B")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")
    p.add_argument("--bias", metavar="BIAS.npy", help="int32 bias, one per column of B")
    p.add_argument("--multiplier", metavar="M.npy",
                   help="int32 requantisation multipliers (with --shift: INT8 output)")
    p.add_argument("--shift", metavar="S.npy", help="int32 requantisation shifts in [-31, 31]")
    p.add_argument("--zero-point", type=int, help="INT8 output zero point")
    p.add_argument("--act-min", type=int, help="INT8 output clamp, lower bound")
    p.add_argument("--act-max", type=int, help="INT8 output clamp, upper bound")
    p.add_argument("--driver", choices=("host", "firmware"), default="host",
                   help="who pushes the commands: the host through its registers (default), or "
                        "the GEMM firmware (fw/gemm.c) on the control core, started by "
                        "DOORBELL")
    p.add_argument("--dram-latency", type=int, default=None, metavar="CYCLES",
                   help="run on the pipelined DRAM model with this latency (default: "
                        "cocotbext-axi's AxiRam)")
    p.set_defaults(func=cmd_gemm)
    p = _one_line_errors(sub.add_parser(
        "embedding-bag", help="run embedding bags on the simulated accelerator and check them",
        description="Pool bags of rows of an INT8 table (nn.EmbeddingBag, SparseLengthsSum) on "
                    "the Verilator model of the whole accelerator, driven from the host port, "
                    "and compare with the golden model. The last line of output is a JSON "
                    "object."))
    p.add_argument("--config", default="tiny", help="preset name (default: tiny)")
    p.add_argument("--table", metavar="T.npy", help="int8 [rows, dim] table")
    p.add_argument("--indices", metavar="I.npy", help="int32 indices")
    p.add_argument("--offsets", metavar="O.npy", help="int32 bag offsets")
    p.add_argument("--weights", metavar="W.npy", help="int8 per-sample weights (mode sum)")
    p.add_argument("--mode", choices=("sum", "mean"), default="sum", help="pooling (sum)")
    p.add_argument("--include-last-offset", action="store_true",
                   help="offsets has B + 1 entries, the last one len(indices)")
    p.add_argument("--out", metavar="Y.npy", help="write the result here")
    p.add_argument("--rows", type=int, help="generate: table rows")
    p.add_argument("--dim", type=int, help="generate: table dim (1 to 1024)")
    p.add_argument("--bags", type=int, help="generate: bags")
    p.add_argument("--pooling", type=int, help="generate: indices per bag")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")
    p.add_argument("--distribution", choices=("uniform", "zipf"), default="uniform",
                   help="generate: index distribution (zipf: exponent --zipf-a)")
    p.add_argument("--zipf-a", type=float, default=1.15, help=argparse.SUPPRESS)
    p.add_argument("--weighted", action="store_true",
                   help="generate: random int8 per-sample weights")
    p.add_argument("--multiplier", type=int, help="INT8 output: requantisation multiplier")
    p.add_argument("--shift", type=int, help="INT8 output: requantisation shift in [-31, 31]")
    p.add_argument("--zero-point", type=int, help="INT8 output zero point")
    p.add_argument("--act-min", type=int, help="INT8 output clamp, lower bound")
    p.add_argument("--act-max", type=int, help="INT8 output clamp, upper bound")
    p.add_argument("--dram-latency", type=int, default=None, metavar="CYCLES",
                   help="DRAM latency in cycles of the pipelined DRAM model (default 0)")
    p.set_defaults(func=cmd_embedding_bag)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
