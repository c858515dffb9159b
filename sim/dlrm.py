"""A small DLRM-style recommendation model: the float model, its INT8 quantisation, and a numpy
reference of the quantised model (``make demo``, :mod:`sim.demo`).

Nothing here imports ``hw/``. The reference's arithmetic is the golden models':
:func:`sim.golden.ref_matmul`, :func:`sim.golden_requant.ref_requant` / ``ref_bias_add`` and
:func:`sim.golden_embag.ref_tbe`.

The model
---------
Per sample (``B`` samples in a batch):

1. **Bottom MLP.** ``dense`` INT8 features pass through ``len(bottom)`` fully connected layers
   with ReLU; the last has ``d = bottom[-1]`` outputs, the vector ``x``.
2. **Embeddings.** ``T`` tables of different rows and dims; each sample has one bag (1 to
   ``pooling`` indices, sum pooling) per table. All tables run as one table-batched (TBE) job;
   its output row is the concatenation of the ``T`` pooled vectors (``Σ dim`` bytes).
3. **Projection.** The tables have different dims, as in DLRM's mixed-dimension embeddings
   (``PrEmbeddingBag``: an embedding of its own dim, then a linear projection without bias to
   ``d``). The ``T`` projections are one GEMM with a block-diagonal weight
   ``[Σ dim, T·d]``; its output row is ``z_1 .. z_T``, each of ``d`` values.
4. **Interaction.** The ``F = T + 1`` vectors ``x, z_1, .., z_T`` of each sample are stacked into
   ``X`` (``B·F × d``) and one GEMM computes ``X·Xᵀ`` (``B·F × B·F``). Each sample's ``F × F``
   diagonal block holds its pairwise dot products; the ``F(F-1)/2`` entries above the diagonal
   are the interaction features (DLRM's ``dot`` interaction without self-interaction). The GEMM
   computes ``B`` times more dot products than needed (the off-diagonal blocks); it buys a
   single launch. Selecting the block entries is layout, done by the host.
5. **Top MLP.** ``[x, pairs]`` (``d + F(F-1)/2`` features) passes through ``len(top)`` layers
   with ReLU, then a last layer with one output: the logit.

Quantisation (TFLite's INT8 scheme, ``shared/reference/README.md``)
-----------------------------------------------------------------
- **Inputs** are given quantised: dense features are INT8 with scale ``DENSE_SCALE`` and zero
  point 0 (the float model sees ``DENSE_SCALE · q``), so the host never quantises anything.
- **Weights** are symmetric INT8 (zero point 0, range ``[-127, 127]``) with a scale per output
  channel. Where the inputs of a layer have different scales (the projection's inputs come from
  tables with different scales; the top MLP's input joins ``x`` and the interactions), the
  per-input scale is folded into the float weight before it is quantised:
  ``W_eff[k, c] = s_in[k] · W[k, c]``, ``s_w[c] = max_k |W_eff[k, c]| / 127``. With a uniform
  input scale this is TFLite's ``s_in · s_w``.
- **Biases** are INT32 with the accumulator's scale, ``round(b[c] / s_w[c])``. An input zero
  point ``zp`` is folded in as ``- zp · Σ_k Wq[k, c]`` (weight preparation, as TFLite does).
- **Requantisation** per output channel: ``(qm[c], shift[c]) = QuantizeMultiplier(s_w[c] /
  s_out)``, then the output stage's TFLite arithmetic.
- **Activations.** Hidden ReLU layers are asymmetric: zero point -128, ``act_min = -128`` (the
  fused ReLU), scale ``max / 255``. The tensors that meet in the interaction (``x`` and every
  ``z_t``) share one symmetric scale (zero point 0, ``x``'s ReLU is ``act_min = 0``), so one
  requantisation fits every column of ``X·Xᵀ``; the pooled vectors (one scale per table,
  requantised by the embedding engine's output stage) and the interactions are symmetric too.
- **Embedding tables** are symmetric INT8 with one scale per table (the engine requantises with
  one multiplier per table; FBGEMM's row-wise scales would need a dequantisation before
  pooling).
- **Logit.** The last layer writes the INT32 accumulator plus bias (the output stage's raw
  mode). Its real value is ``acc · s_w``: the host multiplies only to *report* the error
  against the float model; the ranking is read from the INT32 values directly.
- **Calibration.** Activation ranges come from the float model on a separate calibration batch
  of ``calib`` samples drawn from the same seed.
"""

from dataclasses import dataclass, field

import numpy as np

from sim.golden import ref_matmul
from sim.golden_embag import ref_tbe
from sim.golden_requant import quantize_multiplier, ref_bias_add, ref_requant

__all__ = [
    "DENSE_SCALE", "DLRMSpec", "SPECS", "FloatModel", "GemmLayer", "EmbeddingLayer",
    "QuantModel", "Inputs", "make_inputs", "quantise", "interaction_operands",
    "interaction_pairs", "top_input", "reference", "layer_names",
]

#: Scale of the INT8 dense features (zero point 0): the float model sees ``q / 32``.
DENSE_SCALE = 1.0 / 32


@dataclass(frozen=True)
class DLRMSpec:
    """The shape of the model and of its batch.

    Parameters
    ----------
    batch : int
        Samples per batch (``B``).
    dense : int
        Dense features per sample.
    bottom : tuple of int
        Output widths of the bottom MLP's layers (at least 2); the last is ``d``, the width of
        every vector that meets in the interaction.
    tables : tuple of (int, int)
        ``(rows, dim)`` of each embedding table (at least 4, ``dim`` in ``[1, 1024]``).
    pooling : (int, int)
        Smallest and largest bag length (indices per sample per table).
    top : tuple of int
        Output widths of the top MLP's hidden layers (at least 1); a last layer with one output
        (the logit) follows.
    seed : int
        Seed of the weights, the calibration batch and the inputs.
    calib : int
        Samples in the calibration batch.
    """

    batch: int = 16
    dense: int = 13
    bottom: tuple = (64, 32)
    tables: tuple = ((1000, 16), (500, 32), (200, 8), (100, 24))
    pooling: tuple = (1, 8)
    top: tuple = (64, 32)
    seed: int = 1
    calib: int = 512

    def __post_init__(self):
        def positive(name, v, lo=1):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{name} must be an integer of at least {lo}, not {v!r}")
        positive("batch", self.batch)
        positive("dense", self.dense)
        positive("calib", self.calib)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
                or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, not {self.seed!r}")
        if not isinstance(self.bottom, tuple) or len(self.bottom) < 2:
            raise ValueError(f"bottom must be a tuple of at least 2 layer widths, "
                             f"not {self.bottom!r}")
        for w in self.bottom:
            positive("bottom", w)
        if not isinstance(self.top, tuple) or len(self.top) < 1:
            raise ValueError(f"top must be a tuple of at least 1 hidden layer width, "
                             f"not {self.top!r}")
        for w in self.top:
            positive("top", w)
        if not isinstance(self.tables, tuple) or len(self.tables) < 4:
            raise ValueError(f"tables must be a tuple of at least 4 (rows, dim), "
                             f"not {self.tables!r}")
        for t in self.tables:
            if not (isinstance(t, tuple) and len(t) == 2):
                raise ValueError(f"tables must hold (rows, dim) pairs, not {t!r}")
            positive("table rows", t[0])
            positive("table dim", t[1])
            if t[1] > 1024:
                raise ValueError(f"table dim must be at most 1024, not {t[1]!r}")
        if not (isinstance(self.pooling, tuple) and len(self.pooling) == 2
                and 1 <= self.pooling[0] <= self.pooling[1]):
            raise ValueError(f"pooling must be (min, max) with 1 <= min <= max, "
                             f"not {self.pooling!r}")

    @property
    def d(self):
        """Width of ``x`` and of each projected embedding."""
        return self.bottom[-1]

    @property
    def features(self):
        """``F``: vectors per sample in the interaction (``x`` and one per table)."""
        return len(self.tables) + 1

    @property
    def pairs(self):
        """Interaction features per sample, ``F(F-1)/2``."""
        return self.features * (self.features - 1) // 2


#: ``demo``: ``make demo`` on the ``default`` preset. ``small``: the reduced run of ``make test``
#: on ``tiny``.
SPECS = {
    "demo": DLRMSpec(),
    "small": DLRMSpec(batch=4, dense=5, bottom=(8, 8), tables=((40, 4), (30, 8), (20, 3),
                                                              (10, 6)),
                      pooling=(1, 3), top=(8,), calib=128),
}

def layer_names(spec):
    """``[(name, kind)]`` of the model's layers in execution order (``kind`` ``"gemm"`` or
    ``"embedding_bag"``)."""
    names = [(f"bottom.{i}", "gemm") for i in range(len(spec.bottom))]
    names += [("embeddings", "embedding_bag"), ("projection", "gemm"), ("interaction", "gemm")]
    names += [(f"top.{i}", "gemm") for i in range(len(spec.top) + 1)]
    return names


# -- the float model ------------------------------------------------------------------------------

@dataclass
class FloatModel:
    """The float64 model: ``bottom``/``top`` lists of ``(W [in, out], b [out])``, ``tables``
    (float ``[rows, dim]``), ``proj`` (float ``[dim_t, d]`` per table)."""

    spec: DLRMSpec
    bottom: list
    tables: list
    proj: list
    top: list

    @classmethod
    def init(cls, spec):
        """Weights from ``spec.seed`` (He-initialised layers, small biases)."""
        rng = np.random.default_rng([spec.seed, 0])

        def linear(n_in, n_out):
            return (rng.normal(0, np.sqrt(2.0 / n_in), (n_in, n_out)),
                    rng.normal(0, 0.05, n_out))
        widths = (spec.dense,) + spec.bottom
        bottom = [linear(widths[i], widths[i + 1]) for i in range(len(spec.bottom))]
        tables = [rng.uniform(-0.5, 0.5, (rows, dim)) for rows, dim in spec.tables]
        proj = [rng.normal(0, np.sqrt(1.0 / dim), (dim, spec.d)) for _, dim in spec.tables]
        widths = (spec.d + spec.pairs,) + spec.top + (1,)
        top = [linear(widths[i], widths[i + 1]) for i in range(len(widths) - 1)]
        return cls(spec, bottom, tables, proj, top)

    def forward(self, dense, indices, lengths):
        """Every activation of the float model, by name (see :func:`layer_names`): ``bottom.i``,
        ``embeddings`` (``[B, Σ dim]``), ``projection`` (``[B, T·d]``), ``interaction``
        (``[B, pairs]``, the selected dot products), ``top.i`` (the last: logits ``[B, 1]``).

        ``dense`` is float ``[B, dense]``; ``indices``/``lengths`` one array per table."""
        spec, act = self.spec, {}
        h = dense
        for i, (w, b) in enumerate(self.bottom):
            h = np.maximum(h @ w + b, 0.0)
            act[f"bottom.{i}"] = h
        x = h
        pooled = []
        for t, table in enumerate(self.tables):
            starts = np.concatenate([[0], np.cumsum(lengths[t])[:-1]]).astype(np.int64)
            pooled.append(np.stack([table[indices[t][s:s + n]].sum(axis=0)
                                    for s, n in zip(starts, lengths[t])]))
        act["embeddings"] = np.concatenate(pooled, axis=1)
        z = np.concatenate([p @ w for p, w in zip(pooled, self.proj)], axis=1)
        act["projection"] = z
        B, F, d = x.shape[0], spec.features, spec.d
        feats = np.concatenate([x[:, None, :], z.reshape(B, F - 1, d)], axis=1)   # [B, F, d]
        dots = np.einsum("bid,bjd->bij", feats, feats)
        iu = np.triu_indices(F, 1)
        act["interaction"] = dots[:, iu[0], iu[1]]
        h = np.concatenate([x, act["interaction"]], axis=1)
        for i, (w, b) in enumerate(self.top):
            h = h @ w + b
            if i < len(self.top) - 1:
                h = np.maximum(h, 0.0)
            act[f"top.{i}"] = h
        return act


# -- inputs ---------------------------------------------------------------------------------------

@dataclass
class Inputs:
    """A batch: INT8 dense features (scale :data:`DENSE_SCALE`, zero point 0), and per table the
    int32 indices and bag lengths."""

    dense: np.ndarray
    indices: list
    lengths: list

    @property
    def dense_float(self):
        """What the float model sees: ``DENSE_SCALE · dense`` (exact)."""
        return self.dense.astype(np.float64) * DENSE_SCALE


def make_inputs(spec, batch, stream):
    """A random batch of ``batch`` samples from ``(spec.seed, stream)``: dense ``N(0, 1)``
    quantised to INT8, bag lengths uniform in ``spec.pooling``, indices uniform."""
    rng = np.random.default_rng([spec.seed, stream])
    dense = np.clip(np.rint(rng.normal(0, 1, (batch, spec.dense)) / DENSE_SCALE), -128, 127)
    lo, hi = spec.pooling
    lengths, indices = [], []
    for rows, _ in spec.tables:
        n = rng.integers(lo, hi + 1, batch).astype(np.int32)
        lengths.append(n)
        indices.append(rng.integers(0, rows, int(n.sum())).astype(np.int32))
    return Inputs(dense.astype(np.int8), indices, lengths)


# -- the quantised model --------------------------------------------------------------------------

@dataclass
class GemmLayer:
    """One INT8 GEMM layer of the quantised model, as the runtime takes it: ``out = requant(a ·
    weight + bias)`` (or ``a · weight + bias`` in INT32 when ``raw``). ``out_scale`` is the real
    value of one output step: a scalar (INT8 output) or per column (raw: ``s_w``)."""

    name: str
    weight: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray = None
    shift: np.ndarray = None
    zero_point: int = 0
    act_min: int = -128
    act_max: int = 127
    out_scale: object = None

    @property
    def raw(self):
        return self.multiplier is None

    def kwargs(self):
        """Keyword arguments of :meth:`sim.device.Device.gemm` (apart from ``a`` and ``b``)."""
        if self.raw:
            return {"bias": self.bias}
        return {"bias": self.bias, "multiplier": self.multiplier, "shift": self.shift,
                "zero_point": self.zero_point, "act_min": self.act_min,
                "act_max": self.act_max}


@dataclass
class EmbeddingLayer:
    """The table-batched embedding job: INT8 tables and the per-table output requantisation
    (``multiplier``, ``shift`` lists; zero point 0, full clamp)."""

    tables: list
    multiplier: list
    shift: list
    out_scale: list = field(default_factory=list)

    def kwargs(self):
        """Keyword arguments of :meth:`sim.device.Device.embedding_bag` (requantisation)."""
        return {"multiplier": list(self.multiplier), "shift": list(self.shift)}


@dataclass
class QuantModel:
    """The INT8 model: ``bottom`` and ``top`` lists of :class:`GemmLayer`, ``embeddings``
    (:class:`EmbeddingLayer`), ``projection`` and ``interaction`` (:class:`GemmLayer`; the
    interaction's weight is ``None``: its B operand is ``Xᵀ`` of the batch)."""

    spec: DLRMSpec
    bottom: list
    embeddings: EmbeddingLayer
    projection: GemmLayer
    interaction: GemmLayer
    top: list

    @property
    def logit_scale(self):
        """Real value of one step of the INT32 logit."""
        return float(self.top[-1].out_scale[0])


def _qm(scale, what):
    """``(qm, shift)`` of a positive real scale, as int32 arrays when ``scale`` is an array."""
    arr = np.atleast_1d(np.asarray(scale, np.float64))
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{what}: requantisation scale must be positive and finite")
    pairs = [quantize_multiplier(float(s)) for s in arr]
    return (np.array([p[0] for p in pairs], np.int64).astype(np.int32),
            np.array([p[1] for p in pairs], np.int32))


def _quantise_linear(name, w, b, in_scale, in_zp, out_scale=None, out_zp=0, relu=False):
    """A float layer ``y = x·w + b`` whose input is ``in_scale[k] · (q[k] - in_zp)`` (a scalar or
    per-row scale) → :class:`GemmLayer`. ``out_scale`` None: raw INT32 output."""
    in_scale = np.broadcast_to(np.asarray(in_scale, np.float64), (w.shape[0],))
    w_eff = w * in_scale[:, None]
    s_w = np.abs(w_eff).max(axis=0) / 127.0
    s_w = np.where(s_w > 0, s_w, 1.0)
    wq = np.clip(np.rint(w_eff / s_w), -127, 127).astype(np.int8)
    bias = np.rint(b / s_w) - in_zp * wq.astype(np.int64).sum(axis=0)
    if np.abs(bias).max() >= 2**31:
        raise ValueError(f"{name}: bias does not fit int32")
    bias = bias.astype(np.int64).astype(np.int32)
    if out_scale is None:
        return GemmLayer(name, wq, bias, out_scale=s_w)
    qm, shift = _qm(s_w / out_scale, name)
    return GemmLayer(name, wq, bias, qm, shift, zero_point=out_zp,
                     act_min=out_zp if relu else -128, act_max=127, out_scale=float(out_scale))


def quantise(fm):
    """Quantise the float model :class:`FloatModel` (calibrated on ``spec.calib`` samples of
    stream 1) → :class:`QuantModel`."""
    spec = fm.spec
    cal = make_inputs(spec, spec.calib, stream=1)
    act = fm.forward(cal.dense_float, cal.indices, cal.lengths)
    eps = 1e-12
    # x and every z_t share one symmetric scale: one requantisation for all of X·Xᵀ.
    d = spec.d
    s_z = max(np.abs(act[f"bottom.{len(spec.bottom) - 1}"]).max(),
              np.abs(act["projection"]).max(), eps) / 127.0

    bottom, in_scale, in_zp = [], DENSE_SCALE, 0
    for i, (w, b) in enumerate(fm.bottom):
        last = i == len(fm.bottom) - 1
        if last:
            out_scale, out_zp = s_z, 0
        else:
            out_scale, out_zp = max(act[f"bottom.{i}"].max(), eps) / 255.0, -128
        bottom.append(_quantise_linear(f"bottom.{i}", w, b, in_scale, in_zp, out_scale,
                                       out_zp, relu=True))
        in_scale, in_zp = out_scale, out_zp

    # Embedding tables: one symmetric scale per table; pooled vectors requantised per table.
    tables, mult, shift, s_pool, col = [], [], [], [], 0
    for t, table in enumerate(fm.tables):
        s_e = max(np.abs(table).max(), eps) / 127.0
        tables.append(np.clip(np.rint(table / s_e), -127, 127).astype(np.int8))
        dim = table.shape[1]
        s_p = max(np.abs(act["embeddings"][:, col:col + dim]).max(), eps) / 127.0
        col += dim
        qm, sh = _qm(s_e / s_p, f"embeddings table {t}")
        mult.append(int(qm[0]))
        shift.append(int(sh[0]))
        s_pool.append(s_p)
    embeddings = EmbeddingLayer(tables, mult, shift, s_pool)

    # Projection: block-diagonal [Σ dim, T·d], per-row input scale of its table.
    dims = [dim for _, dim in spec.tables]
    w = np.zeros((sum(dims), len(dims) * d))
    rows = np.concatenate([[0], np.cumsum(dims)])
    for t, p in enumerate(fm.proj):
        w[rows[t]:rows[t + 1], t * d:(t + 1) * d] = p
    row_scale = np.concatenate([np.full(dim, s) for dim, s in zip(dims, s_pool)])
    projection = _quantise_linear("projection", w, np.zeros(w.shape[1]), row_scale, 0, s_z, 0)

    # Interaction: X·Xᵀ, accumulator scale s_z², output symmetric.
    s_i = max(np.abs(act["interaction"]).max(), eps) / 127.0
    n = spec.batch * spec.features
    qm, sh = _qm(np.full(n, s_z * s_z / s_i), "interaction")
    interaction = GemmLayer("interaction", None, np.zeros(n, np.int32), qm, sh, 0, -128, 127,
                            out_scale=s_i)

    # Top MLP: input [x (s_z), pairs (s_i)], zero point 0.
    top, in_zp = [], 0
    in_scale = np.concatenate([np.full(d, s_z), np.full(spec.pairs, s_i)])
    for i, (w, b) in enumerate(fm.top):
        if i == len(fm.top) - 1:
            top.append(_quantise_linear(f"top.{i}", w, b, in_scale, in_zp))
        else:
            out_scale = max(act[f"top.{i}"].max(), eps) / 255.0
            top.append(_quantise_linear(f"top.{i}", w, b, in_scale, in_zp, out_scale, -128,
                                        relu=True))
            in_scale, in_zp = out_scale, -128
    return QuantModel(spec, bottom, embeddings, projection, interaction, top)


# -- layout (no arithmetic): what the host does between layers ------------------------------------

def interaction_operands(x, z, features):
    """Stack each sample's ``x`` and its ``T`` projected vectors: ``X`` (``B·F × d``, row
    ``b·F + f``) and ``Xᵀ`` (``d × B·F``), both INT8. Pure layout."""
    B, d = x.shape
    X = np.concatenate([x[:, None, :], z.reshape(B, features - 1, d)], axis=1)
    X = np.ascontiguousarray(X.reshape(B * features, d))
    return X, np.ascontiguousarray(X.T)


def interaction_pairs(xx, batch, features):
    """The entries above the diagonal of each sample's ``F × F`` diagonal block of ``X·Xᵀ``:
    ``[B, F(F-1)/2]``, in ``numpy.triu_indices(F, 1)`` order. Pure selection."""
    iu = np.triu_indices(features, 1)
    blocks = np.stack([xx[b * features:(b + 1) * features, b * features:(b + 1) * features]
                       for b in range(batch)])
    return np.ascontiguousarray(blocks[:, iu[0], iu[1]])


def top_input(x, pairs):
    """``[x, pairs]`` per sample (concatenation)."""
    return np.ascontiguousarray(np.concatenate([x, pairs], axis=1))


# -- the numpy reference of the quantised model ---------------------------------------------------

def _ref_gemm(layer, a, b=None):
    acc = ref_matmul(a, layer.weight if b is None else b)
    if layer.raw:
        return ref_bias_add(acc, layer.bias)
    return ref_requant(acc, layer.bias, layer.multiplier, layer.shift, layer.zero_point,
                       layer.act_min, layer.act_max)


def reference(qm, inputs):
    """The quantised model in numpy (golden models only). Returns every layer's output by name
    (:func:`layer_names`), as the accelerator produces it: ``interaction`` is the whole ``X·Xᵀ``
    (``B·F × B·F``); ``top.<last>`` the INT32 logits ``[B, 1]``."""
    spec, out = qm.spec, {}
    h = inputs.dense
    for layer in qm.bottom:
        h = out[layer.name] = _ref_gemm(layer, h)
    x = h
    emb = qm.embeddings
    pooled = ref_tbe(emb.tables, inputs.indices, lengths=inputs.lengths)
    pooled = np.concatenate(
        [ref_requant(pooled[:, c0:c0 + t.shape[1]], np.zeros(t.shape[1], np.int64),
                     np.full(t.shape[1], m), np.full(t.shape[1], s))
         for t, m, s, c0 in zip(emb.tables, emb.multiplier, emb.shift,
                                np.cumsum([0] + [t.shape[1] for t in emb.tables]))], axis=1)
    out["embeddings"] = pooled
    z = out["projection"] = _ref_gemm(qm.projection, pooled)
    X, Xt = interaction_operands(x, z, spec.features)
    xx = out["interaction"] = _ref_gemm(qm.interaction, X, Xt)
    h = top_input(x, interaction_pairs(xx, spec.batch, spec.features))
    for layer in qm.top:
        h = out[layer.name] = _ref_gemm(layer, h)
    return out
