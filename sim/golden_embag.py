"""Golden model of embedding bags (PyTorch ``nn.EmbeddingBag``, Caffe2 SparseLengthsSum, FBGEMM
TBE) and the host's view of Ember's embedding-bag engine (``hw/embag.py``).

Plain Python and numpy; nothing here imports ``hw/``.

Arithmetic
----------
- The table is INT8 ``[rows, dim]``; indices are int32 (any integer dtype is accepted if every
  value fits int32).
- ``sum``: ``Y[b] = Σ W[i]`` over the bag, accumulated exactly and wrapped to int32 (two's
  complement), as the engine's INT32 accumulators do. With INT8 rows a bag needs more than 2^24
  rows before the wrap can matter.
- weighted sum (``mode="sum"`` with ``per_sample_weights``, as in PyTorch): the weights are
  **int8**, one per index; each product ``w_j · W[i_j, d]`` is an exact int8 × int8 product
  (at most 2^14 in magnitude) and the products accumulate exactly in int32 (wrapping beyond it:
  more than 2^17 rows of ``-128·-128``).
- ``mean``: the wrapped int32 sum ``s`` divided by the bag's length ``n``, **rounded half away
  from zero**, in integer arithmetic::

      mean(s, n) = sign(s) · floor((|s| + floor(n / 2)) / n)

  (``floor((|s| + floor(n/2)) / n)`` equals ``floor(|s|/n + 1/2)`` for every ``n >= 1``: for even
  ``n`` exactly, for odd ``n`` because ``|s|/n`` is never a half-integer.) ``|s|`` is at most
  2^31, so the result always fits int32. This is what the hardware's divider computes bit for bit.
- An empty bag gives zeros in every mode.
- An index outside ``[0, rows)`` raises :class:`IndexRangeError` (a ``ValueError``) naming the bag
  and the position within the bag; nothing is silently read.

Bags are given either by ``offsets`` (PyTorch: ``B`` start positions, or ``B + 1`` with
``include_last_offset``, CSR style) or by ``lengths`` (Caffe2). :func:`lengths_from_offsets`
converts; the engine itself takes lengths.

Engine view
-----------
:func:`cmd_fields` / :func:`encode_cmd` / :func:`decode_done` give the command and completion
formats of ``EmbeddingBagEngine`` (``tests/test_embag.py`` checks them against the hardware
layouts), :data:`ERR_*` its error codes, and :func:`slot_word` the scratchpad word where the
engine lands the n-th gathered row of a job in its staging ring.
"""

from dataclasses import dataclass

import numpy as np

__all__ = [
    "IndexRangeError", "ref_embedding_bag", "ref_tbe", "requantise", "mean_round", "lengths_from_offsets",
    "find_index_error", "MODE_SUM", "MODE_MEAN", "MODE_WEIGHTED", "MODES", "ERR_OK",
    "ERR_INDEX", "ERR_LENGTH", "ERR_MALFORMED", "ERR_RANGE", "ERR_CANCELLED", "ERR_GATHER",
    "ERR_WIDTH",
    "Job", "JobOutcome", "ref_job", "cmd_fields", "done_fields", "encode_cmd", "decode_done",
    "slot_word", "ring_slots",
]

# Engine modes (``Job.mode``) and error codes; they mirror ``hw/embag.py``.
MODE_SUM, MODE_MEAN, MODE_WEIGHTED = 0, 1, 2
MODES = {"sum": MODE_SUM, "mean": MODE_MEAN, "weighted": MODE_WEIGHTED}
ERR_OK, ERR_INDEX, ERR_LENGTH, ERR_MALFORMED, ERR_RANGE, ERR_CANCELLED, ERR_GATHER = \
    0, 1, 2, 3, 4, 5, 8
ERR_WIDTH = 4

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


class IndexRangeError(ValueError):
    """An index outside ``[0, rows)``: ``bag`` and ``pos`` (position within the bag) name it."""

    def __init__(self, message, *, bag, pos, table=None):
        super().__init__(message)
        self.bag, self.pos, self.table = bag, pos, table


# ---------------------------------------------------------------------------------------------
# Validation

def _int_array(name, x, *, ndim=1):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, not {type(x).__name__}")
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, not {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, not of shape {x.shape!r}")
    if x.size and (int(x.min()) < _INT32_MIN or int(x.max()) > _INT32_MAX):
        raise ValueError(f"{name} must hold int32 values")
    return x.astype(np.int64)


def _check_table(name, table):
    if not isinstance(table, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, not {type(table).__name__}")
    if table.dtype != np.int8:
        raise TypeError(f"{name} must have dtype int8, not {table.dtype}")
    if table.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, dim], not of shape {table.shape!r}")
    if table.shape[1] < 1:
        raise ValueError(f"{name} must have dim >= 1, not {table.shape[1]}")


def _check_mode(mode, weighted):
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, not {type(mode).__name__}")
    if mode not in ("sum", "mean"):
        raise ValueError(f"mode must be 'sum' or 'mean', not {mode!r}")
    if weighted and mode != "sum":
        raise ValueError(f"per_sample_weights needs mode 'sum', not {mode!r}")


def lengths_from_offsets(offsets, n_indices, *, include_last_offset=False):
    """PyTorch ``offsets`` → Caffe2 ``lengths`` (int64), with PyTorch's rules checked:
    ``offsets[0] == 0``, non-decreasing, at most ``n_indices``; with ``include_last_offset`` the
    last entry must equal ``n_indices``."""
    if not isinstance(include_last_offset, bool):
        raise TypeError(f"include_last_offset must be a bool, not {include_last_offset!r}")
    off = _int_array("offsets", offsets)
    if include_last_offset:
        if off.size < 1:
            raise ValueError("offsets must have at least one entry with include_last_offset")
        if off[-1] != n_indices:
            raise ValueError(f"offsets[-1] must equal len(indices) = {n_indices} with "
                             f"include_last_offset, not {int(off[-1])}")
        bounds = off
    else:
        bounds = np.concatenate([off, [n_indices]])
    if off.size and off[0] != 0:
        raise ValueError(f"offsets[0] must be 0, not {int(off[0])}")
    if np.any(np.diff(bounds) < 0):
        bad = int(np.flatnonzero(np.diff(bounds) < 0)[0])
        raise ValueError(f"offsets must be non-decreasing and at most len(indices) = "
                         f"{n_indices} (offsets[{bad}] = {int(bounds[bad])} > next bound "
                         f"{int(bounds[bad + 1])})")
    return np.diff(bounds)


def _bag_lengths(indices, offsets, lengths, include_last_offset):
    if (offsets is None) == (lengths is None):
        raise ValueError("give exactly one of offsets and lengths")
    if offsets is not None:
        return lengths_from_offsets(offsets, len(indices), include_last_offset=include_last_offset)
    if include_last_offset:
        raise ValueError("include_last_offset applies to offsets, not to lengths")
    lens = _int_array("lengths", lengths)
    if np.any(lens < 0):
        bad = int(np.flatnonzero(lens < 0)[0])
        raise ValueError(f"lengths must be non-negative (lengths[{bad}] = {int(lens[bad])})")
    if int(lens.sum()) != len(indices):
        raise ValueError(f"lengths must sum to len(indices) = {len(indices)}, "
                         f"not {int(lens.sum())}")
    return lens


def find_index_error(indices, lengths, rows):
    """The first ``(bag, pos)`` whose index is outside ``[0, rows)``, or ``None``."""
    idx = np.asarray(indices, dtype=np.int64)
    bad = np.flatnonzero((idx < 0) | (idx >= rows))
    if not bad.size:
        return None
    k = int(bad[0])
    starts = np.concatenate([[0], np.cumsum(lengths)])
    # The last bag starting at or before k holds it (empty bags at the same start come first).
    bag = int(np.searchsorted(starts, k, side="right") - 1)
    return bag, k - int(starts[bag])


# ---------------------------------------------------------------------------------------------
# Reference models

def mean_round(sums, lengths):
    """``sign(s)·floor((|s| + floor(n/2)) / n)`` elementwise (int64 in and out); ``n >= 1``."""
    s = np.asarray(sums, dtype=np.int64)
    n = np.asarray(lengths, dtype=np.int64)
    if np.any(n < 1):
        raise ValueError("mean_round needs lengths >= 1")
    q = (np.abs(s) + n // 2) // n
    return np.where(s < 0, -q, q)


def _wrap32(x):
    return ((np.asarray(x, dtype=np.int64) + (1 << 31)) % (1 << 32) - (1 << 31))


def ref_embedding_bag(table, indices, offsets=None, lengths=None, per_sample_weights=None,
                      mode="sum", include_last_offset=False):
    """INT8 embedding bags → int32 ``[B, dim]`` (see the module documentation for the
    arithmetic, the ``mean`` rounding and the weight type).

    Parameters
    ----------
    table : ndarray of int8, ``[rows, dim]``
    indices : 1-D integer ndarray (int32 values)
    offsets : 1-D integer ndarray, optional
        Bag starts (``B`` entries, or ``B + 1`` with ``include_last_offset``).
    lengths : 1-D integer ndarray, optional
        Bag lengths (``B`` entries); exactly one of ``offsets`` and ``lengths`` is given.
    per_sample_weights : 1-D int8 ndarray, optional
        One weight per index (weighted sum; needs ``mode="sum"``).
    mode : ``"sum"`` or ``"mean"``
    include_last_offset : bool

    Raises
    ------
    TypeError, ValueError
        Malformed arguments (the message names the argument).
    IndexRangeError
        An index outside ``[0, rows)``; the message names the bag and the position in it.
    """
    _check_table("table", table)
    idx = _int_array("indices", indices)
    weighted = per_sample_weights is not None
    _check_mode(mode, weighted)
    lens = _bag_lengths(idx, offsets, lengths, include_last_offset)
    if weighted:
        if not isinstance(per_sample_weights, np.ndarray):
            raise TypeError(f"per_sample_weights must be a numpy array, "
                            f"not {type(per_sample_weights).__name__}")
        if per_sample_weights.dtype != np.int8:
            raise TypeError(f"per_sample_weights must have dtype int8, "
                            f"not {per_sample_weights.dtype}")
        if per_sample_weights.shape != idx.shape:
            raise ValueError(f"per_sample_weights must have the shape of indices {idx.shape!r}, "
                             f"not {per_sample_weights.shape!r}")
    rows, dim = table.shape
    err = find_index_error(idx, lens, rows)
    if err is not None:
        bag, pos = err
        k = int(np.concatenate([[0], np.cumsum(lens)])[bag]) + pos
        raise IndexRangeError(f"index {int(idx[k])} at position {pos} of bag {bag} "
                              f"(indices[{k}]) is outside [0, {rows})", bag=bag, pos=pos)
    B = len(lens)
    gathered = table[idx].astype(np.int64)                         # [N, dim]
    if weighted:
        gathered *= per_sample_weights.astype(np.int64)[:, None]
    bag_of = np.repeat(np.arange(B), lens)
    sums = np.zeros((B, dim), np.int64)
    np.add.at(sums, bag_of, gathered)
    sums = _wrap32(sums)
    if mode == "mean":
        out = np.zeros((B, dim), np.int64)
        nz = lens > 0
        out[nz] = mean_round(sums[nz], lens[nz][:, None])
        sums = out
    return sums.astype(np.int32)


def _per_table(name, value, n):
    if value is None:
        return [None] * n
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list with one entry per table, "
                        f"not {type(value).__name__}")
    if len(value) != n:
        raise ValueError(f"{name} must have one entry per table ({n}), not {len(value)}")
    return list(value)


def requantise(pooled, multiplier, shift, zero_point=0, act_min=-128, act_max=127):
    """INT32 pooled vectors → INT8 through the output stage with one scalar ``multiplier``,
    ``shift``, ``zero_point`` and clamp for the whole table and no bias: TFLite's requantisation,
    bit-exact (``sim.golden_requant.ref_requant`` with the scalars broadcast to every column)."""
    from sim.golden_requant import ref_requant
    pooled = np.asarray(pooled, dtype=np.int32)
    n = pooled.shape[1]
    return ref_requant(pooled, np.zeros(n, np.int64), np.full(n, multiplier, np.int64),
                       np.full(n, shift, np.int64), zero_point, act_min, act_max)


def ref_tbe(tables, indices, offsets=None, lengths=None, per_sample_weights=None, mode="sum",
            include_last_offset=False):
    """Table-batched embedding bags (FBGEMM TBE): one bag batch per table, the same number of
    bags ``B`` in each; output ``[B, Σ dim]``, table t's pooled vectors in its own columns.

    ``tables`` is a list of int8 tables (each its own rows and dim); ``indices``, ``offsets`` or
    ``lengths`` and ``per_sample_weights`` are lists with one entry per table (weights may be
    ``None`` or a list holding ``None`` for unweighted tables). ``mode`` applies to every table.
    An out-of-range index raises :class:`IndexRangeError` with ``table`` set.
    """
    if not isinstance(tables, (list, tuple)):
        raise TypeError(f"tables must be a list of tables, not {type(tables).__name__}")
    if not tables:
        raise ValueError("tables must hold at least one table")
    n = len(tables)
    idx_l = _per_table("indices", indices, n)
    off_l = _per_table("offsets", offsets, n)
    len_l = _per_table("lengths", lengths, n)
    w_l = _per_table("per_sample_weights", per_sample_weights, n)
    outs = []
    for t in range(n):
        try:
            out = ref_embedding_bag(tables[t], idx_l[t], off_l[t], len_l[t], w_l[t], mode,
                                    include_last_offset)
        except IndexRangeError as e:
            raise IndexRangeError(f"table {t}: {e}", bag=e.bag, pos=e.pos, table=t) from None
        except (TypeError, ValueError) as e:
            raise type(e)(f"table {t}: {e}") from None
        if outs and out.shape[0] != outs[0].shape[0]:
            raise ValueError(f"table {t} has {out.shape[0]} bags, table 0 has "
                             f"{outs[0].shape[0]}: every table needs the same number of bags")
        outs.append(out)
    return np.concatenate(outs, axis=1)


# ---------------------------------------------------------------------------------------------
# The engine's view of a job

@dataclass
class JobOutcome:
    """What one engine command must do.

    ``code`` is the completion's error code (``ERR_OK``, ``ERR_INDEX`` or ``ERR_LENGTH``) with
    ``bag``/``pos`` naming the failing index (``pos`` 0 for a length error). ``out`` holds the
    bags that are written (all of them, or those before the failing bag). ``gathered`` lists,
    in issue order, the positions in ``indices`` whose rows the engine reads from DRAM: every
    row before the failing one, and no other.
    """
    code: int
    bag: int
    pos: int
    out: np.ndarray
    gathered: np.ndarray


def ref_job(table, indices, lengths, weights=None, mode="sum"):
    """The engine's behaviour on one job: bags walked in order, stopping at the first negative
    length or out-of-range index (bags before it are written, nothing after it is read).

    ``mode`` is ``"sum"``, ``"mean"`` or ``"weighted"`` (the engine's modes; ``"weighted"``
    needs ``weights``). Indices past ``sum(lengths)`` are never looked at.
    """
    _check_table("table", table)
    idx = _int_array("indices", indices)
    lens = _int_array("lengths", lengths)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)!r}, not {mode!r}")
    if (mode == "weighted") != (weights is not None):
        raise ValueError("weights are given exactly in mode 'weighted'")
    rows = table.shape[0]
    k = 0
    code, bag, pos = ERR_OK, 0, 0
    for b, n in enumerate(lens):
        n = int(n)
        if n < 0:
            code, bag, pos = ERR_LENGTH, b, 0
            break
        if k + n > len(idx):
            raise ValueError(f"lengths run past the end of indices at bag {b}")
        chunk = idx[k:k + n]
        bad = np.flatnonzero((chunk < 0) | (chunk >= rows))
        if bad.size:
            code, bag, pos = ERR_INDEX, b, int(bad[0])
            break
        k += n
    else:
        bag = len(lens)
    written = bag
    n_ok = int(lens[:written].sum())
    if written:
        w = weights[:n_ok] if weights is not None else None
        out = ref_embedding_bag(table, idx[:n_ok], lengths=lens[:written], per_sample_weights=w,
                                mode="mean" if mode == "mean" else "sum")
    else:
        out = np.zeros((0, table.shape[1]), np.int32)
    gathered = np.arange(k + (pos if code == ERR_INDEX else 0))
    if code == ERR_OK:
        bag = 0
    return JobOutcome(code, bag, pos, out, gathered)


# ---------------------------------------------------------------------------------------------
# The engine's command and completion formats

@dataclass(frozen=True)
class Job:
    """One engine command. Scratchpad list addresses are word addresses; ``out_addr`` and
    ``out_stride`` are scratchpad byte addresses (multiples of 4); DRAM addresses are bytes."""
    idx_addr: int
    len_addr: int
    wgt_addr: int
    out_addr: int
    out_stride: int
    table_addr: int
    rows: int
    row_stride: int
    dim: int
    bags: int
    mode: int
    tag: int = 0
    requant: int = 0          # 1: INT8 output through the output stage (fields below)
    multiplier: int = 0       # INT32, as an unsigned 32-bit field
    shift: int = 0            # 6-bit two's complement
    zero_point: int = 0       # INT8 fields, as unsigned 8-bit values
    act_min: int = 0
    act_max: int = 0
    cont_in: int = 0          # bag 0 continues the bag the previous command left open
    cont_out: int = 0         # the last bag is left open for the next command


def cmd_fields(*, addr_width, sram_addr_width, data_bytes, tag_width=16):
    """``[(name, width), ...]`` of the engine command, least significant field first."""
    sb = sram_addr_width + data_bytes.bit_length() - 1
    return [
        ("idx_addr", sram_addr_width), ("len_addr", sram_addr_width),
        ("wgt_addr", sram_addr_width), ("out_addr", sb), ("out_stride", sb),
        ("table_addr", addr_width), ("rows", 32), ("row_stride", addr_width), ("dim", 16),
        ("bags", 32), ("mode", 2), ("requant", 1), ("multiplier", 32), ("shift", 6),
        ("zero_point", 8), ("act_min", 8), ("act_max", 8), ("cont_in", 1), ("cont_out", 1),
        ("tag", tag_width),
    ]


def done_fields(tag_width=16):
    return [("tag", tag_width), ("error", ERR_WIDTH)]


def encode_cmd(job, fields):
    value, offset = 0, 0
    for name, width in fields:
        v = int(getattr(job, name))
        if not 0 <= v < (1 << width):
            raise ValueError(f"{name}={v!r} does not fit in {width} bits")
        value |= v << offset
        offset += width
    return value


def decode_done(value, tag_width=16):
    return value & ((1 << tag_width) - 1), (value >> tag_width) & ((1 << ERR_WIDTH) - 1)


def ring_slots(*, dim, data_bytes, ring_half):
    """Slots of the staging ring for rows of ``dim`` bytes: ``2 · floor(ring_half / w)`` with
    ``w = ceil(dim / data_bytes)`` words per slot."""
    w = -(-dim // data_bytes)
    return 2 * (ring_half // w)


def slot_word(n, *, dim, data_bytes, ring_base, ring_half):
    """First scratchpad word of the slot that receives the n-th gathered row of a job.

    Slots alternate between the ring's two halves (``[ring_base, +ring_half)`` and
    ``[ring_base + ring_half, +ring_half)``), and within a half follow each other ``w`` words
    apart, restarting at the half's start when the next slot would not fit."""
    w = -(-dim // data_bytes)
    per_half = ring_half // w
    return ring_base + (n % 2) * ring_half + ((n // 2) % per_half) * w
