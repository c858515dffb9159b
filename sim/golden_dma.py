"""Golden model of the DMA engine (``hw/dma.py``): descriptors, bursts and memory images.

This is the host's view of the DMA, in plain Python and numpy (no ``hw`` import):

- the descriptor and completion formats (:func:`descriptor_fields`, :func:`encode_descriptor`,
  :func:`decode_done`), which ``tests/test_dma.py`` checks against the hardware's layouts;
- the error codes and the descriptor checks (:func:`descriptor_error`);
- the AXI bursts a descriptor must produce (:func:`descriptor_bursts`);
- the effect of a load or store on whole DRAM and SRAM images (:func:`load`, :func:`store`),
  including what may or may not have been written when the AXI slave answers with errors.

Memories are flat ``numpy.uint8`` arrays. DRAM addresses are taken modulo ``2**addr_width`` and
then modulo the DRAM image size (the testbench's RAM aliases the same way); SRAM byte ``a`` is
byte lane ``a % data_bytes`` of scratchpad word ``a // data_bytes``.
"""

from dataclasses import dataclass

import numpy as np

__all__ = [
    "ERR_OK", "ERR_SLVERR", "ERR_DECERR", "ERR_RANGE", "ERR_MALFORMED", "ROWS_WIDTH",
    "ERR_WIDTH", "TAG_WIDTH", "RESP_OKAY", "RESP_SLVERR", "RESP_DECERR", "Descriptor", "Outcome",
    "descriptor_fields", "done_fields", "encode_descriptor", "decode_done", "descriptor_error",
    "row_spans", "row_bursts", "descriptor_bursts", "load", "store",
]

ERR_OK, ERR_SLVERR, ERR_DECERR, ERR_RANGE, ERR_MALFORMED = 0, 1, 2, 3, 4
ERR_WIDTH = 3
ROWS_WIDTH = 16
# Tag width the Ember harnesses instantiate the DMA with.
TAG_WIDTH = 16
RESP_OKAY, RESP_SLVERR, RESP_DECERR = 0, 2, 3
_RESP_TO_ERR = {RESP_OKAY: ERR_OK, 1: ERR_OK, RESP_SLVERR: ERR_SLVERR, RESP_DECERR: ERR_DECERR}


@dataclass(frozen=True)
class Descriptor:
    """One 2D transfer: ``rows`` rows of ``row_bytes``; row r at ``dram_addr + r·dram_stride``
    (modulo ``2**addr_width``) and ``sram_addr + r·sram_stride``."""
    dram_addr: int
    sram_addr: int
    rows: int
    row_bytes: int
    dram_stride: int
    sram_stride: int
    tag: int = 0


@dataclass
class Outcome:
    """Result of applying one descriptor to the golden images.

    ``code`` is the expected completion error. The golden image holds every byte that must end
    up written; ``maybe_idx`` (indices into the destination memory) lists bytes whose final
    value may be either their old value (what the golden image holds) or ``maybe_new``.
    """
    code: int
    maybe_idx: np.ndarray
    maybe_new: np.ndarray


def _log2(value):
    return value.bit_length() - 1


def descriptor_fields(*, addr_width, sram_addr_width, data_bytes, tag_width=TAG_WIDTH):
    """``[(name, width), ...]`` of the descriptor, least significant field first."""
    sb = sram_addr_width + _log2(data_bytes)
    return [
        ("dram_addr", addr_width), ("sram_addr", sb), ("rows", ROWS_WIDTH),
        ("row_bytes", max(16, sb + 1)), ("dram_stride", addr_width), ("sram_stride", sb),
        ("tag", tag_width),
    ]


def done_fields(tag_width=TAG_WIDTH):
    return [("tag", tag_width), ("error", ERR_WIDTH)]


def encode_descriptor(desc, fields):
    """Pack a :class:`Descriptor` into an integer (fields wider than their slot raise)."""
    value, offset = 0, 0
    for name, width in fields:
        v = getattr(desc, name)
        if name == "dram_stride":
            v %= 1 << width
        if not 0 <= v < (1 << width):
            raise ValueError(f"{name}={v!r} does not fit in {width} bits")
        value |= v << offset
        offset += width
    return value


def decode_done(value, tag_width=TAG_WIDTH):
    """Completion beat → ``(tag, error)``."""
    return value & ((1 << tag_width) - 1), (value >> tag_width) & ((1 << ERR_WIDTH) - 1)


def descriptor_error(desc, *, sram_bytes):
    """The error a descriptor is rejected with before it starts, or ``ERR_OK``."""
    if desc.rows == 0 or desc.row_bytes == 0:
        return ERR_MALFORMED
    end = desc.sram_addr + (desc.rows - 1) * desc.sram_stride + desc.row_bytes
    if end > sram_bytes:
        return ERR_RANGE
    return ERR_OK


def row_spans(desc, *, addr_width):
    """``[(dram_start, sram_start, n), ...]`` for each row; DRAM addresses modulo 2^A."""
    mod = 1 << addr_width
    return [((desc.dram_addr + r * desc.dram_stride) % mod,
             desc.sram_addr + r * desc.sram_stride, desc.row_bytes) for r in range(desc.rows)]


def row_bursts(dram_start, n, *, data_bytes, max_burst, addr_width):
    """INCR bursts ``[(addr, beats), ...]`` of one row: full-size beats, aligned start, at most
    ``max_burst`` beats, never crossing a 4 KB boundary."""
    page = 4096 // data_bytes
    word = dram_start // data_bytes
    beats = (dram_start % data_bytes + n + data_bytes - 1) // data_bytes
    out = []
    while beats:
        length = min(beats, page - word % page, max_burst)
        out.append(((word * data_bytes) % (1 << addr_width), length))
        word += length
        beats -= length
    return out


def descriptor_bursts(desc, *, data_bytes, max_burst, addr_width, sram_bytes):
    """Every burst of a descriptor in issue order (none for a rejected descriptor)."""
    if descriptor_error(desc, sram_bytes=sram_bytes):
        return []
    return [b for dram_start, _, n in row_spans(desc, addr_width=addr_width)
            for b in row_bursts(dram_start, n, data_bytes=data_bytes, max_burst=max_burst,
                                addr_width=addr_width)]


def _outcome(code):
    return Outcome(code, np.zeros(0, np.int64), np.zeros(0, np.uint8))


def _dram_index(start, n, size, addr_width):
    return (np.arange(start, start + n, dtype=np.int64) % (1 << addr_width)) % size


def load(dram, sram, desc, *, data_bytes, addr_width, fault=None):
    """Apply a load (DRAM → SRAM) to ``sram`` in place; return its :class:`Outcome`.

    ``fault(beat_addr)`` gives the AXI response of the read beat at that aligned address (or
    ``None`` for all OKAY). After the first failing beat nothing more of the descriptor is
    written; every byte before it, in transfer order, may or may not have been written.
    """
    code = descriptor_error(desc, sram_bytes=len(sram))
    if code:
        return _outcome(code)
    src_idx, dst_idx = [], []
    cutoff = None  # transfer index of the first byte carried by a failing beat
    done = 0
    for dram_start, sram_start, n in row_spans(desc, addr_width=addr_width):
        src_idx.append(_dram_index(dram_start, n, len(dram), addr_width))
        dst_idx.append(np.arange(sram_start, sram_start + n, dtype=np.int64))
        if fault is not None and cutoff is None:
            for addr, beats in row_bursts(dram_start, n, data_bytes=data_bytes, max_burst=1,
                                          addr_width=addr_width):
                resp = fault(addr)
                if resp in (RESP_SLVERR, RESP_DECERR):
                    offset = (addr - dram_start) % (1 << addr_width)
                    if offset >= (1 << addr_width) - data_bytes:  # beat starts before the row
                        offset = 0
                    cutoff = done + offset
                    code = _RESP_TO_ERR[resp]
                    break
        done += n
    if cutoff is None:
        for src, dst in zip(src_idx, dst_idx):  # row by row: later rows win where they overlap
            sram[dst] = dram[src]
        return _outcome(ERR_OK)
    src = np.concatenate(src_idx)
    dst = np.concatenate(dst_idx)
    values = dram[src]
    return Outcome(code, dst[:cutoff], values[:cutoff])


def store(dram, sram, desc, *, data_bytes, max_burst, addr_width, fault=None):
    """Apply a store (SRAM → DRAM) to ``dram`` in place; return its :class:`Outcome`.

    ``fault(beat_addr)`` gives the response of the write beat at that aligned address; the
    testbench's RAM does not write a failing beat, and answers a burst with the response of its
    first failing beat. The completion carries the error of the first failing burst. When any
    burst fails, every destination byte outside failing beats may or may not have been written.
    """
    code = descriptor_error(desc, sram_bytes=len(sram))
    if code:
        return _outcome(code)
    src_idx, dst_idx, bad = [], [], []
    for dram_start, sram_start, n in row_spans(desc, addr_width=addr_width):
        src_idx.append(np.arange(sram_start, sram_start + n, dtype=np.int64))
        dst_idx.append(_dram_index(dram_start, n, len(dram), addr_width))
        row_bad = np.zeros(n, bool)
        if fault is not None:
            for addr, beats in row_bursts(dram_start, n, data_bytes=data_bytes,
                                          max_burst=max_burst, addr_width=addr_width):
                for b in range(beats):
                    beat = (addr + b * data_bytes) % (1 << addr_width)
                    resp = fault(beat)
                    if resp in (RESP_SLVERR, RESP_DECERR):
                        if code == ERR_OK:
                            code = _RESP_TO_ERR[resp]
                        # Bytes of this row inside the failing beat.
                        lo = (beat - dram_start) % (1 << addr_width)
                        lo = 0 if lo >= (1 << addr_width) - data_bytes else lo
                        hi = min(n, (beat + data_bytes - dram_start) % (1 << addr_width))
                        row_bad[lo:hi] = True
        bad.append(row_bad)
    if code == ERR_OK:
        for src, dst in zip(src_idx, dst_idx):  # row by row: later rows win where they overlap
            dram[dst] = sram[src]
        return _outcome(ERR_OK)
    src = np.concatenate(src_idx)
    dst = np.concatenate(dst_idx)
    bad = np.concatenate(bad)
    values = sram[src]
    return Outcome(code, dst[~bad], values[~bad])
