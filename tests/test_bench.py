"""The benchmark harness (``sim/bench.py``) without simulation: the suite, the targets table and
the plots. ``make bench`` runs the suite itself."""

from sim import bench


def _rec(workload, lat, params, **metrics):
    return {"workload": workload, "preset": "default", "dram_latency": lat, "params": params,
            "cycles": 1000, "ok": True, "wall_seconds": 1.0, "sim_cycles_per_second": 1000,
            **metrics}


def test_suite_is_the_documented_one():
    runs = bench.suite()
    kinds = [r[0] for r in runs]
    assert kinds.count("gemm") == 4 * 2
    assert kinds.count("gemm_membound") == 2 * 2
    assert kinds.count("embedding_bag") == 4 * 3 * 2 * 2
    assert {r[2] for r in runs} == {0, 100}
    assert {r[1]["m"] for r in runs if r[0] == "gemm"} == {64, 128, 256, 512}
    assert len(bench.suite(quick=True)) < len(runs)
    # About 8K lookups per embedding-bag run, at most 1,024 bags.
    assert {(r[1]["pooling"], r[1]["bags"]) for r in runs if r[0] == "embedding_bag"} == \
        {(1, 1024), (20, 409), (128, 64)}


def test_targets_table_and_plots(tmp_path):
    records = [
        _rec("gemm", 100, {"m": 512, "k": 512, "n": 512}, utilization=0.96),
        _rec("gemm", 100, {"m": 128, "k": 128, "n": 128}, utilization=0.80),
        _rec("gemm", 0, {"m": 128, "k": 128, "n": 128}, utilization=0.99),
        _rec("embedding_bag", 100, {"dim": 64, "pooling": 20, "distribution": "uniform",
                                    "bags": 64, "rows": 10}, bandwidth_utilization=0.91),
    ]
    rows = {r[0]: r for r in bench.target_rows(records)}
    assert rows["GEMM 512³"][4:] == (0.96, True)
    assert rows["GEMM 128³"][4:] == (0.80, False)       # the latency-0 run does not count
    assert rows["weight-streaming GEMM M=1"][4:] == (None, False)
    assert rows["embedding bag dim 64, pooling 20, uniform"][5] is True
    md = bench.markdown(records)
    assert "| GEMM 128³ | utilization | ≥ 0.85 | 0.800 | no |" in md
    assert "not run" in md
    for path in bench.plots(records, tmp_path):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
