"""The DMA engine: 2D strided, byte-aligned copies between DRAM (AXI4) and the scratchpad.

Interface
---------
Two independent command queues, ``load`` (DRAM → SRAM) and ``store`` (SRAM → DRAM), take
descriptors (:meth:`DMA.descriptor_layout`); each finished descriptor produces one beat on
``load_done`` / ``store_done`` with its ``tag`` and an ``error`` code. Loads and stores run
concurrently on the separate AXI read and write channels and the two scratchpad ports ``sram_wr``
and ``sram_rd``. Within one queue, descriptors are executed and completed in order.

A descriptor moves ``rows`` rows of ``row_bytes`` bytes; row ``r`` goes from
``dram_addr + r·dram_stride`` to ``sram_addr + r·sram_stride`` (or the other way round for a
store). Every address, length and stride may have any byte alignment.

Descriptor fields and widths (LSB first; ``k = log2(data_bytes)``, ``SB = sram_addr_width + k``):

==============  ======================  ====================================================
field           width                   meaning
==============  ======================  ====================================================
``dram_addr``   ``addr_width``          byte address in DRAM
``sram_addr``   ``SB``                  byte address in the scratchpad
``rows``        16                      number of rows, at least 1
``row_bytes``   ``max(16, SB + 1)``     bytes per row, at least 1; wide enough for a row as
                                        large as the whole scratchpad
``dram_stride`` ``addr_width``          bytes between DRAM row starts, modulo 2^addr_width
                                        (so a "negative" stride walks downwards)
``sram_stride`` ``SB``                  bytes between scratchpad row starts (non-negative)
``tag``         ``tag_width``           returned in the completion
==============  ======================  ====================================================

Completion: ``tag`` (``tag_width``) and ``error`` (3 bits):

- 0 ``ERR_OK``
- 1 ``ERR_SLVERR``: some beat (load) or burst (store) had an AXI SLVERR response;
- 2 ``ERR_DECERR``: the same with DECERR (the first error of a descriptor is reported);
- 3 ``ERR_RANGE``: some byte of the scratchpad side lies at or beyond ``sram_words·data_bytes``;
- 4 ``ERR_MALFORMED``: ``rows == 0`` or ``row_bytes == 0``;
- 5 ``ERR_WINDOW`` (only with ``windows=True``): some byte of the DRAM side lies outside the
  direction's DRAM window (``rd_base..rd_limit`` for loads, ``wr_base..wr_limit`` for stores,
  inclusive). ``dram_stride`` is taken as signed here, and the rows' whole span is checked (the
  first and the last row bound it), so a descriptor that would wrap around the address space
  is refused too.

Codes 3, 4 and 5 are decided before the descriptor issues anything: such a descriptor performs no
AXI transaction and no scratchpad access at all. After an AXI error every burst already issued
for the descriptor is drained normally (all R beats and B responses are taken), the remaining rows
are still transferred on the AXI side, and the next descriptor runs as usual.

- Load with a read error: from the first erroneous R beat on, no scratchpad write of that
  descriptor is made. What may have been written is a prefix, in transfer order (row by row,
  byte by byte), of the destination, ending before the first byte carried by the bad beat;
  bytes of that prefix still held in the realigner when the error arrived are not written.
  Nothing outside the destination is ever written.
- Store with a write error: all bursts are still issued, so every destination byte may have been
  written (whatever the slave did with the failed bursts).

Structure (per direction)
-------------------------
``_Front``
    Takes a descriptor, checks it (range and shape: registered multiplies and first-row ends,
    then registered 32-bit-wide partial bounds, in two register stages that pass one descriptor
    per cycle; the walker takes it two cycles after acceptance at the earliest; the window is
    read when the descriptor enters the second stage) and walks its rows, one row per cycle, as
    ``(dram, sram, n)`` row entries. A rejected descriptor becomes a single row entry that
    carries its error code.
Row FIFOs
    Each row entry is forked, with its geometry precomputed (beat counts, rotation, edge lanes),
    into the FIFOs of the units below. The load realigner's FIFO holds ``outstanding + 6`` rows
    (a row waits there from before its first AR until its last R beat); the store realigner's
    holds 10, enough for one-beat rows to flow at one per cycle.
Scratchpad reader (stores)
    Reads each row's scratchpad words through a register slice, only while the 6-word read
    buffer has room for every read in flight (responses cannot be refused).
Burst splitter
    Splits each row's DRAM beats into INCR bursts of full-size beats (``AxSIZE = k``) that stop at
    ``max_burst`` beats and at every 4 KB boundary, and issues them on AR/AW while fewer than
    ``outstanding`` transactions of that direction are in flight. A row register and a burst
    register sit between the row FIFO and AR/AW (two cycles of latency, one burst per cycle).
``_Realigner``
    Rotates each input beat by the row's relative byte offset ``(dst - src) mod data_bytes`` (a
    log-depth barrel shifter) and merges it with the previous beat, producing the destination
    words with their byte masks (first and last word of each row partial). One input beat and/or
    one output word per cycle; a row costs at most one extra cycle when it needs one more
    output word than input beats.
Response tracking
    Loads: outstanding reads are counted (AR in, R-last out); R errors are collected per
    descriptor by the realigner, which ends the descriptor after its last scratchpad write.
    Stores: one entry per AW burst in a FIFO of ``outstanding`` entries (which is also the
    write-outstanding limit); B responses pop it, and the last burst of a descriptor emits its
    completion. W beats are only sent for bursts whose AW has been sent.

All transactions use ID 0, so AXI returns R data and B responses in issue order; AxCACHE is
``0b0011`` (normal, non-cacheable, bufferable), AxPROT, AxLOCK and AxQOS are 0.

Reset: only control state is reset (valid flags, counters, FIFO levels, the error
accumulators). The datapath registers (descriptors and row walkers in the fronts, the burst
splitters' rows and bursts, the realigners' rows, previous beats and output words, the write and
read slices' payloads) are reset-less, so as not to load the reset net: each is written before
it is read, or read only while a reset-cleared valid flag says it holds something.

Throughput: one AR/AW per cycle, one R/W beat per cycle, one row per cycle; large transfers run
at the full bus rate once ``outstanding·max_burst`` beats cover the DRAM latency.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR, RESP_DECERR, RESP_SLVERR, axi4_signature
from .skid import SkidBuffer
from .sram import sram_port_signature

__all__ = [
    "DMA", "ERR_OK", "ERR_SLVERR", "ERR_DECERR", "ERR_RANGE", "ERR_MALFORMED", "ERR_WINDOW",
    "ERR_WIDTH",
    "ROWS_WIDTH",
]

ERR_OK, ERR_SLVERR, ERR_DECERR, ERR_RANGE, ERR_MALFORMED, ERR_WINDOW = 0, 1, 2, 3, 4, 5
ERR_WIDTH = 3
ROWS_WIDTH = 16
# Scratchpad words of read data the store path may have requested and not yet consumed: enough
# to cover the request slice and the read latency at one word per cycle.
_STORE_READ_BUFFER = 6
_AXCACHE = 0b0011


def _check_int(name, value, minimum, maximum, *, pow2=False):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be in [{minimum}, {maximum}], not {value!r}")
    if pow2 and value & (value - 1):
        raise ValueError(f"{name} must be a power of two, not {value!r}")


def _rotate_bytes_left(m, value, amount, nbytes, name):
    """``value`` rotated towards higher byte lanes by ``amount`` bytes (log-depth shifter)."""
    for bit in range(len(amount)):
        step = (1 << bit) % nbytes
        if step:
            stage = Signal(len(value), name=f"{name}_rot{step}")
            m.d.comb += stage.eq(Mux(amount[bit], value.rotate_left(8 * step), value))
            value = stage
    return value


def _resp_error(resp):
    """AXI response → completion error code (OKAY and EXOKAY are success)."""
    return Mux(resp == RESP_SLVERR, ERR_SLVERR, Mux(resp == RESP_DECERR, ERR_DECERR, ERR_OK))


class _Front(wiring.Component):
    """Descriptor check and row walker.

    Parameters
    ----------
    desc_layout : StructLayout
        The descriptor layout (:meth:`DMA.make_descriptor_layout`).
    sram_limit : int
        Scratchpad bytes: a descriptor touching a byte at or beyond it is rejected.
    window : bool
        Add the ``base``/``limit`` inputs: a descriptor touching a DRAM byte outside
        ``[base, limit]`` is rejected with ``ERR_WINDOW``.

    Members
    -------
    desc : In(stream.Signature(desc_layout))
        Descriptors.
    rows : Out(stream.Signature(row_layout))
        One entry per row: ``dram``/``sram`` byte addresses, ``n`` bytes, ``desc_last`` on the
        descriptor's last row, ``tag``, and ``err`` (nonzero: a rejected descriptor, one entry).
    """

    def __init__(self, *, desc_layout, sram_limit, window=False):
        f = desc_layout.members
        self.sram_limit = sram_limit
        self.window = window
        self.row_layout = data.StructLayout({
            "dram": f["dram_addr"], "sram": f["sram_addr"], "n": f["row_bytes"],
            "desc_last": 1, "tag": f["tag"], "err": ERR_WIDTH,
        })
        ports = {
            "desc": In(stream.Signature(desc_layout)),
            "rows": Out(stream.Signature(self.row_layout)),
        }
        if window:
            ports.update(base=In(f["dram_addr"]), limit=In(f["dram_addr"]))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        desc, rows = self.desc, self.rows
        dl = desc.payload.shape()

        # Stage 1: the accepted descriptor, `rows - 1` and the end of its first row on each side
        # (registered adders).
        # Only the valid flags (`q_valid`, `r_valid`, `busy`) and `desc_last` are reset: every
        # other register of both stages and of the walker is loaded with the descriptor and only
        # read while its stage's flag is set (reset-less datapath, see `DMA`).
        q_valid = Signal()
        q = Signal(dl, reset_less=True)
        q_rm1 = Signal(ROWS_WIDTH, reset_less=True)       # rows - 1
        # Stage 2 (`r`): the same descriptor with its check's partial results (`c_*`), computed
        # from stage 1's registers as it moves on (`mv`): the spans of its rows (multiplies with
        # registered operands into registers) and the room left after its first row. Both
        # stages hold one descriptor each, so descriptors of one row still go through at one
        # per cycle.
        r_valid = Signal()
        r = Signal(dl, reset_less=True)
        mv = Signal()
        aw = len(q.dram_addr)
        # `sram_end`: the first row's end; `c_span`: (rows - 1) · sram_stride; `c_room`:
        # sram_limit - the first row's end.
        sram_end = Signal(max(len(q.sram_addr), len(q.row_bytes)) + 1, reset_less=True)
        c_span = Signal(ROWS_WIDTH + len(q.sram_stride), reset_less=True)
        c_room = Signal(signed(len(sram_end) + 1), reset_less=True)
        with m.If(mv):
            m.d.sync += [
                c_span.eq(q_rm1 * q.sram_stride),
                c_room.eq(self.sram_limit - sram_end),
            ]
        malformed = (r.rows == 0) | (r.row_bytes == 0)
        # The last row's end, sram_end + span, is beyond the limit.
        out_of_range = c_room[-1] | (c_span > c_room[:-1])
        outside = Signal()
        code = Mux(malformed, ERR_MALFORMED,
                   Mux(out_of_range, ERR_RANGE, Mux(outside, ERR_WINDOW, ERR_OK)))
        if self.window:
            # The rows span `A .. A + D + n - 1` (D >= 0) or `A + D .. A + n - 1` (D < 0), with
            # A = dram_addr, n = row_bytes and D = (rows - 1) · dram_stride, the stride signed.
            # Each bound is checked as 32-bit-wide steps instead of one carry chain of
            # ROWS_WIDTH + aw + 3 bits: registers hold D, `A - base` and
            # `limit - (A + n - 1)`; from them, each bound is one aw-bit carry chain on D's low
            # bits and a test of D's upper bits (zero, or all ones for -2^aw <= D < 0).
            dram_last = Signal(signed(aw + 2), reset_less=True)  # A + n - 1, first row
            with m.If(desc.valid & desc.ready):
                m.d.sync += dram_last.eq(desc.payload.dram_addr + desc.payload.row_bytes - 1)
            c_dspan = Signal(signed(ROWS_WIDTH + aw + 1), reset_less=True)  # D
            # A - base: A >= base when non-negative
            c_lo = Signal(signed(aw + 1), reset_less=True)
            # limit - (A + n - 1): first row within limit
            c_hi = Signal(signed(aw + 3), reset_less=True)
            with m.If(mv):
                m.d.sync += [
                    c_dspan.eq(q_rm1 * q.dram_stride.as_signed()),
                    c_lo.eq(q.dram_addr - self.base),
                    c_hi.eq(self.limit - dram_last),
                ]
            c_dlo = c_dspan[:aw]                 # D mod 2^aw
            c_dneg = c_dspan[-1]                 # D < 0
            c_dzero = c_dspan[aw:] == 0          # D >> aw == 0: 0 <= D < 2^aw
            c_dones = c_dspan[aw:] == (1 << (len(c_dspan) - aw)) - 1  # D >> aw == -1
            # D < 0: A + D >= base  <=>  D + (A - base) >= 0  <=>  A >= base, D >= -2^aw and the
            # aw-bit sum D mod 2^aw + (A - base) carries out. D >= 0: D <= limit - (A + n - 1)
            # <=> the first row is within the limit, D < 2^aw and D mod 2^aw <= c_hi.
            lo_carry = (c_dlo + c_lo[:aw])[aw]
            lo_ok = ~c_lo[-1] & (~c_dneg | (c_dones & lo_carry))
            hi_ok = ~c_hi[-1] & (c_dneg | (c_dzero & (c_dlo <= c_hi[:aw + 1])))
            m.d.comb += outside.eq(~(lo_ok & hi_ok))

        # Stage 2: the row walker.
        busy = Signal()
        da = Signal.like(q.dram_addr, reset_less=True)
        sa = Signal.like(q.sram_addr, reset_less=True)
        n = Signal.like(q.row_bytes, reset_less=True)
        left = Signal(ROWS_WIDTH, reset_less=True)
        ds = Signal.like(q.dram_stride, reset_less=True)
        ss = Signal.like(q.sram_stride, reset_less=True)
        tag = Signal.like(q.tag, reset_less=True)
        err = Signal(ERR_WIDTH, reset_less=True)

        # `desc_last`: the row presented is the descriptor's last (or the descriptor is
        # rejected). A register, loaded with the next value as rows advance, so that `take`
        # and `mv` (the clock enables of both descriptor stages) are one LUT from flip-flops.
        desc_last = Signal()
        m.d.comb += [
            rows.valid.eq(busy),
            rows.payload.dram.eq(da),
            rows.payload.sram.eq(sa),
            rows.payload.n.eq(n),
            rows.payload.desc_last.eq(desc_last),
            rows.payload.tag.eq(tag),
            rows.payload.err.eq(err),
        ]
        advance = rows.valid & rows.ready
        take = r_valid & (~busy | (advance & desc_last))
        m.d.comb += [mv.eq(q_valid & (~r_valid | take)), desc.ready.eq(~q_valid | mv)]

        with m.If(mv):
            m.d.sync += [r_valid.eq(1), r.eq(q)]
        with m.Elif(take):
            m.d.sync += r_valid.eq(0)
        with m.If(desc.valid & desc.ready):
            m.d.sync += [
                q_valid.eq(1),
                q.eq(desc.payload),
                q_rm1.eq(desc.payload.rows - 1),
                sram_end.eq(desc.payload.sram_addr + desc.payload.row_bytes),
            ]
        with m.Elif(mv):
            m.d.sync += q_valid.eq(0)

        with m.If(advance):
            m.d.sync += [da.eq(da + ds), sa.eq(sa + ss), left.eq(left - 1),
                         desc_last.eq(left == 2)]
            with m.If(desc_last):
                m.d.sync += busy.eq(0)
        with m.If(take):
            m.d.sync += [
                busy.eq(1), da.eq(r.dram_addr), sa.eq(r.sram_addr), n.eq(r.row_bytes),
                left.eq(r.rows), ds.eq(r.dram_stride), ss.eq(r.sram_stride), tag.eq(r.tag),
                err.eq(code), desc_last.eq((r.rows == 1) | (code != 0)),
            ]
        return m


class _Realigner(wiring.Component):
    """Byte realignment of one row after another, with destination byte masks.

    Parameters
    ----------
    data_bytes : int
        Beat width in bytes.
    max_beats : int
        Most beats a row can span, on either side.
    word_width : int
        Width of the destination word address.
    tag_width : int
        Width of the descriptor tag.

    Members
    -------
    rows : In(stream.Signature(row_layout))
        Per row: rotation ``s = (dst - src) mod data_bytes``; ``d`` = 1 when the destination's
        first word needs the source's second beat (``dst % D < src % D``); ``nin`` source beats;
        ``steps`` = destination words + ``d``; ``lo``/``hi``, the first byte lane of the first
        destination word and the last byte lane of the last one; ``word``, the first destination
        word; ``desc_last``, ``tag``; ``err`` nonzero for a rejected descriptor (no beats: one
        output with that error and ``desc_last``). A row is taken into a register and worked on
        from the next cycle; the next row is taken as the held one ends (one row per cycle).
    i : In(stream.Signature({data, err}))
        Source beats; ``err`` nonzero marks a beat that failed.
    o : Out(stream.Signature({data, mask, word, row_last, desc_last, err, tag}))
        Destination words (registered). ``err`` nonzero: the descriptor has failed up to here and
        the word must not be written.
    """

    def __init__(self, *, data_bytes, max_beats, word_width, tag_width):
        self.data_bytes = data_bytes
        k = data_bytes.bit_length() - 1
        self.row_layout = data.StructLayout({
            "s": k, "d": 1, "nin": range(max_beats + 1), "steps": range(max_beats + 2),
            "lo": k, "hi": k, "word": word_width, "desc_last": 1, "tag": tag_width,
            "err": ERR_WIDTH,
        })
        super().__init__({
            "rows": In(stream.Signature(self.row_layout)),
            "i": In(stream.Signature(data.StructLayout({
                "data": 8 * data_bytes, "err": ERR_WIDTH}))),
            "o": Out(stream.Signature(data.StructLayout({
                "data": 8 * data_bytes, "mask": data_bytes, "word": word_width, "row_last": 1,
                "desc_last": 1, "err": ERR_WIDTH, "tag": tag_width}))),
        })

    def elaborate(self, platform):
        m = Module()
        D = self.data_bytes
        rows, i, o = self.rows, self.i, self.o

        # The current row is held in a register (`rv`/`row`), loaded from the row stream when
        # the previous one ends (or none is held), so no path starts at the row FIFO's output.
        # The step's flags are registers too, set when the row is loaded and updated from
        # down-counters as the step advances, so no comparison sits in front of the enables.
        # The held row, its counters, the previous beat and the output word are reset-less:
        # they are loaded with the row (or the word) and only read while `rv` (or `o.valid`)
        # is set. The masked-off lanes of a first word may carry a stale `prev`, as they
        # already do from one row to the next. The flags and `err_acc` keep their reset.
        rv = Signal()
        row = Signal(self.row_layout, reset_less=True)
        reject = Signal()               # the held row is a rejected descriptor
        consume = Signal()              # this step takes a source beat (t < nin)
        produce = Signal()              # this step writes a destination word (t >= d)
        last = Signal()                 # last step of the row (t == steps - 1)
        first = Signal()                # first destination word of the row (t == d)
        cin = Signal.like(row.nin, reset_less=True)     # source beats left to take, nin - t
        rem = Signal.like(row.steps, reset_less=True)   # steps left after this one, steps-1-t
        word = Signal.like(row.word, reset_less=True)   # destination word of the next word
        prev = Signal(8 * D, reset_less=True)           # previous source beat, rotated
        err_acc = Signal(ERR_WIDTH)     # first error of the current descriptor
        # The output word's register (`o.payload` follows it).
        ob = Signal(o.payload.shape(), reset_less=True)
        m.d.comb += o.payload.eq(ob)

        out_free = Signal()
        m.d.comb += out_free.eq(~o.valid | o.ready)
        fire = rv & Mux(reject, out_free, (~consume | i.valid) & (~produce | out_free))
        done_row = fire & (reject | last)
        load = rows.valid & (~rv | done_row)
        m.d.comb += [
            i.ready.eq(rv & ~reject & consume & (~produce | out_free)),
            rows.ready.eq(~rv | done_row),
        ]

        head = rows.payload
        with m.If(load):
            m.d.sync += [
                rv.eq(1), row.eq(head),
                reject.eq(head.err != 0),
                consume.eq(head.nin != 0),
                produce.eq(~head.d),
                first.eq(~head.d),
                last.eq(head.steps == 1),
                cin.eq(head.nin),
                rem.eq(head.steps - 1),
                word.eq(head.word),
            ]
        with m.Elif(done_row):
            m.d.sync += rv.eq(0)
        with m.Elif(fire):
            m.d.sync += [
                consume.eq(consume & (cin != 1)),
                cin.eq(cin - consume),
                produce.eq(1),
                first.eq(~produce),
                last.eq(rem == 1),
                rem.eq(rem - 1),
            ]

        cur = Signal(8 * D)
        m.d.comb += cur.eq(_rotate_bytes_left(m, i.payload.data, row.s, D, "cur"))
        merged = Signal(8 * D)
        mask = Signal(D)
        lo = Signal.like(row.lo)
        hi = Signal.like(row.hi)
        m.d.comb += [lo.eq(Mux(first, row.lo, 0)), hi.eq(Mux(last, row.hi, D - 1))]
        for lane in range(D):
            byte = slice(8 * lane, 8 * lane + 8)
            # Lanes below the rotation hold the previous beat's wrapped-around bytes. (The
            # comparisons that are constant at lanes 0 and D-1 are left out: Verilator warns.)
            from_prev = (row.s > lane) if lane < D - 1 else Const(0)
            above_lo = (lo <= lane) if lane < D - 1 else Const(1)
            below_hi = (hi >= lane) if lane > 0 else Const(1)
            m.d.comb += [
                merged[byte].eq(Mux(from_prev, prev[byte], cur[byte])),
                mask[lane].eq(above_lo & below_hi),
            ]
        beat_err = Mux(consume, i.payload.err, ERR_OK)
        err_now = Mux(err_acc != ERR_OK, err_acc, beat_err)

        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(fire):
            with m.If(reject):
                m.d.sync += [
                    o.valid.eq(1),
                    ob.mask.eq(0),
                    ob.row_last.eq(1),
                    ob.desc_last.eq(1),
                    ob.err.eq(row.err),
                    ob.tag.eq(row.tag),
                ]
            with m.Else():
                m.d.sync += err_acc.eq(Mux(last & row.desc_last, ERR_OK, err_now))
                with m.If(consume):
                    m.d.sync += prev.eq(cur)
                with m.If(produce):
                    m.d.sync += [
                        o.valid.eq(1),
                        ob.data.eq(merged),
                        ob.mask.eq(mask),
                        ob.word.eq(word),
                        ob.row_last.eq(last),
                        ob.desc_last.eq(last & row.desc_last),
                        ob.err.eq(err_now),
                        ob.tag.eq(row.tag),
                    ]
        with m.If(fire & ~reject & produce & ~load):
            m.d.sync += word.eq(word + 1)
        return m


class DMA(wiring.Component):
    """2D strided AXI4 ⇄ scratchpad DMA with independent load and store queues.

    See the module documentation for the descriptor format, error codes and structure.

    Parameters
    ----------
    data_bytes : int
        AXI data width and scratchpad word width in bytes (8 to 64, a power of two).
    addr_width : int
        AXI address width (32 to 64).
    id_width : int
        AXI ID width (1 to 16); the DMA itself uses ID 0.
    outstanding : int
        AXI transactions allowed in flight per direction (1 to 256).
    max_burst : int
        Longest INCR burst in beats (1 to 256, a power of two).
    sram_addr_width : int
        Word address width of the scratchpad ports (1 to 32).
    sram_words : int
        Number of valid scratchpad words (1 to ``2**sram_addr_width``); descriptors touching a
        byte at or beyond ``sram_words·data_bytes`` are rejected with ``ERR_RANGE``.
    tag_width : int
        Width of descriptor tags (1 to 32).
    windows : bool
        Check every descriptor against a DRAM window per direction (``ERR_WINDOW``), given by
        the ``rd_base``/``rd_limit`` and ``wr_base``/``wr_limit`` inputs (default False: no
        check and no such inputs).

    Members
    -------
    load : In(stream.Signature(descriptor_layout))
        DRAM → scratchpad descriptors.
    store : In(stream.Signature(descriptor_layout))
        Scratchpad → DRAM descriptors.
    load_done : Out(stream.Signature(done_layout))
        One ``{tag, error}`` per load descriptor, in order.
    store_done : Out(stream.Signature(done_layout))
        One ``{tag, error}`` per store descriptor, in order.
    sram_wr : Out(sram_port_signature(addr_width=sram_addr_width, data_bytes=data_bytes))
        Scratchpad client port used by loads (byte-masked writes).
    sram_rd : Out(sram_port_signature(addr_width=sram_addr_width, data_bytes=data_bytes))
        Scratchpad client port used by stores (reads).
    axi : Out(axi4_signature(addr_width=addr_width, data_bytes=data_bytes, id_width=id_width))
        AXI4 manager port.
    rd_base, rd_limit, wr_base, wr_limit : In(addr_width)
        With ``windows``: the inclusive DRAM byte windows of loads and of stores.
    """

    def __init__(self, *, data_bytes, addr_width, id_width, outstanding, max_burst,
                 sram_addr_width, sram_words, tag_width, windows=False):
        _check_int("data_bytes", data_bytes, 8, 64, pow2=True)
        _check_int("addr_width", addr_width, 32, 64)
        _check_int("id_width", id_width, 1, 16)
        _check_int("outstanding", outstanding, 1, 256)
        _check_int("max_burst", max_burst, 1, 256, pow2=True)
        _check_int("sram_addr_width", sram_addr_width, 1, 32)
        _check_int("sram_words", sram_words, 1, 1 << sram_addr_width)
        _check_int("tag_width", tag_width, 1, 32)
        if not isinstance(windows, bool):
            raise TypeError(f"windows must be a bool, not {windows!r}")
        self.windows = windows
        self.data_bytes, self.addr_width, self.id_width = data_bytes, addr_width, id_width
        self.outstanding, self.max_burst = outstanding, max_burst
        self.sram_addr_width, self.sram_words, self.tag_width = \
            sram_addr_width, sram_words, tag_width
        self.k = data_bytes.bit_length() - 1
        self.descriptor_layout = self.make_descriptor_layout(
            addr_width=addr_width, sram_addr_width=sram_addr_width, data_bytes=data_bytes,
            tag_width=tag_width)
        self.done_layout = self.make_done_layout(tag_width=tag_width)
        port = sram_port_signature(addr_width=sram_addr_width, data_bytes=data_bytes)
        ports = {
            "load": In(stream.Signature(self.descriptor_layout)),
            "store": In(stream.Signature(self.descriptor_layout)),
            "load_done": Out(stream.Signature(self.done_layout)),
            "store_done": Out(stream.Signature(self.done_layout)),
            "sram_wr": Out(port),
            "sram_rd": Out(port),
            "axi": Out(axi4_signature(addr_width=addr_width, data_bytes=data_bytes,
                                      id_width=id_width)),
        }
        if windows:
            ports.update({name: In(addr_width) for name in ("rd_base", "rd_limit", "wr_base",
                                                             "wr_limit")})
        super().__init__(ports)

    @staticmethod
    def make_descriptor_layout(*, addr_width, sram_addr_width, data_bytes, tag_width):
        """The descriptor ``StructLayout`` (see the module documentation for the widths)."""
        sram_byte_width = sram_addr_width + data_bytes.bit_length() - 1
        return data.StructLayout({
            "dram_addr": addr_width,
            "sram_addr": sram_byte_width,
            "rows": ROWS_WIDTH,
            "row_bytes": max(16, sram_byte_width + 1),
            "dram_stride": addr_width,
            "sram_stride": sram_byte_width,
            "tag": tag_width,
        })

    @staticmethod
    def make_done_layout(*, tag_width):
        """The completion ``StructLayout``: ``tag`` then the 3-bit ``error`` code."""
        return data.StructLayout({"tag": tag_width, "error": ERR_WIDTH})

    # Geometry of one row: the realigner's view, from source and destination byte addresses.
    def _geometry(self, src, dst, n):
        k, D = self.k, self.data_bytes
        so, do = src[:k], dst[:k]
        d = do < so
        nout = (do + n + (D - 1)) >> k
        return {
            "s": (do - so)[:k],
            "d": d,
            "nin": (so + n + (D - 1)) >> k,
            "nout": nout,
            "steps": nout + d,
            "lo": do,
            "hi": (do + n - 1)[:k],
        }

    def _max_beats(self):
        n_max = (1 << Shape.cast(self.descriptor_layout.members["row_bytes"]).width) - 1
        return (n_max + 2 * (self.data_bytes - 1)) // self.data_bytes

    def _room(self, wa):
        """Beats from word address ``wa`` to the next 4 KB boundary (1 to ``4096 // D``)."""
        page_beats = 4096 // self.data_bytes
        return page_beats - wa[:page_beats.bit_length() - 1]

    def _bursts(self, m, name, fifo, layout, take, *, reject=False):
        """Burst splitter over a row FIFO of ``layout`` ``{wa, beats, room, ...}``.

        ``room`` is :meth:`_room` of ``wa``, computed before the row FIFO. Two register stages,
        so that no path starts at the FIFO's (LUT RAM) output or ends at the AXI outputs: the
        row register (`A`) takes the FIFO's head and holds the next burst's address, the beats
        left and the beats to the 4 KB boundary; the burst register (`B`) holds one burst:
        ``valid``, byte ``addr``, ``len_m1`` (AxLEN), ``last`` (it ends the row) and ``row``
        (the row's entry, for its other fields). ``take`` (driven by the caller) consumes B;
        A's burst moves to B when B is empty or taken, and A loads the next row as its last
        burst moves, so one-burst rows go through at one per cycle. A burst that does not end
        its row is ``min(room, max_burst)`` beats long, so A's next values are chosen by
        ``room <= max_burst`` among candidates computed beside it: the next 4 KB page (an
        increment of the page number), the address plus ``max_burst`` (an increment of the bits
        above it), ``left - room`` and ``left - max_burst``. With ``reject``, a row whose
        ``err`` is nonzero is a single burst (``last``) for the caller to pass on without AxVALID.
        """
        k, D, MB = self.k, self.data_bytes, self.max_burst
        page_beats = 4096 // D
        pb = page_beats.bit_length() - 1
        mbb = MB.bit_length() - 1
        head = data.View(layout, fifo.r_data)
        # Only `a_valid` and `b["valid"]` are reset: the rest of A is loaded with its row and
        # of B with its burst, and read only while the flag is set.
        a_valid = Signal(name=f"{name}_a_valid")
        a_row = Signal(layout, name=f"{name}_a_row", reset_less=True)
        a_rej = Signal(name=f"{name}_a_rej", reset_less=True)
        cur = Signal.like(head.wa, name=f"{name}_cur", reset_less=True)
        left = Signal.like(head.beats, name=f"{name}_left", reset_less=True)
        room = Signal(range(page_beats + 1), name=f"{name}_room", reset_less=True)
        to_page = Signal(name=f"{name}_to_page")   # room <= MB: the burst stops at the boundary
        last = Signal(name=f"{name}_last")
        len_m1 = Signal(range(max(MB, 2)), name=f"{name}_len_m1")
        next_page = Cat(Const(0, pb), cur[pb:] + 1)
        next_mb = Cat(cur[:mbb], cur[mbb:] + 1) if MB < page_beats else next_page
        m.d.comb += [
            to_page.eq(room <= MB),
            last.eq(a_rej | Mux(to_page, left <= room, left <= MB)),
            len_m1.eq(Mux(last, left - 1, Mux(to_page, room - 1, MB - 1))),
        ]
        b = {
            "valid": Signal(name=f"{name}_b_valid"),
            "addr": Signal(len(head.wa) + k, name=f"{name}_b_addr", reset_less=True),
            "len_m1": Signal(range(max(MB, 2)), name=f"{name}_b_len_m1", reset_less=True),
            "last": Signal(name=f"{name}_b_last", reset_less=True),
            "row": Signal(layout, name=f"{name}_b_row", reset_less=True),
            "reject": Signal(name=f"{name}_b_rej", reset_less=True),
        }
        b_free = ~b["valid"] | take
        adv = a_valid & b_free
        load = fifo.r_rdy & (~a_valid | (adv & last))
        m.d.comb += fifo.r_en.eq(load)
        with m.If(b_free):
            m.d.sync += [
                b["valid"].eq(a_valid),
                b["addr"].eq(Cat(Const(0, k), cur)),
                b["len_m1"].eq(len_m1),
                b["last"].eq(last),
                b["row"].eq(a_row),
                b["reject"].eq(a_rej),
            ]
        with m.If(load):
            m.d.sync += [
                a_valid.eq(1), a_row.eq(head), cur.eq(head.wa), left.eq(head.beats),
                room.eq(head.room),
            ]
            if reject:
                m.d.sync += a_rej.eq(head.err != 0)
        with m.Elif(adv & last):
            m.d.sync += a_valid.eq(0)
        with m.Elif(adv):
            m.d.sync += [
                cur.eq(Mux(to_page, next_page, next_mb)),
                left.eq(Mux(to_page, left - room, left - MB)),
                room.eq(Mux(to_page, page_beats, room - MB)),
            ]
        return b

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        for ch in ("aw", "ar"):
            m.d.comb += [
                getattr(axi, f"{ch}id").eq(0),
                getattr(axi, f"{ch}size").eq(self.k),
                getattr(axi, f"{ch}burst").eq(BURST_INCR),
                getattr(axi, f"{ch}cache").eq(_AXCACHE),
            ]
        self._elaborate_load(m)
        self._elaborate_store(m)
        return m

    def _elaborate_load(self, m):
        k, O = self.k, self.outstanding
        axi = self.axi
        max_beats = self._max_beats()
        sram_limit = self.sram_words * self.data_bytes

        front = m.submodules.load_front = _Front(desc_layout=self.descriptor_layout,
                                                 sram_limit=sram_limit, window=self.windows)
        if self.windows:
            m.d.comb += [front.base.eq(self.rd_base), front.limit.eq(self.rd_limit)]
        wiring.connect(m, wiring.flipped(self.load), front.desc)
        realign = m.submodules.load_realign = _Realigner(
            data_bytes=self.data_bytes, max_beats=max_beats, word_width=self.sram_addr_width,
            tag_width=self.tag_width)
        burst_layout = data.StructLayout({"wa": self.addr_width - k,
                                          "beats": range(max_beats + 1),
                                          "room": range(4096 // self.data_bytes + 1)})

        # Fork each row to the realigner (rows waiting for data) and the AR splitter.
        rfifo = m.submodules.load_rows = SyncFIFOBuffered(
            width=realign.row_layout.size, depth=O + 6)
        afifo = m.submodules.load_ar_rows = SyncFIFOBuffered(width=burst_layout.size, depth=4)
        row = front.rows.payload
        reject = row.err != 0
        geo = self._geometry(row.dram, row.sram, row.n)
        rentry = Signal(realign.row_layout)
        aentry = Signal(burst_layout)
        m.d.comb += [
            rentry.s.eq(geo["s"]), rentry.d.eq(geo["d"]), rentry.nin.eq(geo["nin"]),
            rentry.steps.eq(geo["steps"]), rentry.lo.eq(geo["lo"]), rentry.hi.eq(geo["hi"]),
            rentry.word.eq(row.sram[k:]), rentry.desc_last.eq(row.desc_last),
            rentry.tag.eq(row.tag), rentry.err.eq(row.err),
            aentry.wa.eq(row.dram[k:]), aentry.beats.eq(geo["nin"]),
            aentry.room.eq(self._room(row.dram[k:])),
            front.rows.ready.eq(rfifo.w_rdy & afifo.w_rdy),
            rfifo.w_en.eq(front.rows.valid & front.rows.ready),
            rfifo.w_data.eq(rentry),
            afifo.w_en.eq(front.rows.valid & front.rows.ready & ~reject),
            afifo.w_data.eq(aentry),
        ]

        # AR: bursts while fewer than `outstanding` reads are in flight.
        inflight = Signal(range(O + 1))
        ar_fire = axi.arvalid & axi.arready
        burst = self._bursts(m, "ar", afifo, burst_layout, ar_fire)
        r_done = axi.rvalid & axi.rready & axi.rlast
        m.d.comb += [
            axi.arvalid.eq(burst["valid"] & (inflight != O)),
            axi.araddr.eq(burst["addr"]),
            axi.arlen.eq(burst["len_m1"]),
        ]
        m.d.sync += inflight.eq(inflight + ar_fire - r_done)

        # R → realigner → scratchpad writes; the last word of a descriptor completes it.
        m.d.comb += [
            realign.rows.valid.eq(rfifo.r_rdy),
            realign.rows.payload.eq(rfifo.r_data),
            rfifo.r_en.eq(realign.rows.ready),
            realign.i.valid.eq(axi.rvalid),
            realign.i.payload.data.eq(axi.rdata),
            realign.i.payload.err.eq(_resp_error(axi.rresp)),
            axi.rready.eq(realign.i.ready),
        ]
        done_depth = 4
        done = m.submodules.load_done_fifo = SyncFIFOBuffered(width=self.done_layout.size,
                                                              depth=done_depth)
        # The words wait in a register slice, so that the scratchpad's grant
        # (`sram_wr.req.ready`) ends there and does not run back through the realigner into the
        # R channel. A descriptor completes as its last word leaves the slice.
        # `write` (not a rejected descriptor's word) is decided before the slice, so that the
        # request's valid is one LUT after the slice's flip-flops.
        wslice = m.submodules.load_wr_slice = SkidBuffer(layout=data.StructLayout({
            "w": realign.o.payload.shape(), "write": 1}))
        # The completion's room in `done` is taken when the last word enters the slice: `free`
        # counts the entries of `done` neither filled nor promised to a last word in the slice.
        # So the request leaving the slice never waits on `done`: its valid is the slice's, and
        # the grant steers nothing but the slice (synth/README.md, "ninth round").
        free = Signal(range(done_depth + 1), init=done_depth)
        i_ok = ~realign.o.payload.desc_last | (free != 0)
        m.d.comb += [
            wslice.i.valid.eq(realign.o.valid & i_ok),
            wslice.i.payload.w.eq(realign.o.payload),
            wslice.i.payload.write.eq(realign.o.payload.err == ERR_OK),
            realign.o.ready.eq(wslice.i.ready & i_ok),
        ]
        promised = wslice.i.valid & wslice.i.ready & realign.o.payload.desc_last
        returned = self.load_done.valid & self.load_done.ready
        m.d.sync += free.eq(free - promised + returned)
        o, ow = wslice.o, wslice.o.payload.w
        write = wslice.o.payload.write
        req = self.sram_wr.req
        m.d.comb += [
            req.valid.eq(o.valid & write),
            req.payload.addr.eq(ow.word),
            req.payload.we.eq(1),
            req.payload.wdata.eq(ow.data),
            req.payload.wmask.eq(ow.mask),
            o.ready.eq(~write | req.ready),
            done.w_en.eq(o.valid & o.ready & ow.desc_last),
            done.w_data.eq(Cat(ow.tag, ow.err)),
            self.load_done.valid.eq(done.r_rdy),
            self.load_done.payload.eq(done.r_data),
            done.r_en.eq(self.load_done.ready),
        ]

    def _elaborate_store(self, m):
        k, O, MB, D = self.k, self.outstanding, self.max_burst, self.data_bytes
        axi = self.axi
        max_beats = self._max_beats()
        sram_limit = self.sram_words * D
        page_bits = (4096 // D).bit_length() - 1

        front = m.submodules.store_front = _Front(desc_layout=self.descriptor_layout,
                                                  sram_limit=sram_limit, window=self.windows)
        if self.windows:
            m.d.comb += [front.base.eq(self.wr_base), front.limit.eq(self.wr_limit)]
        wiring.connect(m, wiring.flipped(self.store), front.desc)
        realign = m.submodules.store_realign = _Realigner(
            data_bytes=D, max_beats=max_beats, word_width=self.addr_width - k,
            tag_width=self.tag_width)
        burst_layout = data.StructLayout({
            "wa": self.addr_width - k, "beats": range(max_beats + 1),
            "room": range(4096 // D + 1), "desc_last": 1,
            "tag": self.tag_width, "err": ERR_WIDTH})
        read_layout = data.StructLayout({"word": self.sram_addr_width,
                                         "count": range(max_beats + 1)})
        b_layout = data.StructLayout({"desc_last": 1, "tag": self.tag_width, "err": ERR_WIDTH})

        # Fork each row to the AW splitter, the scratchpad reader and the realigner. A rejected
        # descriptor only goes to the AW splitter, which hands it to the B tracker.
        afifo = m.submodules.store_aw_rows = SyncFIFOBuffered(width=burst_layout.size, depth=4)
        sfifo = m.submodules.store_rd_rows = SyncFIFOBuffered(width=read_layout.size, depth=4)
        # Rows wait here from the walker until their last W beat: about 8 cycles when the data
        # flows, so 10 entries keep one-beat rows at one per cycle.
        rfifo = m.submodules.store_rows = SyncFIFOBuffered(width=realign.row_layout.size,
                                                           depth=10)
        row = front.rows.payload
        reject = row.err != 0
        geo = self._geometry(row.sram, row.dram, row.n)
        aentry = Signal(burst_layout)
        sentry = Signal(read_layout)
        rentry = Signal(realign.row_layout)
        push = front.rows.valid & front.rows.ready
        m.d.comb += [
            aentry.wa.eq(row.dram[k:]), aentry.beats.eq(geo["nout"]),
            aentry.room.eq(self._room(row.dram[k:])),
            aentry.desc_last.eq(row.desc_last), aentry.tag.eq(row.tag), aentry.err.eq(row.err),
            sentry.word.eq(row.sram[k:]), sentry.count.eq(geo["nin"]),
            rentry.s.eq(geo["s"]), rentry.d.eq(geo["d"]), rentry.nin.eq(geo["nin"]),
            rentry.steps.eq(geo["steps"]), rentry.lo.eq(geo["lo"]), rentry.hi.eq(geo["hi"]),
            rentry.word.eq(row.dram[k:]), rentry.desc_last.eq(row.desc_last),
            rentry.tag.eq(row.tag), rentry.err.eq(ERR_OK),
            front.rows.ready.eq(afifo.w_rdy & sfifo.w_rdy & rfifo.w_rdy),
            afifo.w_en.eq(push), afifo.w_data.eq(aentry),
            sfifo.w_en.eq(push & ~reject), sfifo.w_data.eq(sentry),
            rfifo.w_en.eq(push & ~reject), rfifo.w_data.eq(rentry),
        ]

        # AW: one B-tracker entry per burst; the tracker's depth is the outstanding limit.
        # A rejected descriptor goes through the splitter as one burst without AW, so that its
        # B-tracker entry stays in order.
        bfifo = m.submodules.store_b = SyncFIFOBuffered(width=b_layout.size, depth=O)
        b_take = Signal()
        burst = self._bursts(m, "aw", afifo, burst_layout, b_take, reject=True)
        brow = burst["row"]
        aw_fire = axi.awvalid & axi.awready
        bentry = Signal(b_layout)
        m.d.comb += [
            axi.awvalid.eq(burst["valid"] & ~burst["reject"] & bfifo.w_rdy),
            axi.awaddr.eq(burst["addr"]),
            axi.awlen.eq(burst["len_m1"]),
            bentry.desc_last.eq(burst["reject"] | (brow.desc_last & burst["last"])),
            bentry.tag.eq(brow.tag),
            bentry.err.eq(brow.err),
            bfifo.w_data.eq(bentry),
            b_take.eq(aw_fire | (burst["valid"] & burst["reject"] & bfifo.w_rdy)),
            bfifo.w_en.eq(b_take),
        ]

        # Scratchpad reads, only with room for their data in the read buffer.
        dfifo = m.submodules.store_data = SyncFIFO(width=8 * D, depth=_STORE_READ_BUFFER)
        shead = data.View(read_layout, sfifo.r_data)
        rissued = Signal.like(shead.count)
        pending = Signal(range(_STORE_READ_BUFFER + 1))
        rd = self.sram_rd
        # The requests reach the scratchpad through a register slice (its grant ends there);
        # `pending` counts them from the slice's input.
        rq = m.submodules.store_rd_slice = SkidBuffer(layout=rd.req.payload.shape())
        wiring.connect(m, rq.o, wiring.flipped(rd.req))
        rd_fire = rq.i.valid & rq.i.ready
        m.d.comb += [
            rq.i.valid.eq(sfifo.r_rdy & (pending + dfifo.level < _STORE_READ_BUFFER)),
            rq.i.payload.addr.eq(shead.word + rissued),
            rq.i.payload.we.eq(0),
            sfifo.r_en.eq(rd_fire & (rissued == shead.count - 1)),
            dfifo.w_en.eq(rd.rsp.valid),
            dfifo.w_data.eq(rd.rsp.data),
        ]
        with m.If(rd_fire):
            m.d.sync += rissued.eq(Mux(rissued == shead.count - 1, 0, rissued + 1))
        m.d.sync += pending.eq(pending + rd_fire - rd.rsp.valid)

        # Read data → realigner → W, one beat per cycle, never ahead of its AW.
        aw_ahead = Signal(range(O + 1))   # bursts whose AW is out and whose W is not complete
        bcount = Signal(range(max(MB, 2)))  # beats sent of the current W burst
        o = realign.o
        can_w = aw_ahead != 0
        wlast = Signal()
        m.d.comb += [
            realign.rows.valid.eq(rfifo.r_rdy),
            realign.rows.payload.eq(rfifo.r_data),
            rfifo.r_en.eq(realign.rows.ready),
            realign.i.valid.eq(dfifo.r_rdy),
            realign.i.payload.data.eq(dfifo.r_data),
            realign.i.payload.err.eq(ERR_OK),
            dfifo.r_en.eq(realign.i.ready),
            wlast.eq(o.payload.row_last | (o.payload.word[:page_bits] == (1 << page_bits) - 1)
                     | (bcount == MB - 1)),
            axi.wvalid.eq(o.valid & can_w),
            axi.wdata.eq(o.payload.data),
            axi.wstrb.eq(o.payload.mask),
            axi.wlast.eq(wlast),
            o.ready.eq(axi.wready & can_w),
        ]
        w_fire = axi.wvalid & axi.wready
        with m.If(w_fire):
            m.d.sync += bcount.eq(Mux(wlast, 0, bcount + 1))
        m.d.sync += aw_ahead.eq(aw_ahead + aw_fire - (w_fire & wlast))

        # B tracker: pops one entry per B (or per rejected descriptor) and completes the
        # descriptor on its last burst with its first error.
        done = m.submodules.store_done_fifo = SyncFIFOBuffered(width=self.done_layout.size,
                                                               depth=4)
        bhead = data.View(b_layout, bfifo.r_data)
        b_reject = bhead.err != 0
        err_acc = Signal(ERR_WIDTH)
        resp = _resp_error(axi.bresp)
        err_now = Mux(err_acc != ERR_OK, err_acc, resp)
        done_ok = ~bhead.desc_last | done.w_rdy
        pop = bfifo.r_rdy & done_ok & (b_reject | axi.bvalid)
        m.d.comb += [
            axi.bready.eq(bfifo.r_rdy & ~b_reject & done_ok),
            bfifo.r_en.eq(pop),
            done.w_en.eq(pop & bhead.desc_last),
            done.w_data.eq(Cat(bhead.tag, Mux(b_reject, bhead.err, err_now))),
            self.store_done.valid.eq(done.r_rdy),
            self.store_done.payload.eq(done.r_data),
            done.r_en.eq(self.store_done.ready),
        ]
        with m.If(pop & ~b_reject):
            m.d.sync += err_acc.eq(Mux(bhead.desc_last, ERR_OK, err_now))
