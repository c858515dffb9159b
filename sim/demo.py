"""``make demo``: a small DLRM-style model (:mod:`sim.dlrm`) end to end on Ember.

Every layer runs on the Verilator model of the whole top level through the runtime
(:class:`sim.device.Device`): the GEMM layers (bottom MLP, projection, interaction, top MLP) with
the GEMM firmware (``fw/gemm.c`` on the control core) pushing the commands (``--driver host``:
the host pushes them), the table-batched embedding job with the host driver (there is no
embedding-bag firmware). DMA, PE array, embedding engine and output stage do all of the model's
arithmetic; between layers the host only lays buffers out (concatenation, stacking, transposition,
selection of the interaction's entries: :func:`sim.dlrm.interaction_operands`,
:func:`sim.dlrm.interaction_pairs`, :func:`sim.dlrm.top_input`).

Each layer's output is compared bit-exact with the numpy reference of the quantised model
(:func:`sim.dlrm.reference`, golden models only), and the logits with the float model (the
largest logit error, and whether the ranking of the samples is preserved).

Output: progress, then per layer the cycles, the utilisation (GEMM: MACs / (cycles · peak MACs
per cycle)) or bandwidth utilisation (embedding bags: bytes gathered / (cycles · bus bytes)) and
the share of the total cycles; ``build/demo.json`` (``ok``, ``cycles``, ``layers``, ``float``,
...). Total cycles are the sum of the layers' jobs (each counted by ``PERF_CYCLES`` from its first
command to its queues seen idle; the host's work between jobs is not counted). Exit status 1 on a
mismatch or a failed job.

Usage: ``python -m sim.demo [--preset P] [--model demo|small] [--driver firmware|host]
[--dram-latency CYCLES] [--seed N] [--out FILE]`` (also ``python -m sim demo ...``).
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from sim import dlrm as D

__all__ = ["run_model", "check", "float_report", "run", "main"]


def _shape(*dims):
    return "×".join(str(int(d)) for d in dims)


def run_model(qm, inputs, gemm_dev, embag_dev, progress=None):
    """Run the quantised model ``qm`` on the devices, layer by layer.

    ``gemm_dev`` runs the GEMM layers, ``embag_dev`` the table-batched embedding job (each a
    :class:`sim.device.Device` or anything with its ``gemm``/``embedding_bag``/``last_stats``).
    Each layer's input is the device's own output of the layers before it. Returns
    ``(outputs, stats)``: the outputs by layer name (as :func:`sim.dlrm.reference`) and one
    dict per layer (``name``, ``kind``, ``shape``, ``cycles``, ``utilization`` or
    ``bandwidth_utilization``, ...). ``progress(i, n, name, what)`` is called before each layer
    and ``progress(i, n, name, stats, output)`` after it."""
    spec = qm.spec
    names = D.layer_names(spec)
    outputs, stats = {}, []

    def gemm(layer, a, b=None, note=None):
        b = layer.weight if b is None else b
        what = f"GEMM {_shape(a.shape[0], a.shape[1], b.shape[1])}"
        if progress:
            progress(len(stats) + 1, len(names), layer.name, what)
        out = gemm_dev.gemm(a, b, **layer.kwargs())
        s = gemm_dev.last_stats
        rec = {"name": layer.name, "kind": "gemm", "shape": [int(a.shape[0]), int(a.shape[1]),
                                                             int(b.shape[1])],
               "output": "int32" if layer.raw else "int8",
               "cycles": int(s["cycles"]), "macs": int(s["macs"]),
               "utilization": float(s["utilization"]), "sim_seconds": s.get("sim_seconds")}
        if note:
            rec.update(note)
        stats.append(rec)
        outputs[layer.name] = out
        if progress:
            progress(len(stats), len(names), layer.name, rec, out)
        return out

    h = inputs.dense
    for layer in qm.bottom:
        h = gemm(layer, h)
    x = h

    emb = qm.embeddings
    dims = [t.shape[1] for t in emb.tables]
    if progress:
        progress(len(stats) + 1, len(names), "embeddings",
                 f"TBE {len(dims)} tables, {spec.batch} bags each")
    pooled = embag_dev.embedding_bag(list(emb.tables), list(inputs.indices),
                                     lengths=list(inputs.lengths), **emb.kwargs())
    s = embag_dev.last_stats
    stats.append({"name": "embeddings", "kind": "embedding_bag",
                  "shape": [int(spec.batch), int(sum(dims))], "tables": len(dims),
                  "indices": int(sum(len(i) for i in inputs.indices)),
                  "output": "int8", "cycles": int(s["cycles"]),
                  "bytes_gathered": int(s["bytes_gathered"]),
                  "bandwidth_utilization": float(s["bandwidth_utilization"]),
                  "sim_seconds": s.get("sim_seconds")})
    outputs["embeddings"] = pooled
    if progress:
        progress(len(stats), len(names), "embeddings", stats[-1], pooled)

    z = gemm(qm.projection, pooled)
    X, Xt = D.interaction_operands(x, z, spec.features)
    F = spec.features
    xx = gemm(qm.interaction, X, Xt,
              note={"useful_macs": int(spec.batch * F * (F - 1) // 2 * spec.d)})
    h = D.top_input(x, D.interaction_pairs(xx, spec.batch, F))
    for layer in qm.top:
        h = gemm(layer, h)
    return outputs, stats


def check(outputs, reference):
    """Compare every layer's output with the reference, bit-exact: ``{name: {"ok",
    "mismatches", "first"}}`` (``first``: index, got and expected of the first difference)."""
    result = {}
    for name, want in reference.items():
        got = outputs.get(name)
        if got is None or got.shape != want.shape or got.dtype != want.dtype:
            result[name] = {"ok": False, "mismatches": int(want.size), "first": None,
                            "message": f"got {None if got is None else (got.dtype, got.shape)}"
                                       f", expected {(want.dtype, want.shape)}"}
            continue
        bad = np.argwhere(got != want)
        first = None
        if len(bad):
            idx = tuple(int(i) for i in bad[0])
            first = {"index": list(idx), "got": int(got[idx]), "expected": int(want[idx])}
        result[name] = {"ok": not len(bad), "mismatches": int(len(bad)), "first": first}
    return result


def float_report(logits_int32, logit_scale, logits_float):
    """The quantised logits (INT32, real value ``acc · logit_scale``) against the float model's:
    ``max_logit_error``, the float logits' range, ``ranking_preserved`` (every pair of samples in
    the same order; a tie on one side and not the other counts as a swap), ``swapped_pairs`` and
    Kendall's tau."""
    q = np.asarray(logits_int32, np.int64).reshape(-1)
    f = np.asarray(logits_float, np.float64).reshape(-1)
    deq = q.astype(np.float64) * logit_scale
    err = np.abs(deq - f)
    n = len(q)
    iu = np.triu_indices(n, 1)
    sq = np.sign(q[iu[1]] - q[iu[0]])
    sf = np.sign(f[iu[1]] - f[iu[0]])
    swapped = int(np.count_nonzero(sq != sf))
    pairs = len(iu[0])
    concordant = int(np.count_nonzero((sq == sf) & (sq != 0)))
    discordant = int(np.count_nonzero(sq * sf < 0))
    return {"max_logit_error": float(err.max()), "mean_logit_error": float(err.mean()),
            "max_logit_error_sample": int(err.argmax()),
            "float_logit_min": float(f.min()), "float_logit_max": float(f.max()),
            "logit_scale": float(logit_scale),
            "ranking_preserved": swapped == 0, "swapped_pairs": swapped, "pairs": pairs,
            "kendall_tau": (concordant - discordant) / pairs if pairs else 1.0,
            "logits_float": [float(v) for v in f], "logits_quantised": [float(v) for v in deq]}


def _describe(spec):
    bottom = "-".join(str(w) for w in (spec.dense,) + spec.bottom)
    top = "-".join(str(w) for w in (spec.d + spec.pairs,) + spec.top + (1,))
    tables = ", ".join(f"{r}×{d}" for r, d in spec.tables)
    return (f"batch {spec.batch}; bottom MLP {bottom}; {len(spec.tables)} tables (rows×dim) "
            f"{tables}, bags of {spec.pooling[0]}-{spec.pooling[1]}, projected to "
            f"{spec.d}; interaction of {spec.features} vectors → {spec.pairs} pairs; top MLP "
            f"{top}")


def table(stats):
    """The per-layer table (Markdown)."""
    total = sum(s["cycles"] for s in stats)
    lines = ["| layer | kind | shape | cycles | share | utilisation | bandwidth util. "
             "| bit-exact |",
             "|---|---|---|---|---|---|---|---|"]
    for s in stats:
        if s["kind"] == "gemm":
            kind, shape = "GEMM", _shape(*s["shape"])
            util, bw = f"{s['utilization']:.3f}", ""
        else:
            kind = f"TBE, {s['tables']} tables"
            shape = (f"{s['shape'][0]} bags, {s['indices']} rows → "
                     f"{s['shape'][0]}×{s['shape'][1]}")
            util, bw = "", f"{s['bandwidth_utilization']:.3f}"
        exact = {True: "yes", False: "NO", None: ""}[s.get("bit_exact")]
        lines.append(f"| {s['name']} | {kind} | {shape} | {s['cycles']:,} | "
                     f"{s['cycles'] / total:.1%} | {util} | {bw} | {exact} |")
    lines.append(f"| **total** | | | **{total:,}** | 100% | | | |")
    return "\n".join(lines)


def run(spec, preset="default", *, driver="firmware", dram_latency=None, out=None,
        devices=None, quiet=False):
    """Build, quantise, run and check the model; return the report (the ``demo.json`` dict).

    ``devices`` (a ``(gemm_device, embag_device)`` pair) replaces the simulated accelerator (a
    test hook); by default ``Device(preset, driver=driver)`` runs the GEMMs and
    ``Device(preset)`` (host driver) the embedding bags."""
    say = (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, flush=True))
    t0 = time.monotonic()
    fm = D.FloatModel.init(spec)
    qm = D.quantise(fm)
    inputs = D.make_inputs(spec, spec.batch, stream=2)
    ref = D.reference(qm, inputs)
    if devices is None:
        from sim.device import Device
        devices = (Device(preset, driver=driver, dram_latency=dram_latency),
                   Device(preset, dram_latency=dram_latency))
        say(f"Ember demo: DLRM-style model on the '{preset}' preset (GEMMs: {driver} driver; "
            f"embedding bags: host driver); building the Verilator model if needed ...")
        devices[0].build()
    say(f"model: {_describe(spec)}; seed {spec.seed}")

    def progress(i, n, name, what, result=None):
        if isinstance(what, str):
            say(f"[{i}/{n}] {name:12} {what} ...", end=" ")
            return
        metric = (f"utilisation {what['utilization']:.3f}" if what["kind"] == "gemm"
                  else f"bandwidth utilisation {what['bandwidth_utilization']:.3f}")
        exact = result is not None and np.array_equal(result, ref[name])
        sec = what.get("sim_seconds")
        say(f"{what['cycles']:,} cycles, {metric}, {'bit-exact' if exact else 'MISMATCH'}"
            + (f" ({sec:.1f} s)" if sec is not None else ""))

    outputs, stats = run_model(qm, inputs, devices[0], devices[1], progress)
    checks = check(outputs, ref)
    for s in stats:
        c = checks[s["name"]]
        s["bit_exact"], s["mismatches"] = c["ok"], c["mismatches"]
        if c["first"] is not None:
            s["first_mismatch"] = c["first"]
    total = sum(s["cycles"] for s in stats)
    for s in stats:
        s["share"] = s["cycles"] / total if total else 0.0
    last = qm.top[-1].name
    fl = fm.forward(inputs.dense_float, inputs.indices, inputs.lengths)
    fr = float_report(outputs[last], qm.logit_scale, fl[last])
    ok = all(c["ok"] for c in checks.values())
    report = {"ok": ok, "preset": preset, "driver": driver, "embedding_driver": "host",
              "dram_latency": dram_latency, "model": dataclasses.asdict(spec),
              "cycles": total, "layers": stats, "float": fr,
              "logits_int32": [int(v) for v in np.asarray(outputs[last]).reshape(-1)],
              "wall_seconds": round(time.monotonic() - t0, 1)}
    say()
    say(table(stats))
    say()
    bad = [name for name, c in checks.items() if not c["ok"]]
    say(f"bit-exact against the numpy reference of the quantised model: "
        f"{'yes, every layer' if ok else 'NO: ' + ', '.join(bad)}")
    say(f"against the float model: max |logit error| {fr['max_logit_error']:.4f} (float logits "
        f"in [{fr['float_logit_min']:.3f}, {fr['float_logit_max']:.3f}]); ranking of the "
        f"{spec.batch} samples preserved: {'yes' if fr['ranking_preserved'] else 'no'} "
        f"({fr['swapped_pairs']} of {fr['pairs']} pairs swapped, Kendall tau "
        f"{fr['kendall_tau']:.3f})")
    say(f"total {total:,} cycles; {report['wall_seconds']:.0f} s wall")
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        say(f"wrote {out}")
    return report


def main(argv=None, *, prog="python -m sim.demo", devices=None):
    """The command line; returns the exit status (0 bit-exact, 1 mismatch or failed job)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default", help="Ember preset (default: default)")
    parser.add_argument("--model", default="demo", choices=sorted(D.SPECS),
                        help="model size: demo (default) or small (the reduced run of make test)")
    parser.add_argument("--driver", default="firmware", choices=("firmware", "host"),
                        help="who pushes the GEMM commands: the firmware on the control core "
                             "(default) or the host")
    parser.add_argument("--dram-latency", type=int, default=None, metavar="CYCLES",
                        help="run on the pipelined DRAM model with this latency")
    parser.add_argument("--seed", type=int, default=None, help="seed of weights and inputs")
    parser.add_argument("--batch", type=int, default=None, help="samples per batch")
    parser.add_argument("--out", default="build/demo.json", help="report (build/demo.json)")
    args = parser.parse_args(argv)
    spec = D.SPECS[args.model]
    try:
        from hw.config import get_preset
        get_preset(args.preset)
        if args.seed is not None:
            spec = dataclasses.replace(spec, seed=args.seed)
        if args.batch is not None:
            spec = dataclasses.replace(spec, batch=args.batch)
        if args.dram_latency is not None and not 0 <= args.dram_latency <= 10_000:
            raise ValueError(f"--dram-latency must be in [0, 10000], not {args.dram_latency!r}")
    except ValueError as e:
        parser.error(str(e))
    from sim.device import EmberHardwareError, EmberSimulationError, EmberTimeout
    try:
        report = run(spec, args.preset, driver=args.driver, dram_latency=args.dram_latency,
                     out=args.out, devices=devices)
    except (EmberHardwareError, EmberSimulationError, EmberTimeout) as e:
        print(f"error: the job failed on the accelerator: {e}", file=sys.stderr)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"ok": False, "preset": args.preset, "error": str(e)}) + "\n")
        return 1
    if not report["ok"]:
        bad = [s for s in report["layers"] if not s["bit_exact"]]
        first = bad[0]
        print(f"error: {len(bad)} layer(s) differ from the reference, first {first['name']} "
              f"({first['mismatches']} elements; {first.get('first_mismatch')})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
