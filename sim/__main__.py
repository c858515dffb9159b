"""Ember command line: ``python -m sim <command> ...``.

Commands
--------
presets            list the presets
verilog            elaborate a preset to build/ember_<preset>.v (with build/VexRiscv.v beside it)
lint               Verilator lint of that file, with the documented waivers
regmap             print the register map (Markdown) or write fw/ember_regs.h (--c)
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


def main(argv=None):
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
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
