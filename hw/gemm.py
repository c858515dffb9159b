"""The GEMM engine: scratchpad → PE array → scratchpad.

One command computes a block of ``m_tiles × n_tiles`` output tiles (each R×C) with a reduction of
``steps`` array steps (K = steps·L, zero-padded by software). Operands are read from the
scratchpad in Ember's packed layout; result rows pass through the output stage
(``hw/requant.py``: per-channel bias and TFLite requantisation to INT8, or raw INT32 + bias) and
are written back.

Packed layout (one scratchpad word per array step and operand)
--------------------------------------------------------------
- A panel, row-tile i, step s: word ``a_addr + i·steps + s``; byte ``r·L + l`` is
  ``A[i·R + r, s·L + l]``.
- B panel, column-tile j, step s: word ``b_addr + j·steps + s``; byte ``c·L + l`` is
  ``B[s·L + l, j·C + c]``.
- Output-stage parameters, column-tile j: three words from ``p_addr + 3j``: the bias
  (INT32 ``bias[jC + c]`` at bytes ``4c..4c+3``), the multiplier (likewise) and the shift (INT8
  ``shift[jC + c]`` at byte c).
- Results, in tile order (i outer, j inner) and row order within a tile: word
  ``c_addr + (i·n_tiles + j)·R + r`` holds row ``i·R + r``, columns ``j·C ..``, as INT32 at bytes
  ``4c..4c+3`` (raw) or INT8 at byte c (requantised); the rest of the word is not written. A 2D
  DMA store (row stride = one word) moves these rows straight into a row-major matrix in DRAM.

This needs ``R·L ≤ W``, ``L·C ≤ W`` and ``4·C ≤ W`` for a word of W bytes, so that one read per
operand feeds one array step and one write stores one result row.

Throughput
----------
The A and B readers each issue one read per cycle while they have credit in their response FIFOs,
so with conflict-free banks the array does one step per cycle. The parameter reader fetches three
words per tile on its own port while the tile computes. Each reader holds the next command in a
one-entry register and starts it in the cycle it issues the last read of the current one, so
consecutive commands follow with no bubble; a small FIFO tells the writer
where each command's results go.

Accumulation across commands (K split)
--------------------------------------
A reduction longer than one bank holds is split by software into K chunks, one command each, on
the same result block. The first chunk runs as usual (``acc = 0``, raw: ``acc + bias``). A command
with ``acc = 1`` reads each result row it is about to produce from ``c_addr`` (the INT32 partial
sums the previous chunk wrote there) and adds it in place of the bias: the output stage computes
``requant(acc + partial)`` (or raw ``acc + partial``) and the row is written back over the partial.
So the bias is added exactly once, by the first chunk, and only the last chunk requantises. A
command with ``acc = 1`` is accepted only once every earlier command has written all its rows, so
that it never reads a partial sum before it is written (one pipeline drain per K chunk).

Errors: a command with ``steps``, ``m_tiles`` or ``n_tiles`` equal to zero does nothing and
completes with ``error = 1``.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .pe_array import PEArray
from .requant import Requant
from .skid import SkidBuffer
from .sram import sram_port_signature

__all__ = ["GemmEngine", "ERR_MALFORMED"]

ERR_MALFORMED = 1


class _Reader(wiring.Component):
    """Issues the reads of one operand panel and buffers the returned words.

    For each of ``outer`` × ``inner`` tiles it reads ``steps`` consecutive words; the panel base
    advances by ``steps`` per tile along ``advance_on`` ("outer" for A: row-tiles, "inner" for B:
    column-tiles; "all": every tile, i.e. ``outer·inner·steps`` consecutive words). ``o`` carries
    the words in order, with ``last`` on each tile's final step. ``start`` is taken only while
    ``free``; the command then waits in a one-entry register until the current one has issued
    its last read. ``idle``: no command held and no read waiting for the scratchpad.
    """

    # Credit for the read round trip: 1 cycle in the request slice, 3 of scratchpad latency, 2
    # through the buffered FIFO, 1 to return the credit; 8 leaves slack.
    DEPTH = 8

    def __init__(self, *, addr_width, data_bytes, advance_on):
        self.addr_width, self.data_bytes, self.advance_on = addr_width, data_bytes, advance_on
        super().__init__({
            "start": In(1),
            "base": In(addr_width),
            "steps": In(16),
            "outer": In(16),
            "inner": In(16),
            "free": Out(1),
            "idle": Out(1),
            "rd": Out(sram_port_signature(addr_width=addr_width, data_bytes=data_bytes)),
            "o": Out(stream.Signature(data.StructLayout({"word": 8 * data_bytes, "last": 1}))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=8 * self.data_bytes + 1,
                                                        depth=self.DEPTH)
        # Only `active`, `nxt_valid`, `credit` (and the slice's and `lasts`' levels) are reset:
        # the command's fields, the counters and the address are all loaded when a command starts
        # (`active` rises), and nothing looks at them while `active` is low.
        # The three loop counters count down to zero, each with a registered "last" flag (set
        # when the counter leaves 1, or at a start for a dimension of 1), so that the end of a
        # tile and of the command are flip-flops, not compares of a count with a dimension
        # minus one (synth/README.md, "ninth round").
        active = Signal()
        steps = Signal(16, name="steps", reset_less=True)
        steps_m1 = Signal(16, name="steps_m1", reset_less=True)
        inner_m1 = Signal(16, name="inner_m1", reset_less=True)
        steps_one = Signal(name="steps_one", reset_less=True)
        inner_one = Signal(name="inner_one", reset_less=True)
        s_left = Signal(16, name="s_left", reset_less=True)
        j_left = Signal(16, name="j_left", reset_less=True)
        i_left = Signal(16, name="i_left", reset_less=True)
        s_last = Signal(name="s_last", reset_less=True)
        j_last = Signal(name="j_last", reset_less=True)
        i_last = Signal(name="i_last", reset_less=True)
        base = Signal(self.addr_width, name="base", reset_less=True)
        tile = Signal(self.addr_width, name="tile", reset_less=True)
        # The request's address (`tile + s`) and valid are registers, so that the scratchpad's
        # arbiter sees no adder or compare in front of it.
        addr = Signal(self.addr_width, reset_less=True)
        credit = Signal(range(self.DEPTH + 1))   # reads issued whose word is not yet popped

        # The reads reach the scratchpad through a register slice: its grant (`rd.req.ready`)
        # pops the slice and steers nothing else, and the reader's counters see only the slice's
        # registered `i.ready` (synth/README.md, "ninth round"). A read's word then comes back
        # READ_LATENCY cycles after its grant, which is no longer a fixed time after `issued`, so
        # each read's `last` flag waits in `lasts` for its word.
        m.submodules.req_slice = req = SkidBuffer(layout=self.rd.req.payload.shape())
        wiring.connect(m, req.o, wiring.flipped(self.rd.req))
        m.submodules.lasts = lasts = fifo.SyncFIFO(width=1, depth=self.DEPTH)
        last_step = s_last
        m.d.comb += [
            req.i.valid.eq(active & (credit < self.DEPTH)),
            req.i.payload.addr.eq(addr),
            req.i.payload.we.eq(0),
        ]
        issued = req.i.valid & req.i.ready
        with m.If(issued):
            with m.If(~s_last):
                m.d.sync += [s_left.eq(s_left - 1), s_last.eq(s_left == 1), addr.eq(addr + 1)]
            with m.Else():
                m.d.sync += [s_left.eq(steps_m1), s_last.eq(steps_one)]
                with m.If(~j_last):
                    m.d.sync += [j_left.eq(j_left - 1), j_last.eq(j_left == 1)]
                    if self.advance_on in ("inner", "all"):
                        m.d.sync += [tile.eq(tile + steps), addr.eq(tile + steps)]
                    else:
                        m.d.sync += addr.eq(tile)
                with m.Else():
                    m.d.sync += [j_left.eq(inner_m1), j_last.eq(inner_one)]
                    if self.advance_on == "inner":
                        m.d.sync += [tile.eq(base), addr.eq(base)]
                    else:   # "outer" and "all"
                        m.d.sync += [tile.eq(tile + steps), addr.eq(tile + steps)]
                    with m.If(~i_last):
                        m.d.sync += [i_left.eq(i_left - 1), i_last.eq(i_left == 1)]
                    with m.Else():
                        m.d.sync += active.eq(0)

        # The next command waits in a one-entry register and starts in the cycle of the final
        # read, so that commands follow each other with no bubble. `free` (room in that register)
        # and `idle` are registers: the scratchpad's grant steers only this reader's own state,
        # never the engine's `cmd.ready`. The start comes last, so it wins over the final read's
        # updates. Its dimensions are stored minus one, with "is one" flags.
        nxt_valid = Signal()
        nxt = Signal(data.StructLayout({
            "steps": 16, "steps_m1": 16, "steps_one": 1, "inner_m1": 16, "inner_one": 1,
            "outer_m1": 16, "outer_one": 1, "base": self.addr_width}), reset_less=True)
        final = s_last & j_last & i_last
        m.d.comb += [self.free.eq(~nxt_valid),
                     self.idle.eq(~active & ~nxt_valid & ~req.busy)]
        with m.If(nxt_valid & (~active | (issued & final))):
            m.d.sync += [active.eq(1), steps.eq(nxt.steps), steps_m1.eq(nxt.steps_m1),
                         steps_one.eq(nxt.steps_one), inner_m1.eq(nxt.inner_m1),
                         inner_one.eq(nxt.inner_one),
                         s_left.eq(nxt.steps_m1), s_last.eq(nxt.steps_one),
                         j_left.eq(nxt.inner_m1), j_last.eq(nxt.inner_one),
                         i_left.eq(nxt.outer_m1), i_last.eq(nxt.outer_one),
                         base.eq(nxt.base), tile.eq(nxt.base), addr.eq(nxt.base),
                         nxt_valid.eq(0)]
        with m.If(self.start):
            m.d.sync += [nxt_valid.eq(1), nxt.steps.eq(self.steps),
                         nxt.steps_m1.eq(self.steps - 1), nxt.steps_one.eq(self.steps == 1),
                         nxt.inner_m1.eq(self.inner - 1), nxt.inner_one.eq(self.inner == 1),
                         nxt.outer_m1.eq(self.outer - 1), nxt.outer_one.eq(self.outer == 1),
                         nxt.base.eq(self.base)]

        # Responses come back in order: each takes the oldest `last` flag. At most DEPTH reads
        # are in flight (`credit`), so `lasts` never overflows.
        m.d.comb += [
            lasts.w_en.eq(issued),
            lasts.w_data.eq(last_step),
            lasts.r_en.eq(self.rd.rsp.valid),
            buf.w_en.eq(self.rd.rsp.valid),
            buf.w_data.eq(self.rd.rsp.data | (lasts.r_data << (8 * self.data_bytes))),
            self.o.valid.eq(buf.r_rdy),
            self.o.payload.eq(buf.r_data),
            buf.r_en.eq(self.o.ready),
        ]
        popped = buf.r_rdy & buf.r_en
        m.d.sync += credit.eq(credit + issued - popped)
        return m


class GemmEngine(wiring.Component):
    """Reads packed operands from the scratchpad, runs the PE array and writes INT32 rows back.

    Parameters
    ----------
    rows, cols, lanes : int
        PE array shape R×C×L.
    data_bytes : int
        Scratchpad word width W in bytes.
    addr_width : int
        Scratchpad word-address width.
    tag_width : int
        Width of the command tag returned on completion.

    Members
    -------
    cmd : In(stream.Signature(cmd_layout))
        ``a_addr``, ``b_addr``, ``c_addr``, ``p_addr`` (word addresses), ``steps``, ``m_tiles``,
        ``n_tiles``, ``raw`` (1: INT32 ``acc + bias``; 0: INT8 requantised), ``zero_point``,
        ``act_min``, ``act_max``, ``acc`` (1: add the INT32 rows at ``c_addr`` instead of the
        bias, see above), ``tag``.
    done : Out(stream.Signature(done_layout))
        One ``{tag, error}`` per command, after its last result row is written.
    a_rd, b_rd, p_rd : Out(sram_port_signature(...))
        Operand and output-parameter read ports.
    d_rd : Out(sram_port_signature(...))
        Partial-sum read port (``acc`` commands only).
    c_wr : Out(sram_port_signature(...))
        Result write port.
    busy : Out(1)
        High while any command is in flight.
    step : Out(1)
        High in every cycle in which the PE array does a step (for performance counters).
    """

    def __init__(self, *, rows, cols, lanes, data_bytes, addr_width, tag_width=16):
        for name, value in (("rows", rows), ("cols", cols), ("lanes", lanes),
                            ("data_bytes", data_bytes), ("addr_width", addr_width),
                            ("tag_width", tag_width)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, not {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value!r}")
        for what, size in (("rows·lanes", rows * lanes), ("lanes·cols", lanes * cols),
                           ("4·cols", 4 * cols)):
            if size > data_bytes:
                raise ValueError(f"{what} = {size!r} bytes does not fit a {data_bytes!r}-byte "
                                 f"scratchpad word")
        self.rows, self.cols, self.lanes = rows, cols, lanes
        self.data_bytes, self.addr_width, self.tag_width = data_bytes, addr_width, tag_width
        self.cmd_layout = data.StructLayout({
            "a_addr": addr_width, "b_addr": addr_width, "c_addr": addr_width,
            "p_addr": addr_width, "steps": 16, "m_tiles": 16, "n_tiles": 16,
            "raw": 1, "zero_point": signed(8), "act_min": signed(8), "act_max": signed(8),
            "acc": 1, "tag": tag_width,
        })
        self.done_layout = data.StructLayout({"tag": tag_width, "error": 4})
        port = sram_port_signature(addr_width=addr_width, data_bytes=data_bytes)
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "done": Out(stream.Signature(self.done_layout)),
            "a_rd": Out(port),
            "b_rd": Out(port),
            "p_rd": Out(port),
            "d_rd": Out(port),
            "c_wr": Out(port),
            "busy": Out(1),
            "step": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        R, C, L, W = self.rows, self.cols, self.lanes, self.data_bytes
        m.submodules.array = array = PEArray(rows=R, cols=C, lanes=L)
        m.submodules.a_reader = ra = _Reader(addr_width=self.addr_width, data_bytes=W,
                                             advance_on="outer")
        m.submodules.b_reader = rb = _Reader(addr_width=self.addr_width, data_bytes=W,
                                             advance_on="inner")
        wiring.connect(m, wiring.flipped(self.a_rd), ra.rd)
        wiring.connect(m, wiring.flipped(self.b_rd), rb.rd)

        m.submodules.p_reader = rp = _Reader(addr_width=self.addr_width, data_bytes=W,
                                             advance_on="inner")
        wiring.connect(m, wiring.flipped(self.p_rd), rp.rd)
        m.submodules.d_reader = rd = _Reader(addr_width=self.addr_width, data_bytes=W,
                                             advance_on="all")
        wiring.connect(m, wiring.flipped(self.d_rd), rd.rd)
        m.submodules.requant = rq = Requant(cols=C)

        # Per-command bookkeeping, read at two points: where rows enter the output stage (the
        # scalars) and where they are written (address, packing, completion). The tile counts
        # are stored minus one, with flags for "one tile", so that the counters below compare
        # nothing wide.
        job_layout = data.StructLayout({
            "c_addr": self.addr_width, "m1": 16, "n1": 16, "m_one": 1, "n_one": 1,
            "tag": self.tag_width, "error": 1,
            "raw": 1, "zero_point": 8, "act_min": 8, "act_max": 8, "acc": 1,
        })
        m.submodules.rq_jobs = rq_jobs = fifo.SyncFIFOBuffered(width=job_layout.size, depth=4)
        m.submodules.wr_jobs = wr_jobs = fifo.SyncFIFOBuffered(width=job_layout.size, depth=4)

        cmd = self.cmd.payload
        malformed = (cmd.steps == 0) | (cmd.m_tiles == 0) | (cmd.n_tiles == 0)
        accept = Signal()
        start = accept & ~malformed
        # An `acc` command waits until every earlier command has written its last row.
        unwritten = Signal(range(16))   # commands accepted and not yet finished
        m.d.comb += [
            self.cmd.ready.eq(ra.free & rb.free & rp.free & rd.free & rq_jobs.w_rdy &
                              wr_jobs.w_rdy & (~cmd.acc | (unwritten == 0))),
            accept.eq(self.cmd.valid & self.cmd.ready),
            ra.base.eq(cmd.a_addr), rb.base.eq(cmd.b_addr), rp.base.eq(cmd.p_addr),
            ra.outer.eq(cmd.m_tiles), ra.inner.eq(cmd.n_tiles),
            rb.outer.eq(cmd.m_tiles), rb.inner.eq(cmd.n_tiles),
            rp.outer.eq(cmd.m_tiles), rp.inner.eq(cmd.n_tiles),
            ra.steps.eq(cmd.steps), rb.steps.eq(cmd.steps), rp.steps.eq(3),
            ra.start.eq(start), rb.start.eq(start), rp.start.eq(start),
            rd.base.eq(cmd.c_addr), rd.steps.eq(R), rd.outer.eq(cmd.m_tiles),
            rd.inner.eq(cmd.n_tiles), rd.start.eq(start & cmd.acc),
        ]
        job_in = Signal(job_layout)
        m.d.comb += [
            job_in.c_addr.eq(cmd.c_addr),
            job_in.m1.eq(cmd.m_tiles - 1), job_in.n1.eq(cmd.n_tiles - 1),
            job_in.m_one.eq(cmd.m_tiles == 1), job_in.n_one.eq(cmd.n_tiles == 1),
            job_in.tag.eq(cmd.tag),
            job_in.error.eq(malformed),
            job_in.raw.eq(cmd.raw),
            job_in.zero_point.eq(cmd.zero_point),
            job_in.act_min.eq(cmd.act_min),
            job_in.act_max.eq(cmd.act_max),
            job_in.acc.eq(cmd.acc),
            rq_jobs.w_data.eq(job_in), rq_jobs.w_en.eq(accept),
            wr_jobs.w_data.eq(job_in), wr_jobs.w_en.eq(accept),
        ]

        def tile_counter(load, job, tile_end, name):
            """High (a register) while the current command is in its last tile. Counts the
            tiles of ``job`` (i outer, j inner) down: ``load`` starts a command (from the FIFO's
            head, ``job``), ``tile_end`` ends a tile of the held command ``held``."""
            # No reset: all of it is loaded with the valid flag that qualifies it (`rq_valid`,
            # `wr_valid`), and nothing looks at it while that flag is low.
            tj = Signal(16, name=f"{name}_tj", reset_less=True)
            ti = Signal(16, name=f"{name}_ti", reset_less=True)
            fj = Signal(name=f"{name}_fj", reset_less=True)
            fi = Signal(name=f"{name}_fi", reset_less=True)
            held = Signal(job_layout, name=f"{name}_job", reset_less=True)
            with m.If(load):
                m.d.sync += [held.eq(job), tj.eq(job.n1), ti.eq(job.m1),
                             fj.eq(job.n_one), fi.eq(job.m_one)]
            with m.Elif(tile_end):
                with m.If(fj):
                    m.d.sync += [tj.eq(held.n1), fj.eq(held.n_one)]
                    with m.If(~fi):
                        m.d.sync += [ti.eq(ti - 1), fi.eq(ti == 1)]
                with m.Else():
                    m.d.sync += [tj.eq(tj - 1), fj.eq(tj == 1)]
            return held, fj & fi

        # Reader outputs → array. The array joins the two streams itself.
        m.d.comb += [
            array.a.payload.data.eq(ra.o.payload.word[:8 * R * L]),
            array.a.payload.last.eq(ra.o.payload.last),
            array.a.valid.eq(ra.o.valid),
            ra.o.ready.eq(array.a.ready),
            array.b.payload.eq(rb.o.payload.word[:8 * L * C]),
            array.b.valid.eq(rb.o.valid),
            rb.o.ready.eq(array.b.ready),
        ]

        # Parameter words → one entry per tile: bias, multiplier, shift.
        prm_layout = data.StructLayout({
            "bias": data.ArrayLayout(signed(32), C),
            "multiplier": data.ArrayLayout(signed(32), C),
            "shift": data.ArrayLayout(signed(8), C),
        })
        m.submodules.prm_fifo = prm_fifo = fifo.SyncFIFOBuffered(width=prm_layout.size, depth=4)
        word_idx = Signal(2)
        # Written (words 0 and 1) before the tile's entry is pushed (word 2): no reset.
        bias_w = Signal(32 * C, name="bias_w", reset_less=True)
        mult_w = Signal(32 * C, name="mult_w", reset_less=True)
        prm_in = Signal(prm_layout)
        m.d.comb += [
            prm_in.bias.eq(bias_w), prm_in.multiplier.eq(mult_w),
            prm_in.shift.eq(rp.o.payload.word[:8 * C]),
            prm_fifo.w_data.eq(prm_in),
            rp.o.ready.eq((word_idx != 2) | prm_fifo.w_rdy),
            prm_fifo.w_en.eq(rp.o.valid & (word_idx == 2)),
        ]
        with m.If(rp.o.valid & rp.o.ready):
            with m.If(word_idx == 0):
                m.d.sync += [bias_w.eq(rp.o.payload.word[:32 * C]), word_idx.eq(1)]
            with m.Elif(word_idx == 1):
                m.d.sync += [mult_w.eq(rp.o.payload.word[:32 * C]), word_idx.eq(2)]
            with m.Else():
                m.d.sync += word_idx.eq(0)

        # Array rows → output stage, with the tile's parameters and the command's scalars.
        # Everything the join looks at is a register, so that `array.o.ready` (which reaches the
        # clock enables of the array's output register) is one LUT on flip-flops: the current
        # command (`rq_job`, loaded from `rq_jobs` while empty; malformed commands are dropped
        # there), the current tile's parameters (`prm`, loaded from `prm_fifo` while empty) and
        # a one-entry register slice on the partial-sum reader. FIFO outputs come straight from
        # LUT RAM, late in the cycle; with these registers they feed only D inputs.
        # The data registers (`prm`, `part_data`, and the held commands) have no reset; their
        # valid flags do.
        rq_valid, prm_valid = Signal(name="rq_valid"), Signal(name="prm_valid")
        prm = Signal(prm_layout, reset_less=True)
        part_valid = Signal(name="part_valid")
        part_data = Signal(32 * C, name="part_data", reset_less=True)
        # `go_plain`: command and parameters held, not `acc`; `go_acc`: likewise, `acc`.
        go_plain, go_acc = Signal(name="go_plain"), Signal(name="go_acc")
        rq_head = Signal(job_layout)
        m.d.comb += rq_head.eq(rq_jobs.r_data)
        have, entered = Signal(), Signal()
        tile_end = entered & array.o.payload.last
        rq_load = ~rq_valid & rq_jobs.r_rdy
        rq_job, rq_last_tile = tile_counter(rq_load, rq_head, tile_end, "rq")
        m.d.comb += [
            have.eq(go_plain | (go_acc & part_valid)),
            array.o.ready.eq(rq.i.ready & have),
            rq.i.valid.eq(array.o.valid & have),
            entered.eq(rq.i.valid & rq.i.ready),
            rq.i.payload.eq(array.o.payload),
            rq.params.raw.eq(rq_job.raw),
            rq.params.zero_point.eq(rq_job.zero_point),
            rq.params.act_min.eq(rq_job.act_min),
            rq.params.act_max.eq(rq_job.act_max),
            rq_jobs.r_en.eq(~rq_valid),
            prm_fifo.r_en.eq(~prm_valid),
        ]
        for c in range(C):
            partial = part_data[32 * c:32 * (c + 1)]
            m.d.comb += [rq.params.bias[c].eq(Mux(rq_job.acc, partial, prm.bias[c])),
                         rq.params.multiplier[c].eq(prm.multiplier[c]),
                         rq.params.shift[c].eq(prm.shift[c])]
        rq_valid_next, prm_valid_next, acc_next = Signal(), Signal(), Signal()
        m.d.comb += [
            rq_valid_next.eq(Mux(rq_valid, ~(tile_end & rq_last_tile),
                                 rq_jobs.r_rdy & ~rq_head.error)),
            acc_next.eq(Mux(rq_valid, rq_job.acc, rq_head.acc)),
            prm_valid_next.eq(Mux(prm_valid, ~tile_end, prm_fifo.r_rdy)),
        ]
        m.d.sync += [
            rq_valid.eq(rq_valid_next), prm_valid.eq(prm_valid_next),
            go_plain.eq(rq_valid_next & prm_valid_next & ~acc_next),
            go_acc.eq(rq_valid_next & prm_valid_next & acc_next),
        ]
        with m.If(~prm_valid):
            m.d.sync += prm.eq(prm_fifo.r_data)
        # The partial-sum slice: one row per result row of an `acc` command.
        part_take = entered & rq_job.acc
        m.d.comb += rd.o.ready.eq(~part_valid | part_take)
        with m.If(rd.o.valid & rd.o.ready):
            m.d.sync += [part_valid.eq(1), part_data.eq(rd.o.payload.word[:32 * C])]
        with m.Elif(part_take):
            m.d.sync += part_valid.eq(0)

        # Writer: one result row per scratchpad word, INT32 or packed INT8. The command being
        # written is a register (`job`, loaded from `wr_jobs` while empty), the write address
        # one too (counting up from `c_addr`), and the end of a command is found from the
        # output stage's `last` (the end of a tile) and a registered last-tile flag.
        # The output stage's words reach the writer through a register slice, so that the
        # scratchpad's grant (`c_wr.req.ready`) ends there instead of stalling the output stage.
        wq = m.submodules.wr_slice = SkidBuffer(layout=rq.o.payload.shape())
        wiring.connect(m, rq.o, wq.i)
        ro = wq.o
        wr_valid = Signal()
        wr_head = Signal(job_layout)
        m.d.comb += wr_head.eq(wr_jobs.r_data)
        wr_load = ~wr_valid & wr_jobs.r_rdy
        wr_addr = Signal(self.addr_width, reset_less=True)    # loaded with `wr_valid`
        done_full = Signal()
        written = Signal()
        wr_tile_end = written & ro.payload.last
        job, wr_last_tile = tile_counter(wr_load, wr_head, wr_tile_end, "wr")
        # Every write waits for a free `done` register (not only a command's last), so that the
        # request's valid does not depend on the end-of-command logic, which then only steers
        # the updates after the grant. `done` is never held for long (the command processor
        # always takes it), so this costs at most a cycle per command.
        can_write = wr_valid & ~job.error & (~done_full | self.done.ready)
        packed = Cat(ro.payload.data[c][:8] for c in range(C))
        m.d.comb += [
            wr_jobs.r_en.eq(~wr_valid),
            self.c_wr.req.valid.eq(ro.valid & can_write),
            ro.ready.eq(self.c_wr.req.ready & can_write),
            written.eq(self.c_wr.req.valid & self.c_wr.req.ready),
            self.c_wr.req.payload.addr.eq(wr_addr),
            self.c_wr.req.payload.we.eq(1),
            self.c_wr.req.payload.wdata.eq(Mux(job.raw, ro.payload.data, packed)),
            self.c_wr.req.payload.wmask.eq(Mux(job.raw, (1 << (4 * C)) - 1, (1 << C) - 1)),
        ]
        finished = Signal()
        m.d.comb += finished.eq((wr_valid & job.error & ~done_full) |
                                (wr_tile_end & wr_last_tile))
        with m.If(wr_load):
            m.d.sync += [wr_valid.eq(1), wr_addr.eq(wr_head.c_addr)]
        with m.Elif(finished):
            m.d.sync += wr_valid.eq(0)
        with m.Elif(written):
            m.d.sync += wr_addr.eq(wr_addr + 1)

        m.d.sync += unwritten.eq(unwritten + accept - finished)

        # Completion: a one-entry output register so `done` never waits on `ready`. Its payload
        # (no reset) is presented only with `done_full`.
        done_data = Signal(self.done_layout, reset_less=True)
        m.d.comb += [self.done.valid.eq(done_full), self.done.payload.eq(done_data)]
        with m.If(self.done.ready):
            m.d.sync += done_full.eq(0)
        with m.If(finished):
            m.d.sync += [done_full.eq(1), done_data.tag.eq(job.tag),
                         done_data.error.eq(job.error)]

        m.d.comb += [
            self.step.eq(array.a.valid & array.a.ready),
            self.busy.eq(~ra.idle | ~rb.idle | ~rp.idle | ~rd.idle | wr_jobs.r_rdy | wr_valid |
                         array.busy | rq.busy | wq.busy | done_full),
        ]
        return m
