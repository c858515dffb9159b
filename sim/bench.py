"""``make bench``: Ember's benchmark suite, in simulated cycles, on the Verilator model of the top.

Every workload runs through the runtime (:class:`sim.device.Device`) on the whole accelerator, with
the DRAM model's read latency set per run, and its result is checked bit-exact against the numpy
golden model (a mismatch fails the bench). Cycle counts are deterministic; the wall time and the
simulator speed (simulated cycles per second) are recorded beside them.

The suite (``default`` preset unless ``--preset``), at DRAM latencies 0 and 100 cycles:

- ``gemm``: square GEMMs 64³, 128³, 256³, 512³, DRAM to DRAM, INT8 requantised output;
  ``utilization`` = MACs / (cycles · peak MACs per cycle);
- ``gemm_membound``: weight-streaming GEMMs M = 1 and 8, K = N = 1024 (B is read once and used
  M times); ``bandwidth_utilization`` = AXI read beats / cycles (the read channel's busy fraction);
- ``embedding_bag``: dim 32, 64, 128, 256 bytes × pooling 1, 20, 128 × uniform and Zipf indices,
  over a table of 20,000 rows (sum mode, INT32 output), with ``min(1024, 8192 // pooling)`` bags:
  about 8K lookups per run (1,024 bags at pooling 1), a batch a recommendation model serves.
  ``bandwidth_utilization`` = bytes read from DRAM (table rows gathered and the index and length
  lists) / (cycles · bus bytes), as FBGEMM's TBE benchmark counts bytes read;
  ``gather_utilization`` counts the table rows alone.

Outputs: ``build/bench.json`` (a list of records: ``workload``, ``preset``, ``dram_latency``,
``params``, ``cycles``, ``utilization`` or ``bandwidth_utilization``, ``wall_seconds``,
``sim_cycles_per_second``, ``ok``), ``build/bench.md`` (the table, and the issue's targets next to
the achieved figures) and ``build/bench_gemm.png`` / ``build/bench_embag.png``.

Usage: ``python -m sim.bench [--preset P] [--quick] [--out DIR] [--only gemm,...]``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["suite", "TARGETS", "run_record", "main"]

LATENCIES = (0, 100)
GEMM_SIZES = (64, 128, 256, 512)
MEMBOUND = ((1, 1024, 1024), (8, 1024, 1024))
EMBAG_DIMS = (32, 64, 128, 256)
EMBAG_POOLING = (1, 20, 128)
EMBAG_DISTS = ("uniform", "zipf")
EMBAG_LOOKUPS = 8192          # bags per run: min(EMBAG_MAX_BAGS, EMBAG_LOOKUPS // pooling)
EMBAG_MAX_BAGS = 1024
EMBAG_ROWS = 20_000

#: (description, workload, params filter, latency, metric, target)
TARGETS = [
    ("GEMM 512³", "gemm", {"m": 512}, 100, "utilization", 0.95),
    ("GEMM 128³", "gemm", {"m": 128}, 100, "utilization", 0.85),
    ("weight-streaming GEMM M=1", "gemm_membound", {"m": 1}, 100, "bandwidth_utilization", 0.90),
    ("weight-streaming GEMM M=8", "gemm_membound", {"m": 8}, 100, "bandwidth_utilization", 0.90),
    *((f"embedding bag dim {d}, pooling {p}, uniform", "embedding_bag",
       {"dim": d, "distribution": "uniform", "pooling": p}, 100, "bandwidth_utilization", 0.90)
      for d in (64, 128, 256) for p in (20, 128)),
]


def embag_bags(pooling):
    """Bags of an embedding-bag run: about ``EMBAG_LOOKUPS`` lookups, at most 1,024 bags."""
    return min(EMBAG_MAX_BAGS, EMBAG_LOOKUPS // pooling)


def suite(quick=False):
    """The runs, as ``(workload, params, dram_latency)``; ``quick`` keeps one of each kind."""
    runs = []
    sizes = (64, 128) if quick else GEMM_SIZES
    for lat in LATENCIES:
        runs += [("gemm", {"m": s, "k": s, "n": s}, lat) for s in sizes]
        runs += [("gemm_membound", {"m": m, "k": k, "n": n}, lat)
                 for m, k, n in (MEMBOUND[:1] if quick else MEMBOUND)]
        dims = (64,) if quick else EMBAG_DIMS
        pooling = (20,) if quick else EMBAG_POOLING
        dists = ("uniform",) if quick else EMBAG_DISTS
        runs += [("embedding_bag", {"dim": d, "pooling": p, "distribution": dist,
                                    "bags": embag_bags(p), "rows": EMBAG_ROWS}, lat)
                 for d in dims for p in pooling for dist in dists]
    return runs


def _gemm(dev, params, rng):
    from sim.golden import ref_matmul
    from sim.golden_requant import ref_requant
    M, K, N = params["m"], params["k"], params["n"]
    a = rng.integers(-128, 128, (M, K), np.int8)
    b = rng.integers(-128, 128, (K, N), np.int8)
    bias = rng.integers(-2**16, 2**16, N, dtype=np.int64).astype(np.int32)
    mult = rng.integers(2**30, 2**31, N, dtype=np.int64).astype(np.int32)
    shift = np.full(N, -10, np.int32)
    c = dev.gemm(a, b, bias=bias, multiplier=mult, shift=shift)
    ok = bool(np.array_equal(c, ref_requant(ref_matmul(a, b), bias, mult, shift, 0, -128, 127)))
    return ok, dev.last_stats


def _embag(dev, params, rng):
    from sim.golden_embag import ref_embedding_bag
    rows, dim, bags, pooling = params["rows"], params["dim"], params["bags"], params["pooling"]
    table = rng.integers(-128, 128, (rows, dim), np.int8)
    n = bags * pooling
    if params["distribution"] == "uniform":
        indices = rng.integers(0, rows, n)
    else:
        indices = (rng.zipf(1.2, n) - 1) % rows
    indices = indices.astype(np.int32)
    offsets = np.arange(bags, dtype=np.int32) * pooling
    out = dev.embedding_bag(table, indices, offsets)
    ok = bool(np.array_equal(out, ref_embedding_bag(table, indices, offsets=offsets)))
    return ok, dev.last_stats


def run_record(preset, workload, params, latency, seed=1):
    """Run one workload and return its ``bench.json`` record."""
    from sim.device import Device
    rng = np.random.default_rng(seed)
    dev = Device(preset, dram_latency=latency, timeout=20_000_000)
    t0 = time.monotonic()
    if workload in ("gemm", "gemm_membound"):
        ok, s = _gemm(dev, params, rng)
    else:
        ok, s = _embag(dev, params, rng)
    wall = time.monotonic() - t0
    rec = {"workload": workload, "preset": dev.config.name, "dram_latency": latency,
           "params": params, "cycles": int(s["cycles"]), "ok": ok,
           "wall_seconds": round(wall, 2),
           "sim_cycles_per_second": round(s["cycles"] / max(s.get("sim_seconds", wall), 1e-9))}
    if workload == "gemm":
        rec["utilization"] = round(s["utilization"], 4)
        rec["engines"] = s["engines"]
    elif workload == "gemm_membound":
        rec["bandwidth_utilization"] = round(s["dma_rd_beats"] / s["cycles"], 4)
        rec["utilization"] = round(s["utilization"], 4)
        rec["engines"] = s["engines"]
    else:
        rec["bandwidth_utilization"] = round(s["bandwidth_utilization"], 4)
        rec["gather_utilization"] = round(s["gather_utilization"], 4)
        rec["bytes_gathered"] = int(s["bytes_gathered"])
        rec["list_bytes"] = int(s["list_bytes"])
        rec["engines"] = s["engines"]
    return rec


def _metric(rec):
    return rec["utilization"] if rec["workload"] == "gemm" else rec["bandwidth_utilization"]


def _describe(rec):
    p = rec["params"]
    if rec["workload"] == "embedding_bag":
        return (f"dim {p['dim']}, pooling {p['pooling']}, {p['distribution']}, "
                f"{p['bags']} bags")
    return f"{p['m']}×{p['k']}×{p['n']}"


def target_rows(records):
    """``(description, latency, metric, target, achieved or None, met)`` per target."""
    rows = []
    for desc, workload, match, lat, metric, target in TARGETS:
        got = [r[metric] for r in records if r["workload"] == workload and
               r["dram_latency"] == lat and all(r["params"].get(k) == v for k, v in match.items())
               and metric in r]
        achieved = min(got) if got else None
        rows.append((desc, lat, metric, target, achieved,
                     achieved is not None and achieved >= target))
    return rows


def markdown(records):
    lines = ["| workload | shape | DRAM latency | cycles | utilisation | bandwidth util. | "
             "table rows only | bit-exact | sim kcycles/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        u = r.get("utilization")
        bw = r.get("bandwidth_utilization")
        g = r.get("gather_utilization")
        lines.append(f"| {r['workload']} | {_describe(r)} | {r['dram_latency']} | "
                     f"{r['cycles']:,} | {'' if u is None else f'{u:.3f}'} | "
                     f"{'' if bw is None else f'{bw:.3f}'} | {'' if g is None else f'{g:.3f}'} | "
                     f"{'yes' if r['ok'] else 'NO'} | "
                     f"{r['sim_cycles_per_second'] / 1000:.1f} |")
    lines += ["", "| target (100-cycle DRAM latency) | metric | target | achieved | met |",
              "|---|---|---|---|---|"]
    for desc, lat, metric, target, achieved, met in target_rows(records):
        got = "not run" if achieved is None else f"{achieved:.3f}"
        lines.append(f"| {desc} | {metric} | ≥ {target:.2f} | {got} | "
                     f"{'yes' if met else 'no'} |")
    return "\n".join(lines) + "\n"


def plots(records, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for lat in LATENCIES:
        pts = sorted((r["params"]["m"], r["utilization"]) for r in records
                     if r["workload"] == "gemm" and r["dram_latency"] == lat)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"DRAM latency {lat}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("GEMM size (M = K = N)")
    ax.set_ylabel("utilisation (of peak MACs)")
    ax.set_ylim(0, 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(f"Ember GEMM utilisation ({records[0]['preset'] if records else ''})")
    fig.tight_layout()
    paths.append(out_dir / "bench_gemm.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for lat in LATENCIES:
        for pooling in EMBAG_POOLING:
            pts = sorted((r["params"]["dim"], r["bandwidth_utilization"]) for r in records
                         if r["workload"] == "embedding_bag" and r["dram_latency"] == lat
                         and r["params"]["pooling"] == pooling
                         and r["params"]["distribution"] == "uniform")
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if lat else "s--",
                        label=f"latency {lat}, pooling {pooling}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("embedding dim (bytes per row)")
    ax.set_ylabel("bandwidth utilisation")
    ax.set_ylim(0, 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Ember embedding bags, uniform indices")
    fig.tight_layout()
    paths.append(out_dir / "bench_embag.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sim.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--quick", action="store_true", help="one run of each kind")
    parser.add_argument("--only", default=None,
                        help="comma-separated workloads (gemm, gemm_membound, embedding_bag)")
    parser.add_argument("--out", default="build", help="output directory (default: build)")
    args = parser.parse_args(argv)
    runs = suite(args.quick)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {"gemm", "gemm_membound", "embedding_bag"}
        if unknown:
            parser.error(f"--only: unknown workload(s) {sorted(unknown)}")
        runs = [r for r in runs if r[0] in wanted]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, t0 = [], time.monotonic()
    for n, (workload, params, lat) in enumerate(runs, 1):
        print(f"[{n}/{len(runs)}] {workload} {params} latency {lat} ...", end=" ", flush=True)
        rec = run_record(args.preset, workload, params, lat)
        records.append(rec)
        print(f"{rec['cycles']:,} cycles, {_metric(rec):.3f}, "
              f"{'bit-exact' if rec['ok'] else 'MISMATCH'} ({rec['wall_seconds']:.0f} s, "
              f"{time.monotonic() - t0:.0f} s total)", flush=True)
        (out_dir / "bench.json").write_text(json.dumps(records, indent=1) + "\n")
    (out_dir / "bench.md").write_text(markdown(records))
    paths = plots(records, out_dir)
    print()
    print(markdown(records))
    print(f"wrote {out_dir / 'bench.json'}, {out_dir / 'bench.md'}, "
          + ", ".join(str(p) for p in paths))
    bad = [r for r in records if not r["ok"]]
    if bad:
        print(f"error: {len(bad)} run(s) differ from the golden model", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
