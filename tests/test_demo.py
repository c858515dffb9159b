"""``make demo``: the DLRM-style model (``sim/dlrm.py``) and its runner (``sim/demo.py``).

The unit tests run the model's plumbing and the checker on a test double of the device that
computes with the golden models (no RTL), including deliberate corruptions that the checker must
catch. ``test_demo_small_tiny`` is the reduced demo on the Verilator model (``make test``);
``test_demo_default`` is ``make demo`` itself (``slow``).
"""

import json
import os

import numpy as np
import pytest

from sim import demo
from sim import dlrm as D
from sim.golden import ref_matmul
from sim.golden_embag import ref_tbe, requantise
from sim.golden_requant import ref_bias_add, ref_requant


class GoldenDevice:
    """A test double of :class:`sim.device.Device` that computes with the golden models.

    ``corrupt``: ``(call, index)``: flip the lowest bit of element ``index`` of the output of the
    ``call``-th job (0-based, GEMMs and embedding bags counted together, in the model's layer
    order)."""

    def __init__(self, corrupt=None):
        self.corrupt = corrupt
        self.calls = 0
        self.last_stats = None

    def _out(self, out):
        if self.corrupt is not None and self.corrupt[0] == self.calls:
            out = out.copy()
            out[self.corrupt[1]] ^= 1
        self.calls += 1
        return out

    def gemm(self, a, b, *, bias, multiplier=None, shift=None, zero_point=0, act_min=-128,
             act_max=127):
        acc = ref_matmul(a, b)
        if multiplier is None:
            out = ref_bias_add(acc, bias)
        else:
            out = ref_requant(acc, bias, multiplier, shift, zero_point, act_min, act_max)
        macs = a.shape[0] * a.shape[1] * b.shape[1]
        self.last_stats = {"cycles": 1000 + macs // 16, "macs": macs,
                           "utilization": macs / ((1000 + macs // 16) * 16)}
        return self._out(out)

    def embedding_bag(self, tables, indices, *, lengths, multiplier, shift):
        pooled = ref_tbe(tables, indices, lengths=lengths)
        cols = np.cumsum([0] + [t.shape[1] for t in tables])
        out = np.concatenate([requantise(pooled[:, cols[t]:cols[t + 1]], multiplier[t],
                                         shift[t]) for t in range(len(tables))], axis=1)
        gathered = sum(int(n.sum()) * t.shape[1] for n, t in zip(lengths, tables))
        self.last_stats = {"cycles": 500, "bytes_gathered": gathered,
                           "bandwidth_utilization": gathered / (500 * 8)}
        return self._out(out)


# -- the model --------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"batch": 0}, r"batch must be an integer of at least 1, not 0"),
    ({"bottom": (8,)}, r"bottom must be a tuple of at least 2 layer widths, not \(8,\)"),
    ({"top": ()}, r"top must be a tuple of at least 1 hidden layer width"),
    ({"tables": ((10, 4),) * 3}, r"tables must be a tuple of at least 4"),
    ({"tables": ((10, 4),) * 3 + ((10, 2000),)}, r"table dim must be at most 1024, not 2000"),
    ({"pooling": (3, 2)}, r"pooling must be \(min, max\) with 1 <= min <= max, not \(3, 2\)"),
    ({"seed": -1}, r"seed must be a non-negative integer, not -1"),
])
def test_spec_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        D.DLRMSpec(**kwargs)


@pytest.mark.parametrize("name", sorted(D.SPECS))
def test_spec_meets_the_issue(name):
    """At least 2 bottom and 2 top layers (hidden + logit), 4 tables of different rows and
    dims; the demo's batch is at least 16."""
    spec = D.SPECS[name]
    assert len(spec.bottom) >= 2 and len(spec.top) + 1 >= 2
    assert len(spec.tables) >= 4
    assert len({r for r, _ in spec.tables}) == len(spec.tables)
    assert len({d for _, d in spec.tables}) == len(spec.tables)
    if name == "demo":
        assert spec.batch >= 16


@pytest.mark.parametrize("name", sorted(D.SPECS))
def test_quantised_model(name):
    """TFLite's scheme: symmetric per-channel INT8 weights, INT32 biases, multipliers in
    [2^30, 2^31), fused ReLU as act_min = zero point, zero points 0 where tensors meet in the
    interaction; the last layer raw INT32."""
    spec = D.SPECS[name]
    qm = D.quantise(D.FloatModel.init(spec))
    gemms = qm.bottom + [qm.projection, qm.interaction] + qm.top
    for layer in gemms:
        if layer.weight is not None:
            assert layer.weight.dtype == np.int8 and layer.weight.min() >= -127
            # per channel: every column uses its full range
            assert (np.abs(layer.weight.astype(int)).max(axis=0) == 127).all(), layer.name
        assert layer.bias.dtype == np.int32
        if not layer.raw:
            assert ((layer.multiplier >= 2**30) & (layer.multiplier.astype(np.int64) < 2**31)).all()
            assert ((layer.shift >= -31) & (layer.shift <= 31)).all()
    for layer in qm.bottom[:-1] + qm.top[:-1]:
        assert (layer.zero_point, layer.act_min) == (-128, -128)
    assert (qm.bottom[-1].zero_point, qm.bottom[-1].act_min) == (0, 0)
    assert qm.projection.zero_point == 0 and qm.interaction.zero_point == 0
    assert qm.top[-1].raw and qm.top[-1].weight.shape[1] == 1
    # the projection is block diagonal: table t's rows feed only its d columns
    dims = [d for _, d in spec.tables]
    rows = np.cumsum([0] + dims)
    w = qm.projection.weight
    for t in range(len(dims)):
        mask = np.ones(w.shape[1], bool)
        mask[t * spec.d:(t + 1) * spec.d] = False
        assert not w[rows[t]:rows[t + 1]][:, mask].any()
    assert len(qm.embeddings.tables) == len(spec.tables)
    assert all(t.dtype == np.int8 for t in qm.embeddings.tables)


def test_interaction_layout(seed):
    """X·Xᵀ's diagonal blocks, selected by interaction_pairs, are each sample's pairwise dot
    products (computed here independently, in int64)."""
    rng = np.random.default_rng(seed)
    B, F, d = 5, 5, 7
    x = rng.integers(-128, 128, (B, d)).astype(np.int8)
    z = rng.integers(-128, 128, (B, (F - 1) * d)).astype(np.int8)
    X, Xt = D.interaction_operands(x, z, F)
    assert X.shape == (B * F, d) and Xt.shape == (d, B * F)
    pairs = D.interaction_pairs(X.astype(np.int64) @ Xt.astype(np.int64), B, F)
    for b in range(B):
        vecs = [x[b]] + [z[b, t * d:(t + 1) * d] for t in range(F - 1)]
        want = [int(np.dot(vecs[i].astype(np.int64), vecs[j])) for i in range(F)
                for j in range(i + 1, F)]
        assert pairs[b].tolist() == want


@pytest.mark.parametrize("name", sorted(D.SPECS))
def test_quantised_close_to_float(name):
    """The quantised reference tracks the float model: the logit error stays within 10% of the
    float logits' spread (a sanity bound on the quantisation, not a tuned figure)."""
    spec = D.SPECS[name]
    fm = D.FloatModel.init(spec)
    qm = D.quantise(fm)
    inputs = D.make_inputs(spec, spec.batch, stream=2)
    ref = D.reference(qm, inputs)
    last = qm.top[-1].name
    fl = fm.forward(inputs.dense_float, inputs.indices, inputs.lengths)[last]
    rep = demo.float_report(ref[last], qm.logit_scale, fl)
    spread = rep["float_logit_max"] - rep["float_logit_min"]
    assert spread > 0
    assert rep["max_logit_error"] < 0.1 * spread, rep


def test_float_report_ranking():
    f = np.array([0.1, 0.5, -0.2, 0.3])
    rep = demo.float_report(np.array([[10], [50], [-20], [30]], np.int32), 0.01, f)
    assert rep["ranking_preserved"] and rep["swapped_pairs"] == 0 and rep["kendall_tau"] == 1
    assert rep["max_logit_error"] == pytest.approx(0.0, abs=1e-12)
    rep = demo.float_report(np.array([10, 29, -20, 31], np.int32), 0.01, np.array(
        [0.1, 0.3, -0.2, 0.29]))
    assert not rep["ranking_preserved"] and rep["swapped_pairs"] == 1
    assert rep["max_logit_error"] == pytest.approx(0.02)
    rep = demo.float_report(np.array([10, 30, -20, 30], np.int32), 0.01, f)   # a tie
    assert not rep["ranking_preserved"] and rep["swapped_pairs"] == 1


# -- the runner and its checker, on the golden test double ---------------------------------------

def test_runner_on_golden_double(tmp_path):
    """With a device that computes exactly what the reference does, every layer matches and
    the exit status is 0; the report has the per-layer figures."""
    dev = GoldenDevice()
    out = tmp_path / "demo.json"
    assert demo.main(["--model", "small", "--out", str(out)], devices=(dev, dev)) == 0
    rep = json.loads(out.read_text())
    spec = D.SPECS["small"]
    assert rep["ok"] is True
    assert [s["name"] for s in rep["layers"]] == [n for n, _ in D.layer_names(spec)]
    assert rep["cycles"] == sum(s["cycles"] for s in rep["layers"])
    assert sum(s["share"] for s in rep["layers"]) == pytest.approx(1.0)
    assert all(s["bit_exact"] and s["mismatches"] == 0 for s in rep["layers"])
    assert len(rep["logits_int32"]) == spec.batch
    for key in ("max_logit_error", "ranking_preserved", "kendall_tau"):
        assert key in rep["float"]


@pytest.mark.parametrize("layer", ["logit", "bottom.0", "embeddings", "interaction"])
def test_checker_catches_a_corruption(tmp_path, capsys, layer):
    """One element off by one bit (one logit, or an early layer) makes the run fail: exit status
    1, ``ok`` false, and the first differing layer named."""
    spec = D.SPECS["small"]
    names = [n for n, _ in D.layer_names(spec)]
    call = len(names) - 1 if layer == "logit" else names.index(layer)
    dev = GoldenDevice(corrupt=(call, (1, 0)))
    out = tmp_path / "demo.json"
    assert demo.main(["--model", "small", "--out", str(out)], devices=(dev, dev)) == 1
    rep = json.loads(out.read_text())
    assert rep["ok"] is False
    bad = [s for s in rep["layers"] if not s["bit_exact"]]
    assert bad[0]["name"] == names[call]
    if layer == "logit":
        assert len(bad) == 1 and bad[0]["mismatches"] == 1
        assert bad[0]["first_mismatch"]["index"] == [1, 0]
    err = capsys.readouterr().err
    assert f"first {names[call]}" in err


def test_cli_errors(tmp_path):
    with pytest.raises(SystemExit) as e:
        demo.main(["--preset", "nonesuch", "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        demo.main(["--batch", "0", "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2


# -- on the Verilator model -----------------------------------------------------------------------

@pytest.mark.rtl
def test_demo_small_tiny(tmp_path):
    """The reduced demo on ``tiny``: every layer on the RTL (GEMMs by the firmware), bit-exact."""
    seed = int(os.environ.get("EMBER_SEED", D.SPECS["small"].seed))
    print(f"seed {seed} (replay with EMBER_SEED={seed})")
    out = tmp_path / "demo.json"
    assert demo.main(["--preset", "tiny", "--model", "small", "--seed", str(seed),
                      "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["ok"] is True and rep["driver"] == "firmware"
    assert all(s["bit_exact"] for s in rep["layers"])
    assert all(s["cycles"] > 0 for s in rep["layers"])
    assert rep["cycles"] == sum(s["cycles"] for s in rep["layers"])


@pytest.mark.rtl
@pytest.mark.slow
def test_demo_default(tmp_path):
    """``make demo``: the demo model on ``default``, bit-exact."""
    out = tmp_path / "demo.json"
    assert demo.main(["--preset", "default", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["ok"] is True and rep["model"]["batch"] >= 16
