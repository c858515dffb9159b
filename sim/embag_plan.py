"""Host-side plan of an embedding-bag job on Ember: DRAM layout, scratchpad map and commands.

Plain Python and numpy (nothing here imports Amaranth or cocotb), like :func:`sim.host.plan_gemm`.
A job pools ``B`` bags of one or several INT8 tables (TBE) into output rows of ``Σ dim``
elements, INT32 or (requantised) INT8, row-major in DRAM: table ``t``'s pooled vector of bag
``b`` is at columns ``[Σ_{u<t} dim_u, Σ_{u<=t} dim_u)`` of row ``b``.

Commands (``hw/embag.py``, :class:`hw.embag.EmbagCommands`)
-----------------------------------------------------------
Queue 3 (opcode 4) takes two kinds of command. A **TABLE** command sets the table registers
(DRAM address, rows, row stride, dim, and the output stage's parameters for INT8 output); the
**POOL** commands that follow pool bags of that table: their index, length and weight lists are
in the scratchpad, and their outputs go to the scratchpad. :func:`sim.host.embag_table_command`
and :func:`sim.host.embag_pool_command` encode them.

Scratchpad map (``B`` banks of ``d`` words of ``W`` bytes; at least 8 banks)
-------------------------------------------------------------------------------
==========  ==================  ================================================================
banks       use                 written by / read by
==========  ==================  ================================================================
0, 1        list slots 0 and 1  DMA loads of a segment's lists / the engine's list reader
2–3, 4–5    output slots 0, 1   the engine's output writer / DMA stores
B-2, B-1    staging ring        the engine's gathers (DMA writes) / the engine's pooler
==========  ==================  ================================================================

A job that runs alone uses no other bank; GEMM jobs use the banks differently (all of them
with 8 or 16 banks, ``sim/host.py``), but the runtime never runs the two at once.

Segments: no fixed cap on the pooling factor
--------------------------------------------
The plan walks each table's bags in order and cuts them into **segments**: runs of bags whose
lists (``lengths``: 4 bytes per bag, ``indices``: 4 bytes per index, ``weights``: 1 byte per
index, each padded to a word) fit one list slot (``d·W`` bytes) and whose outputs fit one output
slot (``2·d·W`` bytes). A bag whose lists alone do not fit a slot is split into pieces of as many
indices as fit: the piece that starts it is a POOL command with ``cont_out`` (its last bag stays
open in the engine's accumulators), the pieces after it have ``cont_in`` (bag 0 continues the
open bag), and the engine writes the bag once, when its last piece is pooled. So a bag may hold
any number of indices; only the number of commands grows. ``mean`` divides by the whole bag's
length, carried across the pieces.

Per segment ``s`` (slot ``s % 2`` for the lists; output-slot ``o % 2`` for the ``o``-th segment
that completes at least one bag):

1. a DMA load of the segment's list block (lengths, indices, weights; prepared by the host in
   DRAM, one block per segment) into the list slot;
2. a TABLE command, before the first segment of each table;
3. a POOL command;
4. a DMA store of the completed bags from the output slot: one contiguous row when the job has
   one table, otherwise one 2D store of ``bags × 4·dim`` (or ``dim``) bytes with the output's row
   pitch as the DRAM stride.

Semaphores (each with one producer queue and one consumer queue), like the GEMM plan's:

=============  ====  ========================================  ==================================
semaphore      init  signalled by                              waited on by
=============  ====  ========================================  ==================================
4 LIST_FREE    2     each POOL (signal)                        each load (wait)
5 LIST_READY   0     each load (signal)                        each POOL (wait)
6 OUT_FREE     2     each store (signal)                       each POOL that writes (wait2)
7 OUT_READY    0     each POOL that writes (signal2)           each store (wait)
=============  ====  ========================================  ==================================

Push order: ``L0``, then for each segment ``s``: ``T`` (if a new table), ``P(s)``, ``L(s+1)``,
and the stores of earlier segments not yet pushed; finally the remaining stores. Every command
waits only on commands pushed before it, so a host that blocks on a full queue never deadlocks.

Errors
------
The engine reports the bag within its POOL command and the position within that command's
piece of the bag (``EMBAG_ERR_BAG``, ``EMBAG_ERR_POS``). :meth:`EmbagPlan.locate` turns them into
the table, the bag of the whole job and the position in that bag. A failing POOL command stops
the command processor, so nothing after it is stored; the stores of earlier segments (whose bags
are complete and correct) may or may not have run by then.
"""

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np

from sim import host as H

__all__ = ["EmbagTable", "EmbagPlan", "plan_embag", "EmbagLayout", "embag_dram_layout",
           "SEM_LIST_FREE", "SEM_LIST_READY", "SEM_OUT_FREE", "SEM_OUT_READY",
           "EMBAG_SEMAPHORES", "scratchpad_map", "MAX_DIM"]

SEM_LIST_FREE, SEM_LIST_READY, SEM_OUT_FREE, SEM_OUT_READY = 4, 5, 6, 7
#: The engine's largest ``dim`` (``hw.embag.embag_params``' ``max_dim``; a test checks it).
MAX_DIM = 1024
EMBAG_SEMAPHORES = {SEM_LIST_FREE: 2, SEM_LIST_READY: 0, SEM_OUT_FREE: 2, SEM_OUT_READY: 0}


@dataclass(frozen=True)
class EmbagTable:
    """One table of a job, as the plan sees it.

    ``lengths`` (int64, one per bag) and ``indices`` (int64) are the engine's view of the bags
    (offsets already converted); ``weights`` are int8 (one per index) or None; ``requant`` is
    ``(multiplier, shift, zero_point, act_min, act_max)`` for INT8 output or None for INT32.
    ``table_addr`` and ``row_stride`` place the table in DRAM."""
    rows: int
    dim: int
    lengths: np.ndarray
    indices: np.ndarray
    weights: "np.ndarray | None" = None
    requant: "tuple | None" = None
    table_addr: int = 0
    row_stride: int = 0


@dataclass(frozen=True)
class Segment:
    table: int
    bag0: int            # global bag of the command's bag 0
    pos0: int            # index within bag 0 where this piece starts (cont_in)
    bags: int            # bags in the command (the last one open with cont_out)
    k0: int              # first entry of the table's index list
    n: int               # indices in the command
    cont_in: bool
    cont_out: bool

    @property
    def written(self):
        return self.bags - int(self.cont_out)


@dataclass(frozen=True)
class EmbagPlan:
    """What :func:`plan_embag` decided, and the commands in push order.

    Members
    -------
    commands : list of Command
    semaphores : dict
    blocks : list of (dram_addr, numpy uint8 array)
        The list blocks the host writes into DRAM before the job.
    segments : list of Segment
    pools : dict
        POOL command id → its Segment (for :meth:`locate`).
    bags, row_bytes, out_dtype, out_addr : int, int, numpy dtype, int
        The output: ``bags`` rows of ``row_bytes`` at ``out_addr``.
    bytes_gathered : int
        Bytes of table rows the engine reads (``Σ indices · dim``).
    list_bytes, store_bytes : int
        DRAM bytes moved by the list loads and by the stores.
    """
    commands: list
    semaphores: dict
    blocks: list
    segments: list
    pools: dict
    bags: int
    row_bytes: int
    out_dtype: np.dtype
    out_addr: int
    bytes_gathered: int
    list_bytes: int
    store_bytes: int

    def count(self, queue):
        return sum(1 for c in self.commands if c.queue == queue)

    def locate(self, cmd_id, bag, pos):
        """``(table, bag, pos)`` of the job for an engine error in POOL command ``cmd_id`` at
        ``bag``/``pos`` of that command; None if ``cmd_id`` is not one of the plan's POOLs."""
        seg = self.pools.get(cmd_id)
        if seg is None:
            return None
        return seg.table, seg.bag0 + bag, pos + (seg.pos0 if bag == 0 else 0)


def scratchpad_map(config):
    """``{"lists": (slot0, slot1), "outputs": (slot0, slot1), "ring": (lo, hi)}`` as scratchpad
    byte ranges ``(start, end)`` (see the module documentation)."""
    if config.sram_banks < 8:
        raise ValueError(f"the embedding-bag plan needs 8 scratchpad banks, {config.name!r} has "
                         f"{config.sram_banks}")
    bank = config.sram_depth * config.bus_bytes
    lists = tuple((s * bank, (s + 1) * bank) for s in range(2))
    outputs = tuple(((2 + 2 * s) * bank, (4 + 2 * s) * bank) for s in range(2))
    ring = ((config.sram_banks - 2) * bank, config.sram_banks * bank)
    return {"lists": lists, "outputs": outputs, "ring": ring}


def _pad(nbytes, W):
    return -(-nbytes // W) * W


def _segments(t, tab, W, list_cap, out_cap):
    """Cut table ``t``'s bags into segments (see the module documentation)."""
    weighted = tab.weights is not None
    obytes = tab.dim * (1 if tab.requant is not None else 4)
    max_out = out_cap // obytes
    if max_out < 1:
        raise ValueError(f"table {t}: an output row of {obytes} bytes does not fit an output "
                         f"slot of {out_cap} bytes")

    def block(nb, n):
        return _pad(4 * nb, W) + _pad(4 * n, W) + (_pad(n, W) if weighted else 0)

    cap1 = (list_cap - W) // (5 if weighted else 4)
    while cap1 > 0 and block(1, cap1) > list_cap:
        cap1 -= 1
    if cap1 < 1:
        raise ValueError("a list slot cannot hold one index")
    segs = []
    starts = np.concatenate([[0], np.cumsum(tab.lengths)]).astype(np.int64)
    cur = None            # dict: bag0, pos0, bags, k0, n, cont_in

    def close(cont_out):
        nonlocal cur
        if cur is not None and cur["bags"]:
            segs.append(Segment(table=t, cont_out=cont_out, **cur))
        cur = None

    for b, length in enumerate(tab.lengths.tolist()):
        start = 0
        while True:
            if cur is None:
                cur = dict(bag0=b, pos0=start, bags=0, k0=int(starts[b]) + start, n=0,
                           cont_in=start > 0)
            rest = length - start
            if block(cur["bags"] + 1, cur["n"] + rest) <= list_cap and cur["bags"] < max_out:
                cur["bags"] += 1
                cur["n"] += rest
                break
            if cur["bags"]:
                close(False)          # start the bag afresh in a new segment
                continue
            # The bag's remaining indices do not fit an empty segment: pool a piece, keep it open.
            piece = cap1
            cur["bags"], cur["n"] = 1, piece
            close(True)
            start += piece
    close(False)
    return segs


def plan_embag(config, tables, *, mode, list_addr, out_addr, first_id=1):
    """The command list of an embedding-bag job (see the module documentation).

    Parameters
    ----------
    config : EmberConfig
    tables : list of EmbagTable
        Every table has the same number of bags. Either all or none have ``requant``.
    mode : ``"sum"`` or ``"mean"``
        Tables with weights are pooled as weighted sums.
    list_addr : int
        DRAM byte address where the list blocks go (aligned to the bus width).
    out_addr : int
        DRAM byte address of the output rows.
    first_id : int
        Id of the first command; ids count up (mod 2^16).
    """
    if mode not in ("sum", "mean"):
        raise ValueError(f"mode must be 'sum' or 'mean', not {mode!r}")
    if not tables:
        raise ValueError("a job needs at least one table")
    W = config.bus_bytes
    if list_addr % W:
        raise ValueError(f"list_addr must be a multiple of {W}")
    smap = scratchpad_map(config)
    list_cap = smap["lists"][0][1] - smap["lists"][0][0]
    out_cap = smap["outputs"][0][1] - smap["outputs"][0][0]
    requant = tables[0].requant is not None
    if any((t.requant is not None) != requant for t in tables):
        raise ValueError("either every table or no table has requantised output")
    bags = len(tables[0].lengths)
    if any(len(t.lengths) != bags for t in tables):
        raise ValueError("every table needs the same number of bags")
    e = 1 if requant else 4
    row_bytes = e * sum(t.dim for t in tables)
    col = np.concatenate([[0], np.cumsum([e * t.dim for t in tables])]).astype(int)

    ids = itertools.count(first_id)
    commands, blocks, segments, pools = [], [], [], {}
    at = list_addr
    list_bytes = store_bytes = 0
    out_seq = 0
    all_segs = []
    for t, tab in enumerate(tables):
        for seg in _segments(t, tab, W, list_cap, out_cap):
            all_segs.append(seg)

    def cmd(c, note):
        w = list(c.words)
        w[0] = (w[0] & 0xFFFF) | (next(ids) & 0xFFFF) << 16
        return dataclasses.replace(c, words=tuple(w), note=note)

    # Build per-segment command groups first, then push-order them.
    groups = []
    for s, seg in enumerate(all_segs):
        tab = tables[seg.table]
        weighted = tab.weights is not None
        lslot = smap["lists"][s % 2][0]
        starts = np.concatenate([[0], np.cumsum(tab.lengths)]).astype(np.int64)
        b = np.arange(seg.bag0, seg.bag0 + seg.bags)
        lens = np.minimum(starts[b + 1], seg.k0 + seg.n) - np.maximum(starts[b], seg.k0)
        assert int(lens.sum()) == seg.n and (lens >= 0).all(), (seg, lens)
        idx = tab.indices[seg.k0:seg.k0 + seg.n]
        parts = [lens.astype("<i4").view(np.uint8), idx.astype("<i4").view(np.uint8)]
        if weighted:
            parts.append(tab.weights[seg.k0:seg.k0 + seg.n].astype(np.int8).view(np.uint8))
        offs, blk = [], []
        for part in parts:
            offs.append(sum(len(x) for x in blk))
            padded = np.zeros(_pad(len(part), W), np.uint8)
            padded[:len(part)] = part
            blk.append(padded)
        block = np.concatenate(blk)
        blocks.append((at, block))
        group = {"load": (H.dma_command("load", 0, dram_addr=at, sram_addr=lslot, rows=1,
                                        row_bytes=len(block), wait=SEM_LIST_FREE,
                                        signal=SEM_LIST_READY), f"segment {s} lists: ", None)}
        list_bytes += len(block)
        at += len(block)
        if s == 0 or all_segs[s - 1].table != seg.table:
            rq = tab.requant or (0, 0, 0, -128, 127)
            group["table"] = (H.embag_table_command(
                0, table_addr=tab.table_addr, rows=tab.rows, row_stride=tab.row_stride,
                dim=tab.dim, requant=tab.requant is not None, multiplier=rq[0], shift=rq[1],
                zero_point=rq[2], act_min=rq[3], act_max=rq[4]), f"table {seg.table}: ", None)
        writes = seg.written > 0
        oslot = smap["outputs"][out_seq % 2][0]
        sems = dict(wait=SEM_LIST_READY, signal=SEM_LIST_FREE)
        if writes:
            sems.update(wait2=SEM_OUT_FREE, signal2=SEM_OUT_READY)
        group["pool"] = (H.embag_pool_command(
            0, idx_addr=(lslot + offs[1]) // W, len_addr=(lslot + offs[0]) // W,
            wgt_addr=(lslot + offs[2]) // W if weighted else 0, out_addr=oslot,
            out_stride=e * tab.dim, bags=seg.bags,
            mode="weighted" if weighted else mode, cont_in=seg.cont_in,
            cont_out=seg.cont_out, **sems), f"segment {s}: ", seg)
        if writes:
            ob = e * tab.dim
            first = seg.bag0
            dram = out_addr + first * row_bytes + int(col[seg.table])
            if ob == row_bytes:
                st = H.dma_command("store", 0, dram_addr=dram, sram_addr=oslot, rows=1,
                                   row_bytes=seg.written * ob, wait=SEM_OUT_READY,
                                   signal=SEM_OUT_FREE)
            else:
                st = H.dma_command("store", 0, dram_addr=dram, sram_addr=oslot,
                                   rows=seg.written, row_bytes=ob, dram_stride=row_bytes,
                                   sram_stride=ob, wait=SEM_OUT_READY, signal=SEM_OUT_FREE)
            group["store"] = (st, f"segment {s} output: ", None)
            store_bytes += seg.written * ob
            out_seq += 1
        groups.append(group)
        segments.append(seg)

    # Push order.
    order = [groups[0]["load"]] if groups else []
    pending = []
    for s, g in enumerate(groups):
        if "table" in g:
            order.append(g["table"])
        order.append(g["pool"])
        if s + 1 < len(groups):
            order.append(groups[s + 1]["load"])
        order += pending
        pending = [g["store"]] if "store" in g else []
    order += pending
    for c, note, seg in order:
        c2 = cmd(c, note + c.note)
        commands.append(c2)
        if seg is not None:
            pools[c2.id] = seg
    gathered = sum(int(t.lengths.sum()) * t.dim for t in tables)
    return EmbagPlan(commands=commands, semaphores=dict(EMBAG_SEMAPHORES), blocks=blocks,
                     segments=segments, pools=pools, bags=bags, row_bytes=row_bytes,
                     out_dtype=np.dtype(np.int8) if requant else np.dtype("<i4"),
                     out_addr=out_addr, bytes_gathered=gathered, list_bytes=list_bytes,
                     store_bytes=store_bytes)


@dataclass(frozen=True)
class EmbagLayout:
    """DRAM byte addresses of a job's buffers, and the DRAM size that holds them."""
    table_addrs: tuple
    row_strides: tuple
    list_addr: int
    list_bytes: int
    out_addr: int
    out_bytes: int
    size: int


def embag_dram_layout(config, shapes, *, bags, list_bytes, requant, base=0x1000, align=64,
                      gap=256, offsets=None, strides=None, min_size=1 << 16):
    """A DRAM layout: the tables (``shapes``: ``(rows, dim)`` each), the list blocks
    (``list_bytes``) and the output (``bags`` rows), in that order, each ``gap`` bytes after the
    previous one, rounded up to ``align``, plus ``offsets[t]`` for table t (unaligned tables).
    ``strides[t]`` (default ``dim``) is table t's row stride. ``size`` is a power of two."""
    n = len(shapes)
    offsets = offsets or (0,) * n
    strides = strides or tuple(d for _, d in shapes)
    at = base
    addrs = []
    for (rows, dim), off, stride in zip(shapes, offsets, strides):
        at = -(-at // align) * align + off
        addrs.append(at)
        at += max(rows - 1, 0) * stride + dim + gap
    W = config.bus_bytes
    at = -(-at // max(align, W)) * max(align, W)
    list_addr = at
    at += list_bytes + gap
    at = -(-at // align) * align
    out_addr = at
    e = 1 if requant else 4
    out_bytes = bags * e * sum(d for _, d in shapes)
    at += out_bytes + gap
    size = max(min_size, 1 << max(at - 1, 1).bit_length())
    return EmbagLayout(tuple(addrs), tuple(strides), list_addr, list_bytes, out_addr, out_bytes,
                       size)
