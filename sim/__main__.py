"""Ember command line: ``python -m sim <command> ...``.

Commands
--------
presets            list the presets
verilog            elaborate a preset's top level to build/ember_<preset>.v
lint               Verilator lint of that file, with the documented waivers
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


def verilog_path(cfg, out_dir=None):
    from sim.runner import BUILD
    return Path(out_dir or BUILD) / f"{cfg.top_name}.v"


def cmd_verilog(args):
    import resource
    from hw.top import build_top
    from sim.runner import generate_verilog, write_if_changed
    cfg = _config(args.config)
    path = verilog_path(cfg, args.out_dir)
    t0 = time.monotonic()
    text = generate_verilog(build_top(cfg), cfg.top_name)
    elapsed = time.monotonic() - t0
    written = write_if_changed(path, text)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stats = {"config": cfg.name, "top": cfg.top_name, "path": str(path),
             "bytes": len(text.encode()), "elaboration_s": round(elapsed, 2),
             "peak_rss_mib": round(peak_mib, 1), "written": written}
    print(f"{path}: {'written' if written else 'unchanged'}, {stats['bytes']} bytes, "
          f"elaborated in {elapsed:.1f} s, peak RSS {peak_mib:.0f} MiB")
    print(json.dumps(stats))


def cmd_lint(args):
    from sim.runner import LINT_WAIVERS, lint
    cfg = _config(args.config)
    path = verilog_path(cfg, args.out_dir)
    if not path.exists():
        raise SystemExit(f"error: {path} does not exist; run `make verilog CONFIG={cfg.name}`")
    try:
        lint(path, cfg.top_name)
    except RuntimeError as e:
        raise SystemExit(f"error: {e}")
    print(f"{path}: lint clean (verilator -Wall, waived: {', '.join(LINT_WAIVERS)})")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sim", description="Ember command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the presets").set_defaults(func=cmd_presets)
    for name, func, text in (("verilog", cmd_verilog, "elaborate a preset to Verilog"),
                             ("lint", cmd_lint, "lint a preset's Verilog with Verilator")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", default="tiny", help="preset name (default: tiny)")
        p.add_argument("--out-dir", default=None, help="output directory (default: build/)")
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
