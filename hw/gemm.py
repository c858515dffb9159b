"""The GEMM engine: scratchpad → PE array → scratchpad.

One command computes a block of ``m_tiles × n_tiles`` output tiles (each R×C) with a reduction of
``steps`` array steps (K = steps·L, zero-padded by software). Operands are read from the
scratchpad in Ember's packed layout, and raw INT32 result rows are written back.

Packed layout (one scratchpad word per array step and operand)
--------------------------------------------------------------
- A panel, row-tile i, step s: word ``a_addr + i·steps + s``; byte ``r·L + l`` is
  ``A[i·R + r, s·L + l]``.
- B panel, column-tile j, step s: word ``b_addr + j·steps + s``; byte ``c·L + l`` is
  ``B[s·L + l, j·C + c]``.
- Results, in tile order (i outer, j inner) and row order within a tile: word
  ``c_addr + (i·n_tiles + j)·R + r`` holds ``C[i·R + r, j·C + c]`` as INT32 at bytes ``4c..4c+3``;
  the rest of the word is left unwritten. A 2D DMA store (row stride = one word) moves these rows
  straight into a row-major matrix in DRAM.

This needs ``R·L ≤ W``, ``L·C ≤ W`` and ``4·C ≤ W`` for a word of W bytes, so that one read per
operand feeds one array step and one write stores one result row.

Throughput
----------
The A and B readers each issue one read per cycle while they have credit in their response FIFOs
(depth 4 covers the scratchpad's 2-cycle latency), so with conflict-free banks the array does one
step per cycle. The readers accept the next command as soon as they have issued the last read of
the current one, so consecutive commands follow with no bubble; a small FIFO tells the writer
where each command's results go.

Errors: a command with ``steps``, ``m_tiles`` or ``n_tiles`` equal to zero does nothing and
completes with ``error = 1``.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .pe_array import PEArray
from .sram import Scratchpad, sram_port_signature

__all__ = ["GemmEngine", "ERR_MALFORMED"]

ERR_MALFORMED = 1


class _Reader(wiring.Component):
    """Issues the reads of one operand panel and buffers the returned words.

    For each of ``outer`` × ``inner`` tiles it reads ``steps`` consecutive words; the panel base
    advances by ``steps`` per tile along ``advance_on`` ("outer" for A: row-tiles, "inner" for B:
    column-tiles). ``o`` carries the words in order, with ``last`` on each tile's final step.
    """

    # Credit for the read round trip: 2 cycles of scratchpad latency, 2 through the buffered FIFO,
    # 1 to return the credit; 8 leaves slack.
    DEPTH = 8

    def __init__(self, *, addr_width, data_bytes, advance_on):
        self.addr_width, self.data_bytes, self.advance_on = addr_width, data_bytes, advance_on
        super().__init__({
            "start": In(1),
            "base": In(addr_width),
            "steps": In(16),
            "outer": In(16),
            "inner": In(16),
            "idle": Out(1),
            "rd": Out(sram_port_signature(addr_width=addr_width, data_bytes=data_bytes)),
            "o": Out(stream.Signature(data.StructLayout({"word": 8 * data_bytes, "last": 1}))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=8 * self.data_bytes + 1,
                                                        depth=self.DEPTH)
        active = Signal()
        steps, outer, inner = Signal(16), Signal(16), Signal(16)
        s, i, j = Signal(16), Signal(16), Signal(16)
        base, tile = Signal(self.addr_width), Signal(self.addr_width)
        credit = Signal(range(self.DEPTH + 1))   # reads issued whose word is not yet popped

        last_step = s == steps - 1
        m.d.comb += [
            self.rd.req.valid.eq(active & (credit < self.DEPTH)),
            self.rd.req.payload.addr.eq(tile + s),
            self.rd.req.payload.we.eq(0),
        ]
        issued = self.rd.req.valid & self.rd.req.ready
        with m.If(issued):
            with m.If(~last_step):
                m.d.sync += s.eq(s + 1)
            with m.Else():
                m.d.sync += s.eq(0)
                with m.If(j != inner - 1):
                    m.d.sync += j.eq(j + 1)
                    if self.advance_on == "inner":
                        m.d.sync += tile.eq(tile + steps)
                with m.Else():
                    m.d.sync += j.eq(0)
                    if self.advance_on == "inner":
                        m.d.sync += tile.eq(base)
                    else:
                        m.d.sync += tile.eq(tile + steps)
                    with m.If(i != outer - 1):
                        m.d.sync += i.eq(i + 1)
                    with m.Else():
                        m.d.sync += active.eq(0)

        # Free for the next command from the cycle of the final read on, so that commands follow
        # each other with no bubble. `start` comes last, so it wins over the final read's updates.
        final = last_step & (j == inner - 1) & (i == outer - 1)
        m.d.comb += self.idle.eq(~active | (issued & final))
        with m.If(self.start):
            m.d.sync += [active.eq(1), steps.eq(self.steps), outer.eq(self.outer),
                         inner.eq(self.inner), s.eq(0), i.eq(0), j.eq(0),
                         base.eq(self.base), tile.eq(self.base)]

        # The scratchpad answers exactly READ_LATENCY cycles later; carry `last` alongside.
        last_pipe = Signal(Scratchpad.READ_LATENCY)
        m.d.sync += last_pipe.eq(last_pipe << 1 | (issued & last_step))
        m.d.comb += [
            buf.w_en.eq(self.rd.rsp.valid),
            buf.w_data.eq(self.rd.rsp.data | (last_pipe[-1] << (8 * self.data_bytes))),
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
        ``a_addr``, ``b_addr``, ``c_addr`` (word addresses), ``steps``, ``m_tiles``, ``n_tiles``,
        ``tag``.
    done : Out(stream.Signature(done_layout))
        One ``{tag, error}`` per command, after its last result row is written.
    a_rd, b_rd : Out(sram_port_signature(...))
        Operand read ports.
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
            "steps": 16, "m_tiles": 16, "n_tiles": 16, "tag": tag_width,
        })
        self.done_layout = data.StructLayout({"tag": tag_width, "error": 4})
        port = sram_port_signature(addr_width=addr_width, data_bytes=data_bytes)
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "done": Out(stream.Signature(self.done_layout)),
            "a_rd": Out(port),
            "b_rd": Out(port),
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

        # Per-command bookkeeping for the writer: where results go, how many rows, which tag.
        job_layout = data.StructLayout({"c_addr": self.addr_width, "rows": 32,
                                        "tag": self.tag_width, "error": 1})
        m.submodules.jobs = jobs = fifo.SyncFIFOBuffered(width=job_layout.size, depth=4)

        cmd = self.cmd.payload
        malformed = (cmd.steps == 0) | (cmd.m_tiles == 0) | (cmd.n_tiles == 0)
        accept = Signal()
        m.d.comb += [
            self.cmd.ready.eq(ra.idle & rb.idle & jobs.w_rdy),
            accept.eq(self.cmd.valid & self.cmd.ready),
            ra.base.eq(cmd.a_addr), rb.base.eq(cmd.b_addr),
            ra.outer.eq(cmd.m_tiles), ra.inner.eq(cmd.n_tiles),
            rb.outer.eq(cmd.m_tiles), rb.inner.eq(cmd.n_tiles),
            ra.steps.eq(cmd.steps), rb.steps.eq(cmd.steps),
            ra.start.eq(accept & ~malformed), rb.start.eq(accept & ~malformed),
        ]
        job_in = Signal(job_layout)
        m.d.comb += [
            job_in.c_addr.eq(cmd.c_addr),
            job_in.rows.eq(cmd.m_tiles * cmd.n_tiles * R),
            job_in.tag.eq(cmd.tag),
            job_in.error.eq(malformed),
            jobs.w_data.eq(job_in),
            jobs.w_en.eq(accept),
        ]

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

        # Writer: one result row per scratchpad word.
        job = Signal(job_layout)
        m.d.comb += job.eq(jobs.r_data)
        row = Signal(32)
        m.d.comb += [
            self.c_wr.req.payload.addr.eq(job.c_addr + row),
            self.c_wr.req.payload.we.eq(1),
            self.c_wr.req.payload.wdata.eq(array.o.payload.data),
            self.c_wr.req.payload.wmask.eq((1 << (4 * C)) - 1),
        ]
        # A command finishes only into an empty completion register (at most a one-cycle bubble).
        done_full = Signal()
        last_row = row == job.rows - 1
        m.d.comb += [
            self.c_wr.req.valid.eq(array.o.valid & jobs.r_rdy & ~job.error &
                                   (~last_row | ~done_full)),
            array.o.ready.eq(self.c_wr.req.ready & jobs.r_rdy & ~job.error &
                             (~last_row | ~done_full)),
        ]
        finished = Signal()
        with m.If(jobs.r_rdy & job.error & ~done_full):
            m.d.comb += finished.eq(1)
        with m.If(self.c_wr.req.valid & self.c_wr.req.ready):
            with m.If(last_row):
                m.d.comb += finished.eq(1)
                m.d.sync += row.eq(0)
            with m.Else():
                m.d.sync += row.eq(row + 1)

        # Completion: a one-entry output register so `done` never waits on `ready`.
        m.d.comb += [self.done.valid.eq(done_full)]
        with m.If(self.done.ready):
            m.d.sync += done_full.eq(0)
        m.d.comb += jobs.r_en.eq(finished)
        with m.If(finished):
            m.d.sync += [done_full.eq(1), self.done.payload.tag.eq(job.tag),
                         self.done.payload.error.eq(job.error)]

        m.d.comb += self.step.eq(array.a.valid & array.a.ready)
        m.d.comb += self.busy.eq(~ra.idle | ~rb.idle | jobs.r_rdy | array.busy | done_full)
        return m
