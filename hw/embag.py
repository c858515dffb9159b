"""The embedding-bag engine: gathers table rows from DRAM through the DMA and pools them.

Semantics (golden model: ``sim/golden_embag.py``)
-------------------------------------------------
One command pools ``bags`` bags of one INT8 table ``W[rows, dim]`` held in DRAM (Caffe2
SparseLengthsSum, PyTorch ``nn.EmbeddingBag``). Bag ``b`` takes the next ``lengths[b]`` entries of
the index list. Output ``Y[b]`` is an INT32 vector of ``dim`` lanes:

- ``MODE_SUM`` (0): ``Σ W[i]``;
- ``MODE_MEAN`` (1): the sum divided by the bag's length, rounded half away from zero:
  ``sign(s)·floor((|s| + floor(n/2)) / n)``;
- ``MODE_WEIGHTED`` (2): ``Σ w_j·W[i_j]`` with **int8** per-sample weights (one per index); the
  int8×int8 products are exact and accumulate in int32.

Sums wrap in int32 (two's complement). An empty bag gives zeros. ``dim`` is any value in
``[1, max_dim]``. TBE (several tables, one output row of ``Σ dim`` lanes per bag) is one command
per table: ``out_stride`` is the output row pitch and ``out_addr`` the table's column offset, so
the tables' pooled vectors land side by side in the same rows.

With ``requant`` the INT32 vectors (after the mean's division) go through the GEMM's output
stage (``hw/requant.py``: TFLite requantisation, bit-exact) with the command's scalar
``multiplier``, ``shift``, ``zero_point``, ``act_min`` and ``act_max`` for every lane and no
bias, and the output is ``dim`` INT8 bytes per bag (``out_addr``/``out_stride`` then in any
byte alignment).

A bag longer than the lists a command can hold continues across commands: with ``cont_out`` the
command's last bag is left open (not written; its partial sums stay in the accumulators), and
the next command, with ``cont_in``, continues it as its bag 0 (its mean divides by the whole
length). Nothing else may run in the engine between the two.

Command (``cmd``, :attr:`EmbeddingBagEngine.cmd_layout`, least significant field first)
---------------------------------------------------------------------------------------
==============  ====================  =============================================================
field           width                 meaning
==============  ====================  =============================================================
``idx_addr``    ``sram_addr_width``   scratchpad word address of the int32 index list
``len_addr``    ``sram_addr_width``   word address of the int32 per-bag lengths
``wgt_addr``    ``sram_addr_width``   word address of the int8 per-sample weights (weighted mode)
``out_addr``    ``SB``                scratchpad byte address of bag 0's output (multiple of 4)
``out_stride``  ``SB``                bytes from one bag's output to the next (multiple of 4)
``table_addr``  ``addr_width``        DRAM byte address of row 0 (any alignment)
``rows``        32                    table rows: an index must lie in ``[0, rows)``
``row_stride``  ``addr_width``        DRAM bytes from one row to the next (any value)
``dim``         16                    bytes per row = INT32 lanes per output, 1..``max_dim``
``bags``        32                    number of bags (0 is a valid, empty job)
``mode``        2                     0 sum, 1 mean, 2 weighted sum
``requant``     1                     1: INT8 output through the output stage
``multiplier``  32                    INT32 quantised multiplier (requant)
``shift``       6                     signed shift, ``[-31, 31]``, positive left (requant)
``zero_point``  8                     INT8 output zero point (requant)
``act_min``     8                     INT8 clamp, lower bound (requant)
``act_max``     8                     INT8 clamp, upper bound (requant)
``cont_in``     1                     bag 0 continues the bag the previous command left open
``cont_out``    1                     the last bag is left open for the next command
``tag``         ``tag_width``         returned in the completion
==============  ====================  =============================================================

(``SB = sram_addr_width + log2(data_bytes)``.) The lists are packed little-endian from their
first word: index/length ``j`` is bytes ``4j..4j+3``, weight ``j`` is byte ``j``. They are put in
the scratchpad beforehand by ordinary DMA loads. Bag ``b``'s output is ``dim`` INT32 values at
bytes ``out_addr + b·out_stride + 4·d`` (INT8 values at ``out_addr + b·out_stride + d`` with
``requant``); nothing else in the scratchpad is written except the staging ring.

Completion (``done``): ``{tag, error}``; the error codes are

- 0 ``ERR_OK``;
- 1 ``ERR_INDEX``: an index outside ``[0, rows)``; ``error_bag``/``error_pos`` name its bag and
  its position in the bag. It is refused before any descriptor is made for it;
- 2 ``ERR_LENGTH``: a negative length, or a zero length for a continued piece (bag 0 with
  ``cont_in``, the last bag with ``cont_out``) (``error_bag`` is that bag, ``error_pos`` 0);
- 3 ``ERR_MALFORMED``: ``dim`` is 0 or above ``max_dim``, ``mode`` is 3, ``out_addr`` or
  ``out_stride`` is not a multiple of 4 (INT32 output), ``cont_in`` or ``cont_out`` with
  ``bags`` 0, or ``cont_in`` when the previous command left no bag open;
- 4 ``ERR_RANGE``: the output area runs past the end of the scratchpad;
- 5 ``ERR_CANCELLED``: ``cancel`` was raised while the job ran; ``error_bag`` is the first bag
  not written (and ``error_pos`` the rows of it already pooled);
- ``8 + e`` ``ERR_GATHER``: the gather of a row completed with DMA error ``e`` (1 SLVERR,
  2 DECERR; 3 and 4 would be an engine bug); ``error_bag``/``error_pos`` name the row.

Codes 3 and 4 are decided before anything happens. For the others the job stops at the failing
row (or where ``cancel`` found it): every bag before the failing one is written, the failing bag
and everything after it are not, no descriptor is made after an index or length error, and the
job completes once every gather it issued has completed, so the next job starts clean.
``error_code``, ``error_bag``, ``error_pos`` hold the last failing job's values (sticky until the
next error). A bag left open is kept only by a successful ``cont_out`` command and is dropped by
the next command whatever it is.

Structure
---------
Issuer
    Three list readers share one scratchpad port (``list_rd``, through a register slice) and
    prefetch the lengths, indices and weights. Per row, the issuer checks the
    index against ``rows`` (an out-of-range index never becomes a DMA read), allocates a ring
    slot and emits a DMA load descriptor on
    ``gather`` (``dram_addr = table_addr + index·row_stride`` through one registered multiply,
    ``rows = 1``, ``row_bytes = dim``, destination = the slot). It also pushes one entry per row
    (weight, first/last of bag) into a metadata FIFO of ``slots`` entries, plus one entry per
    empty bag, a final ``END``, or the error. One descriptor per cycle.
Staging ring
    Two halves of ``ring_half`` words at ``ring_base`` and ``ring_base + ring_half``; a slot is
    ``w = ceil(dim / data_bytes)`` words, and consecutive slots alternate between the halves. Up to
    ``min(slots, 2·floor(ring_half / w))`` gathers are in flight, so DRAM latency is hidden.
    Software places the two halves in two banks that nothing else uses during the job.
Completions
    ``gather_done`` is always ready; completions arrive in order (the DMA completes loads in
    order), each one advances the completion pointer. The first DMA error is remembered with its
    slot; the issuer stops at once.
Pooler
    Reads each completed slot (``slot_rd``, one word per cycle; each read is decided a cycle
    ahead into a request register, so the scratchpad sees registers) in order and adds its INT8
    lanes (times the weight) into INT32 accumulators: a memory of two buffers of
    ``ceil(max_dim / W)`` words of ``W`` lanes, read-modify-write in two stages (the read port is
    transparent to the write port, so back-to-back rows of one word need no stall). Bags
    alternate between the two buffers, so one bag is written out while the next accumulates.
Drain and writer
    Reads a finished buffer as INT32 words of ``W/4`` lanes, divides them in mean mode (an
    iterative divider of ``div_steps`` quotient bits per two cycles on ``W/4`` lanes at once,
    two words interleaved),
    requantises them with ``requant`` (a ``Requant`` of ``W/4`` lanes; four results, or the
    last ones of a row, are packed into one word), and realigns them to the output address with
    the DMA's byte realigner (``out_addr`` and ``out_stride`` need only be multiples of 4, or
    of 1 for INT8, so TBE columns pack densely); partial words are written with byte masks
    (``out_wr``, from a small FIFO after the realigner). The divider works in radix
    ``2**div_steps``: ``2**div_steps - 1`` subtractors per lane compare the partial remainder
    with the divisor's multiples in parallel, one cycle, and the registered one-hot digit
    selects the next remainder the next cycle, so a cycle is one carry chain or one select.

Why the ring alternates halves
    Every gathered word is written into the ring by the DMA and read back by the pooler, and a
    scratchpad bank of single-ported memory does one access per cycle. If the two met in one
    bank, round-robin would give each half the cycles and cap the gather rate at 50% of the bus.
    So slots alternate between two banks. The top builds the banks as dual-ported pairs with
    the DMA on one side and the engines on the other (``Scratchpad(b_side=...)``, "Dual-ported
    pairs"), and the ring (by default the last two banks, :func:`embag_params`, one pair) is
    then written and read on different sides: the DMA (and so the AXI R channel) never waits
    for the pooler. With single-ported banks the pooler's reads (``slot_rd``) should yield each
    bank to the DMA's writes (``Scratchpad(yields=...)``): the pooler then settles into reading
    one bank while the DMA fills the other. This only affects timing: without either the engine
    is still correct, it just competes with the DMA (measured on ``tiny``, dim 64, no latency:
    0.79 of the bus instead of 0.98).

Throughput: one descriptor per cycle, one slot word pooled per cycle, one output word per cycle
(sum/weighted); mean costs about ``ceil(33 / div_steps) + 2`` cycles per output word. The bus is
the limit once ``outstanding`` rows of ``ceil(dim / W)`` beats cover the DRAM latency (Little's
law). Measured (``tests/test_embag.py``, aligned rows, uniform indices, fraction of the bus's
bytes per cycle from command to completion): dim 64 at latency 0: 0.98 (``tiny``), 0.95
(``default``, one-beat rows); at latency 100, ``outstanding`` 8 (``tiny``) and 16 give 0.57 and
0.15, the Little's-law bound; with ``outstanding = 64``: 0.96 (``tiny``), 0.59 (``default``, the
bound for one-beat rows), and dim 256 on ``default`` 0.93. One job runs at a time; the next is
accepted when the previous has completed.

In the top level (``hw/top.py``) the command processor's queue 3 feeds the engine through
:class:`EmbagCommands`, which builds engine commands from TABLE and POOL queue commands.
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .dma import DMA, _Realigner
from .requant import Requant
from .skid import SkidBuffer
from .sram import Scratchpad, _or_tree, sram_port_signature

__all__ = [
    "EmbeddingBagEngine", "GatherArbiter", "embag_params", "MODE_SUM", "MODE_MEAN",
    "MODE_WEIGHTED", "ERR_OK", "ERR_INDEX", "ERR_LENGTH", "ERR_MALFORMED", "ERR_RANGE",
    "ERR_CANCELLED", "ERR_GATHER", "ERR_WIDTH", "EmbagCommands", "KIND_POOL", "KIND_TABLE",
]

MODE_SUM, MODE_MEAN, MODE_WEIGHTED = 0, 1, 2
ERR_OK, ERR_INDEX, ERR_LENGTH, ERR_MALFORMED, ERR_RANGE, ERR_CANCELLED, ERR_GATHER = \
    0, 1, 2, 3, 4, 5, 8
ERR_WIDTH = 4

# Metadata FIFO entry kinds (issuer → pooler) and pooler → drain request kinds.
_M_GATHER, _M_EMPTY, _M_END, _M_ERROR = 0, 1, 2, 3
_K_BAG, _K_EMPTY, _K_END, _K_ABORT = 0, 1, 2, 3
_DRAIN_DEPTH = 8     # pooler → drain requests
_SRC_DEPTH = 4       # drain's accumulator words waiting for the divider / realigner
_ROWS_DEPTH = 4      # output rows waiting in front of the realigner
_OUT_DEPTH = 3       # output writes between the realigner and out_wr


def _check_int(name, value, minimum, maximum=None, *, pow2=False):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bound}, not {value!r}")
    if pow2 and value & (value - 1):
        raise ValueError(f"{name} must be a power of two, not {value!r}")


def embag_params(config, **changes):
    """Engine parameters for an :class:`~hw.config.EmberConfig`: the scratchpad geometry, and the
    staging ring in the scratchpad's last two banks. ``changes`` override any of them."""
    words = config.sram_banks * config.sram_depth
    params = dict(
        data_bytes=config.bus_bytes, addr_width=config.axi_addr_width,
        sram_addr_width=words.bit_length() - 1, sram_words=words,
        tag_width=16, max_dim=1024,
        ring_base=(config.sram_banks - 2) * config.sram_depth, ring_half=config.sram_depth,
        slots=256, div_steps=2,
    )
    unknown = set(changes) - set(params)
    if unknown:
        raise TypeError(f"unknown engine parameters {sorted(unknown)!r}")
    params.update(changes)
    return params


class GatherArbiter(wiring.Component):
    """2:1 arbiter in front of the DMA's load queue, completions routed back by a tag bit.

    Two descriptor streams with ``tag_width``-bit tags (``load``: the command processor's load
    queue; ``gather``: the embedding-bag engine) share the DMA's ``load`` queue, whose tags are
    one bit wider: the arbiter puts the source in bit ``tag_width`` (0 load, 1 gather). The DMA
    completes loads in order, and each completion goes back to the stream named by that bit, with
    the bit removed. Arbitration is round-robin per descriptor: while both wait, they alternate.
    A descriptor offered on ``dma`` stays there, unchanged, until the DMA takes it.

    Parameters
    ----------
    addr_width, sram_addr_width, data_bytes : int
        As for :class:`~hw.dma.DMA`.
    tag_width : int
        Tag width of the two inputs; the DMA is built with ``tag_width + 1``.

    Members
    -------
    load, gather : In(stream.Signature(descriptor layout, tag_width))
    load_done, gather_done : Out(stream.Signature(completion layout, tag_width))
    dma : Out(stream.Signature(descriptor layout, tag_width + 1))
        To ``DMA.load``.
    dma_done : In(stream.Signature(completion layout, tag_width + 1))
        From ``DMA.load_done``.
    """

    def __init__(self, *, addr_width, sram_addr_width, data_bytes, tag_width):
        _check_int("tag_width", tag_width, 1, 31)
        self.tag_width = tag_width
        geo = dict(addr_width=addr_width, sram_addr_width=sram_addr_width, data_bytes=data_bytes)
        self.in_layout = DMA.make_descriptor_layout(**geo, tag_width=tag_width)
        self.out_layout = DMA.make_descriptor_layout(**geo, tag_width=tag_width + 1)
        in_done = DMA.make_done_layout(tag_width=tag_width)
        out_done = DMA.make_done_layout(tag_width=tag_width + 1)
        super().__init__({
            "load": In(stream.Signature(self.in_layout)),
            "gather": In(stream.Signature(self.in_layout)),
            "load_done": Out(stream.Signature(in_done)),
            "gather_done": Out(stream.Signature(in_done)),
            "dma": Out(stream.Signature(self.out_layout)),
            "dma_done": In(stream.Signature(out_done)),
        })

    def elaborate(self, platform):
        m = Module()
        T = self.tag_width
        ld, ga, o = self.load, self.gather, self.dma

        prefer_gather = Signal()   # whom to serve when both wait
        held = Signal()            # a descriptor is on `dma`, not yet taken
        held_sel = Signal()
        sel = Signal()             # 1: gather
        with m.If(held):
            m.d.comb += sel.eq(held_sel)
        with m.Else():
            m.d.comb += sel.eq(Mux(ld.valid & ga.valid, prefer_gather, ga.valid))
        m.d.comb += [
            o.valid.eq(Mux(sel, ga.valid, ld.valid)),
            ld.ready.eq(o.ready & ~sel),
            ga.ready.eq(o.ready & sel),
            o.payload.tag.eq(Cat(Mux(sel, ga.payload.tag, ld.payload.tag), sel)),
        ]
        for name, _ in self.in_layout:
            if name != "tag":
                m.d.comb += getattr(o.payload, name).eq(
                    Mux(sel, getattr(ga.payload, name), getattr(ld.payload, name)))
        # Hold the choice only while a descriptor waits on `dma`: should an input withdraw its
        # valid anyway (the command processor's soft reset), the other is not locked out.
        m.d.sync += [held.eq(o.valid & ~o.ready), held_sel.eq(sel)]
        with m.If(o.valid & o.ready):
            m.d.sync += prefer_gather.eq(~sel)

        d = self.dma_done
        src = d.payload.tag[T]
        for out, mine in ((self.load_done, ~src), (self.gather_done, src)):
            m.d.comb += [
                out.valid.eq(d.valid & mine),
                out.payload.tag.eq(d.payload.tag[:T]),
                out.payload.error.eq(d.payload.error),
            ]
        m.d.comb += d.ready.eq(Mux(src, self.gather_done.ready, self.load_done.ready))
        return m


class _ListReader(wiring.Component):
    """Streams the elements of a packed list from consecutive scratchpad words.

    Reads run ahead of consumption by up to :attr:`DEPTH` words. ``req`` offers the next word
    address; the core takes it (``req.ready``) into its registered scratchpad request, and the
    word counts against :attr:`DEPTH` from then on. ``o`` gives one element per cycle (lane 0 of
    each word first), from a register slice: the consumer's decision starts at flip-flops, its
    multiplies and compares included. With ``check``, ``o.payload.bad`` flags an element outside
    ``[0, limit)``, compared as the word arrives (``limit`` held stable while the list is read);
    ``neg`` and ``zero`` flag a negative and a zero element, compared as the element enters the
    slice. So no carry chain sits between the FIFO and the consumer's decision.
    """

    DEPTH = 4

    def __init__(self, *, addr_width, data_bytes, elem_bits, check=False):
        self.data_bytes, self.elem_bits, self.check = data_bytes, elem_bits, check
        super().__init__({
            "start": In(1),
            "base": In(addr_width),
            "req": Out(stream.Signature(addr_width)),
            "rsp_valid": In(1),
            "rsp_data": In(8 * data_bytes),
            "o": Out(stream.Signature(data.StructLayout({
                "value": signed(elem_bits), "bad": 1, "neg": 1, "zero": 1}))),
            "limit": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        per = 8 * self.data_bytes // self.elem_bits
        E = self.elem_bits
        flags = per if self.check else 0
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=8 * self.data_bytes + flags,
                                                        depth=self.DEPTH)
        bad_in = Cat((self.rsp_data.word_select(j, E).as_signed() < 0)
                     | (self.rsp_data.word_select(j, E) >= self.limit)
                     for j in range(flags))
        active = Signal()
        addr = Signal.like(self.req.payload, reset_less=True)      # loaded by `start`
        credit = Signal(range(self.DEPTH + 1))   # words requested and not yet consumed
        lane = Signal(range(per))
        issued = self.req.valid & self.req.ready
        pop = Signal()
        # The FIFO's head word in a register (refilled in the cycle it is consumed), so that the
        # consumer's decision starts at flip-flops and not at the FIFO's LUT-RAM output.
        head_valid = Signal()
        head = Signal(8 * self.data_bytes + flags, reset_less=True)    # qualified by head_valid
        with m.If(~head_valid | pop):
            m.d.sync += [head_valid.eq(buf.r_rdy), head.eq(buf.r_data)]
        m.d.comb += [
            self.req.valid.eq(active & (credit != self.DEPTH)),
            self.req.payload.eq(addr),
            buf.w_en.eq(self.rsp_valid),
            buf.w_data.eq(Cat(self.rsp_data, bad_in)),
            buf.r_en.eq(~head_valid | pop),
        ]
        # The element, selected from the head word, enters the output slice with its flags.
        m.submodules.out = out = SkidBuffer(layout=self.o.payload.shape())
        wiring.connect(m, out.o, wiring.flipped(self.o))
        elem = head.word_select(lane, E).as_signed()
        m.d.comb += [
            out.i.valid.eq(head_valid),
            out.i.payload.value.eq(elem),
            out.i.payload.bad.eq(head[8 * self.data_bytes:].bit_select(lane, 1) if flags else 0),
            out.i.payload.neg.eq(elem < 0),
            out.i.payload.zero.eq(elem == 0),
            pop.eq(out.i.valid & out.i.ready & (lane == per - 1)),
        ]
        with m.If(issued):
            m.d.sync += addr.eq(addr + 1)
        with m.If(out.i.valid & out.i.ready):
            m.d.sync += lane.eq(Mux(lane == per - 1, 0, lane + 1))
        m.d.sync += credit.eq(credit + issued - pop)
        with m.If(self.start):
            m.d.sync += [active.eq(1), addr.eq(self.base)]
        return m


class _MeanDivider(wiring.Component):
    """``sign(s)·floor((|s| + floor(n/2)) / n)`` on ``lanes`` INT32 lanes with one divisor ``n``.

    Restoring division of the 33-bit ``|s| + floor(n/2)`` by ``n`` (≥ 1) in radix ``2**steps``,
    each quotient digit in two pipeline stages, with two words (two *contexts*) interleaved so
    that both stages work every cycle. The two contexts' registers swap every cycle between the
    stage-1 side (``x``) and the stage-2 side (``d``):

    - stage 1 (``x`` → ``d``): the partial remainder shifted by a digit minus the ``2**steps - 1``
      multiples of ``n`` (held in registers per lane), in parallel; the candidates' low 32 bits
      and the digit as a one-hot code (from the differences' signs) go into registers, so this
      stage is one carry chain and one LUT;
    - stage 2 (``d`` → ``x``): the one-hot digit selects the next remainder among the registered
      candidates (an AND-OR tree from flip-flops) and is appended to the quotient.

    A word is loaded into the context moving to ``x`` (its raw sum and ``n``); its first round
    trip (``PREP``) forms ``|s| + floor(n/2)`` and the multiples of ``n``, then ``ceil(33 /
    steps)`` round trips give the digits, and a last one (``FIX``) restores the sign into the
    output register. Loads and outputs alternate between the two contexts, so words leave in
    order. One word every ``ceil(33 / steps) + 2`` cycles (two in flight, each taking twice as
    long); the input's ``ready`` depends on registers only.
    """

    BITS = 33
    IDLE, PREP, RUN, FIX = 0, 1, 2, 3

    def __init__(self, *, lanes, steps):
        self.lanes, self.steps = lanes, steps
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"data": 32 * lanes, "count": 32}))),
            "o": Out(stream.Signature(32 * lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        U, L = self.steps, self.lanes
        IDLE, PREP, RUN, FIX = self.IDLE, self.PREP, self.RUN, self.FIX
        cycles = -(-self.BITS // U)
        NB = cycles * U                       # dividend bits, zero-padded on top
        RW = 32 + U + 1                       # a remainder shifted in, and its difference's sign
        odd = list(range(1, 1 << U, 2))       # stored multiples; the even ones are shifts

        # Only the contexts' state (`st`, `cid`, `it`), the turns and `o_full` are reset. The
        # lanes' registers have no reset: a load sets `neg`, `num`, `quo` and `n`, the PREP round
        # trip the other multiples and (through `hot` = 1, `cand[0]` = 0) the remainder, and
        # `o_data` is read only while `o_full`.
        def ctx(side):
            c = {
                "st": Signal(2, name=f"st_{side}"), "cid": Signal(name=f"cid_{side}",
                                                                  init=side == "d"),
                "it": Signal(range(cycles + 1), name=f"it_{side}"),
                "neg": [Signal(name=f"neg{i}_{side}", reset_less=True) for i in range(L)],
                "num": [Signal(NB, name=f"num{i}_{side}", reset_less=True) for i in range(L)],
                "quo": [Signal(NB, name=f"quo{i}_{side}", reset_less=True) for i in range(L)],
                # Per lane copies of the multiples j·n (odd j), so no register feeds every lane.
                "mult": [{j: Signal(32 + U, name=f"mult{i}_{j}_{side}", reset_less=True)
                          for j in odd}
                         for i in range(L)],
            }
            return c

        x, d = ctx("x"), ctx("d")
        rem_x = [Signal(32, name=f"rem{i}_x", reset_less=True) for i in range(L)]
        cand_d = [[Signal(32, name=f"cand{i}_{j}_d", reset_less=True) for j in range(1 << U)]
                  for i in range(L)]
        hot_d = [Signal(1 << U, name=f"hot{i}_d", reset_less=True) for i in range(L)]
        in_turn = Signal(init=1)              # the context (cid) that takes the next word
        out_turn = Signal(init=1)             # the context that gives the next result
        o_full = Signal()
        o_data = Signal(32 * L, reset_less=True)

        def multiple(mults, j):
            """j·n from the stored odd multiples: an even j is a shifted odd one."""
            s = 0
            while not j >> s & 1:
                s += 1
            return mults[j >> s] << s

        # ---- stage 1: x → d
        prep_x = x["st"] == PREP
        m.d.sync += [d["st"].eq(x["st"]), d["cid"].eq(x["cid"]), d["it"].eq(x["it"])]
        for i in range(L):
            nn, r = x["num"][i], rem_x[i]
            m.d.sync += [d["neg"][i].eq(x["neg"][i]), d["quo"][i].eq(x["quo"][i])]
            shifted = Signal(32 + U, name=f"div{i}_sh")
            m.d.comb += shifted.eq(Cat(nn[NB - U:], r))
            ge = [Const(1, 1)]
            for j in range(1, 1 << U):
                dj = Signal(RW, name=f"div{i}_d{j}")
                m.d.comb += dj.eq(shifted - multiple(x["mult"][i], j))
                ge.append(~dj[RW - 1])
                m.d.sync += cand_d[i][j].eq(dj[:32])
            ge.append(Const(0, 1))
            hot = Cat(ge[j] & ~ge[j + 1] for j in range(1 << U))
            m.d.sync += [
                cand_d[i][0].eq(Mux(prep_x, 0, shifted[:32])),
                hot_d[i].eq(Mux(prep_x, 1, hot)),
            ]
            # PREP: |s| + floor(n/2) as one adder, (s ^ sign) + floor(n/2) + sign, the carry-in
            # entering as a low bit of both operands; and the multiples of n.
            n = x["mult"][i][1][:32]
            sneg = x["neg"][i]
            total = Signal(34, name=f"num_in{i}")
            m.d.comb += total.eq(Cat(sneg, nn[:32] ^ sneg.replicate(32))
                                 + Cat(sneg, (n >> 1)[:31]))
            m.d.sync += d["num"][i].eq(Mux(prep_x, total[1:], nn << U))
            for j in odd:
                terms = [n << b for b in range(U) if j >> b & 1]
                m.d.sync += d["mult"][i][j].eq(
                    Mux(prep_x, sum(terms[1:], terms[0]), x["mult"][i][j]))

        # ---- stage 2: d → x
        run_d = d["st"] == RUN
        fix_d = d["st"] == FIX
        mine_in = d["cid"] == in_turn
        mine_out = d["cid"] == out_turn
        fire = fix_d & mine_out & (~o_full | self.o.ready)
        m.d.comb += [
            self.i.ready.eq(mine_in & ((d["st"] == IDLE) | (fix_d & mine_out & ~o_full))),
            self.o.valid.eq(o_full),
            self.o.payload.eq(o_data),
        ]
        load = self.i.valid & self.i.ready
        m.d.sync += [x["cid"].eq(d["cid"]), x["st"].eq(d["st"])]
        m.d.sync += x["it"].eq(d["it"] + run_d)
        with m.If(run_d & (d["it"] == cycles - 1)):
            m.d.sync += x["st"].eq(FIX)
        with m.If(d["st"] == PREP):
            m.d.sync += x["st"].eq(RUN)
        with m.If(self.o.ready):
            m.d.sync += o_full.eq(0)
        with m.If(fire):
            m.d.sync += [x["st"].eq(IDLE), o_full.eq(1), out_turn.eq(~out_turn)]
            for i in range(L):
                # The sign as a second adder: -q = ~q + 1, again with the carry-in as low bits.
                fixed = Signal(34, name=f"div{i}_fix")
                ng, q = d["neg"][i], d["quo"][i]
                m.d.comb += fixed.eq(Cat(ng, q[:32] ^ ng.replicate(32)) + Cat(ng, Const(0, 32)))
                m.d.sync += o_data.word_select(i, 32).eq(fixed[1:33])
        for i in range(L):
            digit = Signal(U, name=f"div{i}_q")
            hd = hot_d[i]
            m.d.comb += digit.eq(_or_tree([Mux(hd[j], j, 0) for j in range(1, 1 << U)]))
            m.d.sync += [
                rem_x[i].eq(_or_tree([Mux(hd[j], cand_d[i][j], 0) for j in range(1 << U)])),
                x["neg"][i].eq(d["neg"][i]), x["num"][i].eq(d["num"][i]),
                x["quo"][i].eq(Mux(run_d, Cat(digit, d["quo"][i])[:NB], d["quo"][i])),
            ]
            for j in odd:
                m.d.sync += x["mult"][i][j].eq(d["mult"][i][j])
        with m.If(load):
            m.d.sync += [x["st"].eq(PREP), x["it"].eq(0), in_turn.eq(~in_turn)]
            for i in range(L):
                s = self.i.payload.data.word_select(i, 32)
                m.d.sync += [x["neg"][i].eq(s[31]), x["num"][i].eq(s), x["quo"][i].eq(0),
                             x["mult"][i][1].eq(self.i.payload.count)]
        return m


class _Core(wiring.Component):
    """The datapath of one job: issuer, completions, pooler, drain and writer.

    Started by ``start`` with ``job`` held stable; reports ``finished`` (one cycle) with
    ``code``/``err_bag``/``err_pos``; ``quiet`` once no gather and no list read is in flight. The
    engine then resets it (``ResetInserter``) for the next job.

    That reset is kept to the control: valid flags, states, pointers, counters and FIFO levels.
    The datapath registers (payloads, operands, products, addresses and values carried along
    with a valid, the divider's lanes) are ``reset_less``: each is loaded before it is read, or
    read only under a valid flag that is reset, so after a clear (or a reset in the middle of a
    job) no stale value is used. This keeps the wide registers off the clear's fanout.
    """

    def __init__(self, *, p, job_layout, ptr_layout):
        self.p = p
        self.job_layout, self.ptr_layout = job_layout, ptr_layout
        AW, D, T = p["sram_addr_width"], p["data_bytes"], p["tag_width"]
        desc = DMA.make_descriptor_layout(addr_width=p["addr_width"], sram_addr_width=AW,
                                          data_bytes=D, tag_width=T)
        port = sram_port_signature(addr_width=AW, data_bytes=D)
        super().__init__({
            "start": In(1),
            "cancel": In(1),
            "job": In(job_layout),
            "gather": Out(stream.Signature(desc)),
            "gather_done": In(stream.Signature(DMA.make_done_layout(tag_width=T))),
            "list_rd": Out(port),
            "slot_rd": Out(port),
            "out_wr": Out(port),
            "finished": Out(1),
            "code": Out(ERR_WIDTH),
            "err_bag": Out(32),
            "err_pos": Out(32),
            "quiet": Out(1),
            # A bag left open by the previous job (``cont_in``), and the one this job leaves open.
            "carry_in": In(data.StructLayout({"buf": 1, "cnt": 32})),
            "carry_out": Out(data.StructLayout({"buf": 1, "cnt": 32})),
        })

    # Ring pointers: (offset in the half, half, lap). Slots alternate halves; within a half they
    # are `w` words apart and restart at offset 0 (toggling the lap) when the next would not fit.
    def _next_ptr(self, m, ptr, name):
        job = self.job
        nxt = Signal(self.ptr_layout, name=name)
        off_n = Signal(len(ptr.off) + 1, name=f"{name}_off")
        m.d.comb += off_n.eq(ptr.off + job.w)
        with m.If(~ptr.half):
            m.d.comb += [nxt.off.eq(ptr.off), nxt.half.eq(1), nxt.lap.eq(ptr.lap)]
        with m.Elif(off_n > job.lim):
            m.d.comb += [nxt.off.eq(0), nxt.half.eq(0), nxt.lap.eq(~ptr.lap)]
        with m.Else():
            m.d.comb += [nxt.off.eq(off_n), nxt.half.eq(0), nxt.lap.eq(ptr.lap)]
        return nxt

    def _slot_word(self, ptr):
        p = self.p
        return (p["ring_base"] + Mux(ptr.half, p["ring_half"], 0) + ptr.off)[:p["sram_addr_width"]]

    def elaborate(self, platform):
        m = Module()
        p, job = self.p, self.job
        D, AW, T = p["data_bytes"], p["sram_addr_width"], p["tag_width"]
        k = D.bit_length() - 1
        max_w = -(-p["max_dim"] // D)
        max_nsrc = -(-4 * p["max_dim"] // D)
        wb_bits = (max_w - 1).bit_length()        # accumulator words per buffer: 2**wb_bits
        R = Scratchpad.READ_LATENCY
        mode_w = job.mode == MODE_WEIGHTED

        # Ring pointers: issue (i), completion (c), pooler read (r).
        ptr_i = Signal(self.ptr_layout)
        ptr_c = Signal(self.ptr_layout)
        ptr_r = Signal(self.ptr_layout)
        next_i = self._next_ptr(m, ptr_i, "next_i")
        next_c = self._next_ptr(m, ptr_c, "next_c")
        # The slot after `ptr_r`, in a register (advanced with `ptr_r`), so that the pooler's
        # flags below compare registers only.
        next_r = Signal(self.ptr_layout, init={"off": 0, "half": 1, "lap": 0})
        after_r = self._next_ptr(m, next_r, "after_r")

        # ---------------------------------------------------------------------------------
        # Completions: in order; remember the first failing slot.
        err_valid = Signal()
        err_ptr = Signal(self.ptr_layout, reset_less=True)      # both qualified by err_valid
        err_dma = Signal(3, reset_less=True)
        gd = self.gather_done
        m.d.comb += gd.ready.eq(1)
        with m.If(gd.valid):
            m.d.sync += ptr_c.eq(next_c)
            with m.If((gd.payload.error != 0) & ~err_valid):
                m.d.sync += [err_valid.eq(1), err_ptr.eq(ptr_c), err_dma.eq(gd.payload.error)]

        # ---------------------------------------------------------------------------------
        # List readers on one port: indices, weights, lengths (fixed priority; each stops when
        # its buffer is full, so none starves).
        readers = [
            _ListReader(addr_width=AW, data_bytes=D, elem_bits=32, check=True),
            _ListReader(addr_width=AW, data_bytes=D, elem_bits=8),
            _ListReader(addr_width=AW, data_bytes=D, elem_bits=32),
        ]
        idx_r, wgt_r, len_r = readers
        m.submodules.idx_list, m.submodules.wgt_list, m.submodules.len_list = readers
        m.d.comb += [
            idx_r.base.eq(job.idx_addr), wgt_r.base.eq(job.wgt_addr), idx_r.limit.eq(job.rows),
            len_r.base.eq(job.len_addr),
            idx_r.start.eq(self.start), wgt_r.start.eq(self.start & mode_w),
            len_r.start.eq(self.start),
        ]
        # The request goes through a register slice (address and one-hot reader): the
        # scratchpad's arbiter sees registers only, its grant only pops the slice, and the
        # readers see the slice's registered `i.ready`. A read's word comes back READ_LATENCY
        # cycles after its grant, which is no longer a fixed time after the pick, so each
        # granted read's reader waits in `list_who` for its word (in order).
        lrd = self.list_rd
        m.submodules.list_req = lq = SkidBuffer(layout=data.StructLayout({"addr": AW,
                                                                         "who": 3}))
        m.submodules.list_who = who = fifo.SyncFIFO(width=3, depth=R + 1)
        pick = Signal(3)                          # fixed priority: indices, weights, lengths
        m.d.comb += [
            pick.eq(Mux(idx_r.req.valid, 0b001,
                        Mux(wgt_r.req.valid, 0b010, Mux(len_r.req.valid, 0b100, 0)))),
            lq.i.valid.eq(pick.any()),
            lq.i.payload.who.eq(pick),
            lq.i.payload.addr.eq(_or_tree([Mux(pick[n], rdr.req.payload, 0)
                                           for n, rdr in enumerate(readers)])),
            lrd.req.valid.eq(lq.o.valid),
            lrd.req.payload.addr.eq(lq.o.payload.addr),
            lrd.req.payload.we.eq(0),
            lq.o.ready.eq(lrd.req.ready),
            who.w_en.eq(lq.o.valid & lrd.req.ready),
            who.w_data.eq(lq.o.payload.who),
            who.r_en.eq(lrd.rsp.valid),
        ]
        for n, rdr in enumerate(readers):
            m.d.comb += [
                rdr.req.ready.eq(lq.i.ready & pick[n]),
                rdr.rsp_valid.eq(lrd.rsp.valid & who.r_data[n]),
                rdr.rsp_data.eq(lrd.rsp.data),
            ]
        list_inflight = lq.busy | who.r_rdy

        # ---------------------------------------------------------------------------------
        # Issuer.
        meta_layout = data.StructLayout({"kind": 2, "weight": signed(8), "first": 1, "last": 1,
                                         "code": ERR_WIDTH})
        m.submodules.meta = meta = fifo.SyncFIFOBuffered(width=meta_layout.size,
                                                         depth=p["slots"])
        meta_in = Signal(meta_layout)
        meta_push = Signal()
        m.d.comb += [meta.w_data.eq(meta_in), meta.w_en.eq(meta_push & meta.w_rdy)]

        pool_halted = Signal()
        iss_run = Signal()
        in_bag = Signal()
        bag = Signal(32)
        # `cur_last` and `pos` are loaded when a bag is entered (`in_bag`) and read only in it;
        # the error's bag and position are loaded with the `_M_ERROR` entry the pooler reads
        # them for; `s2_*` are qualified by `s2_valid`.
        cur_last = Signal(32, reset_less=True)      # the current bag's length - 1
        pos = Signal(32, reset_less=True)
        iss_err_bag = Signal(32, reset_less=True)
        iss_err_pos = Signal(32, reset_less=True)
        s2_valid = Signal()
        s2_prod = Signal(p["addr_width"], reset_less=True)
        s2_sram = Signal(AW, reset_less=True)
        s2_tag = Signal(T)
        g = self.gather
        s2_free = ~s2_valid | g.ready
        ring_full = ((ptr_i.off == ptr_r.off) & (ptr_i.half == ptr_r.half)
                     & (ptr_i.lap != ptr_r.lap))
        m.d.comb += [
            g.valid.eq(s2_valid),
            g.payload.dram_addr.eq(job.table_addr + s2_prod),
            g.payload.sram_addr.eq(Cat(Const(0, k), s2_sram)),
            g.payload.rows.eq(1),
            g.payload.row_bytes.eq(job.dim),
            g.payload.dram_stride.eq(0),
            g.payload.sram_stride.eq(0),
            g.payload.tag.eq(s2_tag),
        ]
        with m.If(g.valid & g.ready):
            m.d.sync += s2_valid.eq(0)

        length = len_r.o.payload.value
        len_neg, len_zero = len_r.o.payload.neg, len_r.o.payload.zero
        index = idx_r.o.payload.value
        last_row = pos == cur_last
        with m.If(self.start):
            m.d.sync += iss_run.eq(1)
        with m.If(iss_run & ~err_valid & ~pool_halted & ~self.cancel):
            with m.If(~in_bag):
                with m.If(bag == job.bags):
                    m.d.comb += [meta_push.eq(1), meta_in.kind.eq(_M_END)]
                    with m.If(meta.w_rdy):
                        m.d.sync += iss_run.eq(0)
                with m.Elif(len_r.o.valid):
                    open_piece = ((bag == 0) & job.cont_in) | \
                        ((bag == job.last_bag) & job.cont_out)
                    with m.If(len_neg | (len_zero & open_piece)):
                        m.d.comb += [meta_push.eq(1), meta_in.kind.eq(_M_ERROR),
                                     meta_in.code.eq(ERR_LENGTH)]
                        with m.If(meta.w_rdy):
                            m.d.sync += [iss_run.eq(0), iss_err_bag.eq(bag), iss_err_pos.eq(0)]
                    with m.Elif(len_zero):
                        m.d.comb += [meta_push.eq(1), meta_in.kind.eq(_M_EMPTY)]
                        with m.If(meta.w_rdy):
                            m.d.comb += len_r.o.ready.eq(1)
                            m.d.sync += bag.eq(bag + 1)
                    with m.Else():
                        m.d.comb += len_r.o.ready.eq(1)
                        m.d.sync += [in_bag.eq(1), cur_last.eq((length - 1)[:32]), pos.eq(0)]
            with m.Else():
                have = idx_r.o.valid & (~mode_w | wgt_r.o.valid)
                bad = idx_r.o.payload.bad
                with m.If(have & bad):
                    m.d.comb += [meta_push.eq(1), meta_in.kind.eq(_M_ERROR),
                                 meta_in.code.eq(ERR_INDEX)]
                    with m.If(meta.w_rdy):
                        m.d.sync += [iss_run.eq(0), iss_err_bag.eq(bag), iss_err_pos.eq(pos)]
                with m.Elif(have & s2_free & ~ring_full):
                    m.d.comb += [
                        meta_push.eq(1),
                        meta_in.kind.eq(_M_GATHER),
                        meta_in.weight.eq(Mux(mode_w, wgt_r.o.payload.value, 1)),
                        meta_in.first.eq((pos == 0) & ~(job.cont_in & (bag == 0))),
                        meta_in.last.eq(last_row & ~(job.cont_out
                                                     & (bag == job.last_bag))),
                    ]
                    with m.If(meta.w_rdy):
                        m.d.comb += [idx_r.o.ready.eq(1), wgt_r.o.ready.eq(mode_w)]
                        m.d.sync += [
                            s2_valid.eq(1),
                            s2_prod.eq(index[:31] * job.row_stride),
                            s2_sram.eq(self._slot_word(ptr_i)),
                            s2_tag.eq(s2_tag + 1),
                            ptr_i.eq(next_i),
                            pos.eq(pos + 1),
                        ]
                        with m.If(last_row):
                            m.d.sync += bag.eq(bag + 1)
                            # The next bag's length, in the same cycle when it is a plain
                            # non-empty bag, so back-to-back bags issue a row every cycle.
                            # Anything else (the end, an empty bag, an error) takes the
                            # `~in_bag` path.
                            with m.If(len_r.o.valid & ~len_neg & ~len_zero
                                      & (bag != job.last_bag)):
                                m.d.comb += len_r.o.ready.eq(1)
                                m.d.sync += [cur_last.eq((length - 1)[:32]), pos.eq(0)]
                            with m.Else():
                                m.d.sync += in_bag.eq(0)

        # ---------------------------------------------------------------------------------
        # Pooler: completed slots → accumulators.
        acc_width = 32 * D
        acc = Memory(shape=acc_width, depth=2 << wb_bits, init=[])
        m.submodules.acc = acc
        acc_wr = acc.write_port()
        acc_rd = acc.read_port(transparent_for=(acc_wr,))
        acc_drain = acc.read_port(transparent_for=())

        drain_layout = data.StructLayout({"kind": 2, "buf": 1, "count": 32, "code": ERR_WIDTH})
        m.submodules.drain_q = dq = fifo.SyncFIFOBuffered(width=drain_layout.size,
                                                          depth=_DRAIN_DEPTH)
        tok_layout = data.StructLayout({
            "valid": 1, "kind": 2, "k": range(max_w + 1), "first": 1, "buf": 1,
            "weight": signed(8), "bag_end": 1, "count": 32, "code": ERR_WIDTH,
        })

        # The FIFO's head in a register (a one-entry slice refilled in the cycle it is taken): the
        # FIFO's LUT-RAM output then feeds only this register, not the pooler's decision.
        head_valid = Signal()
        head_reg = Signal(meta_layout, reset_less=True)
        head_pop = Signal()
        head = head_reg
        m.d.comb += meta.r_en.eq(~head_valid | head_pop)
        with m.If(~head_valid | head_pop):
            m.d.sync += [head_valid.eq(meta.r_rdy), head_reg.eq(meta.r_data)]
        kk = Signal(range(max_w + 1))
        # `kk == w - 1` and `kk == 0` as registered flags: `kk_left` counts the words after `kk`.
        kk_left = Signal(range(max_w + 1), reset_less=True)     # loaded by `start`
        wm1 = Signal(range(max_w + 1), reset_less=True)         # follow the job every cycle
        w_one = Signal(reset_less=True)
        m.d.sync += [wm1.eq(job.w - 1), w_one.eq(job.w == 1)]
        last_word = Signal()
        first_word = Signal(init=1)
        cnt = Signal(32)
        bagno = Signal(32)
        next_buf = Signal()
        cur_buf = Signal()
        busy = Signal(2)
        free_buf = Signal(2)          # drain: buffer read out (one-cycle pulses)
        # Loaded with every abort token; read (`err_bag`/`err_pos`) only for its code.
        pool_err_bag = Signal(32, reset_less=True)
        pool_err_pos = Signal(32, reset_less=True)

        # The read address `_slot_word(ptr_r) + kk`, kept in a register (advanced with `kk` and
        # `ptr_r`) so that no adder sits in front of the scratchpad request.
        rd_addr = Signal(AW, init=p["ring_base"] % (1 << AW))
        # `completed` (ptr_r != ptr_c) and `failed` (err_valid & ptr_r == err_ptr) as registers,
        # loaded with their next values: `r_adv` (the pooler moves to the next slot) only selects
        # between compares of registers.
        completed = Signal()
        failed = Signal()
        r_adv = Signal()
        new_err = gd.valid & (gd.payload.error != 0) & ~err_valid
        eq_rc = ptr_r.as_value() == ptr_c.as_value()
        eq_nc = next_r.as_value() == ptr_c.as_value()
        eq_re = ptr_r.as_value() == err_ptr.as_value()
        eq_ne = next_r.as_value() == err_ptr.as_value()
        m.d.sync += [
            completed.eq(gd.valid | (completed & (~r_adv | ~eq_nc))),
            failed.eq(Mux(new_err, Mux(r_adv, eq_nc, eq_rc),
                          err_valid & Mux(r_adv, eq_ne, eq_re))),
        ]
        with m.If(self.start):
            m.d.sync += [kk_left.eq(wm1), last_word.eq(w_one)]
        starting = head.first & first_word
        buf_ok = ~starting | ~busy.bit_select(next_buf, 1)
        # Drain requests queued or in the pipeline (`dq.level + reserved`), as one counter.
        dq_used = Signal(range(_DRAIN_DEPTH + 1))
        credit_ok = Signal()
        m.d.comb += credit_ok.eq(dq_used != _DRAIN_DEPTH)
        have_entry = head_valid & ~pool_halted

        # The next token is decided one cycle ahead into a request register (`sreq_*`): the
        # scratchpad sees a registered valid and address. The request register is the output
        # of a register slice, so the grant only advances the slice, and the decision waits only
        # on the slice's registered `i.ready` (`adv`), never on the grant. A token that reads
        # nothing (empty bag, end, abort) leaves the register in the next cycle.
        sreq_q = m.submodules.slot_req = SkidBuffer(layout=data.StructLayout({
            "tok": tok_layout, "rd": 1, "addr": AW}))
        sreq_valid = sreq_q.o.valid
        sreq_rd = Signal()            # the token reads a slot word
        sreq_tok = sreq_q.o.payload.tok
        sreq_addr = sreq_q.o.payload.addr
        m.d.comb += [
            sreq_rd.eq(sreq_valid & sreq_q.o.payload.rd),
            self.slot_rd.req.valid.eq(sreq_rd),
            self.slot_rd.req.payload.addr.eq(sreq_addr),
            self.slot_rd.req.payload.we.eq(0),
            sreq_q.o.ready.eq(~sreq_rd | self.slot_rd.req.ready),
        ]
        leave = sreq_valid & sreq_q.o.ready
        adv = sreq_q.i.ready          # the slice takes the next token (or none)

        tok = Signal(tok_layout)
        pushes = Signal()             # the token loaded this cycle will push a drain request
        issue_rd = Signal()           # the token loaded this cycle reads a slot word
        with m.If(adv & self.cancel & ~pool_halted):
            # Stop where we are: bags already complete are still written, nothing after.
            with m.If(credit_ok):
                m.d.comb += [tok.valid.eq(1), tok.kind.eq(_K_ABORT), tok.code.eq(ERR_CANCELLED),
                             pushes.eq(1)]
                m.d.sync += [pool_halted.eq(1), pool_err_bag.eq(bagno), pool_err_pos.eq(cnt)]
        with m.Elif(adv & have_entry):
            with m.Switch(head.kind):
                with m.Case(_M_GATHER):
                    with m.If(failed):
                        with m.If(credit_ok):
                            m.d.comb += [tok.valid.eq(1), tok.kind.eq(_K_ABORT),
                                         tok.code.eq(ERR_GATHER | err_dma), pushes.eq(1)]
                            m.d.sync += [pool_halted.eq(1), pool_err_bag.eq(bagno),
                                         pool_err_pos.eq(Mux(head.first, 0, cnt))]
                    with m.Elif(completed & buf_ok & (~(head.last & last_word) | credit_ok)):
                        m.d.comb += [
                            issue_rd.eq(1),
                            tok.valid.eq(1), tok.kind.eq(_K_BAG), tok.k.eq(kk),
                            tok.first.eq(head.first),
                            tok.buf.eq(Mux(starting, next_buf, cur_buf)),
                            tok.weight.eq(head.weight),
                            tok.bag_end.eq(head.last & last_word),
                            tok.count.eq(Mux(head.first, 1, cnt + 1)),
                            pushes.eq(head.last & last_word),
                        ]
                        with m.If(starting):
                            m.d.sync += [cur_buf.eq(next_buf), next_buf.eq(~next_buf)]
                        with m.If(last_word):
                            m.d.comb += [head_pop.eq(1), r_adv.eq(1)]
                            m.d.sync += [
                                kk.eq(0), kk_left.eq(wm1), last_word.eq(w_one),
                                first_word.eq(1), ptr_r.eq(next_r), next_r.eq(after_r),
                                rd_addr.eq(self._slot_word(next_r)),
                                cnt.eq(Mux(head.last, 0, Mux(head.first, 1, cnt + 1))),
                            ]
                            with m.If(head.last):
                                m.d.sync += bagno.eq(bagno + 1)
                        with m.Else():
                            m.d.sync += [kk.eq(kk + 1), rd_addr.eq(rd_addr + 1),
                                         kk_left.eq(kk_left - 1), last_word.eq(kk_left == 1),
                                         first_word.eq(0)]
                with m.Case(_M_EMPTY):
                    with m.If(credit_ok):
                        m.d.comb += [tok.valid.eq(1), tok.kind.eq(_K_EMPTY), tok.count.eq(1),
                                     pushes.eq(1), head_pop.eq(1)]
                        m.d.sync += bagno.eq(bagno + 1)
                with m.Case(_M_END):
                    with m.If(credit_ok):
                        m.d.comb += [tok.valid.eq(1), tok.kind.eq(_K_END), pushes.eq(1),
                                     head_pop.eq(1)]
                        m.d.sync += pool_halted.eq(1)
                with m.Case(_M_ERROR):
                    with m.If(credit_ok):
                        m.d.comb += [tok.valid.eq(1), tok.kind.eq(_K_ABORT),
                                     tok.code.eq(head.code), pushes.eq(1), head_pop.eq(1)]
                        m.d.sync += [pool_halted.eq(1), pool_err_bag.eq(iss_err_bag),
                                     pool_err_pos.eq(iss_err_pos)]
        m.d.comb += [
            sreq_q.i.valid.eq(tok.valid),
            sreq_q.i.payload.tok.eq(tok),
            sreq_q.i.payload.rd.eq(issue_rd),
            sreq_q.i.payload.addr.eq(rd_addr),
        ]

        # Buffer ownership: taken when a bag's first word is decided, given back by the drain.
        take = Signal(2)
        with m.If(issue_rd & starting):
            m.d.comb += take.bit_select(next_buf, 1).eq(1)
        m.d.sync += busy.eq((busy | take) & ~free_buf)
        # A bag continued from the previous job: its buffer (still holding the partial sums; the
        # accumulator memory is not reset) and its rows so far.
        with m.If(self.start & job.cont_in):
            m.d.sync += [cur_buf.eq(self.carry_in.buf), next_buf.eq(~self.carry_in.buf),
                         busy.eq(Mux(self.carry_in.buf, 0b10, 0b01)),
                         cnt.eq(self.carry_in.cnt)]
        m.d.comb += [self.carry_out.buf.eq(cur_buf), self.carry_out.cnt.eq(cnt)]

        # Tokens travel with the scratchpad read: READ_LATENCY stages, then A (products,
        # accumulator read) and B (accumulate, write; drain requests).
        # Only the valid bits (`tok_v*`) are reset; the tokens' fields (`pipe`, `tok_b`: their
        # `valid` field is not used) and the products have no reset.
        pipe = [Signal(tok_layout, name=f"tok_d{i}", reset_less=True) for i in range(R)]
        pipe_v = [Signal(name=f"tok_v{i}") for i in range(R)]
        m.d.sync += [pipe[0].eq(sreq_tok), pipe_v[0].eq(leave)]
        for stages in (pipe, pipe_v):
            for a, b in zip(stages, stages[1:]):
                m.d.sync += b.eq(a)
        tok_a = pipe[-1]
        x = self.slot_rd.rsp.data
        prods = Signal(16 * D)
        for lane in range(D):
            m.d.comb += prods.word_select(lane, 16).eq(
                x.word_select(lane, 8).as_signed() * tok_a.weight)
        m.d.comb += [acc_rd.addr.eq(Cat(tok_a.k[:wb_bits], tok_a.buf)), acc_rd.en.eq(1)]
        tok_b = Signal(tok_layout, reset_less=True)
        tok_b_valid = Signal()
        prods_b = Signal(16 * D, reset_less=True)
        m.d.sync += [tok_b.eq(tok_a), tok_b_valid.eq(pipe_v[-1]), prods_b.eq(prods)]
        summed = Signal(acc_width)
        for lane in range(D):
            old = Mux(tok_b.first, 0, acc_rd.data.word_select(lane, 32))
            m.d.comb += summed.word_select(lane, 32).eq(
                old + prods_b.word_select(lane, 16).as_signed())
        is_word = tok_b_valid & (tok_b.kind == _K_BAG)
        m.d.comb += [
            acc_wr.addr.eq(Cat(tok_b.k[:wb_bits], tok_b.buf)),
            acc_wr.data.eq(summed),
            acc_wr.en.eq(is_word),
        ]
        dreq = Signal(drain_layout)
        b_push = tok_b_valid & ((tok_b.kind != _K_BAG) | tok_b.bag_end)
        m.d.comb += [
            dreq.kind.eq(tok_b.kind), dreq.buf.eq(tok_b.buf), dreq.count.eq(tok_b.count),
            dreq.code.eq(tok_b.code),
            dq.w_data.eq(dreq), dq.w_en.eq(b_push),
        ]
        m.d.sync += dq_used.eq(dq_used + pushes - (dq.r_en & dq.r_rdy))

        # ---------------------------------------------------------------------------------
        # Drain: accumulator words (W/4 INT32 lanes each) → [divider] → [requantisation and
        # packing of four words' INT8 results into one] → realigner → out_wr.
        realign = m.submodules.realign = _Realigner(
            data_bytes=D, max_beats=max_nsrc + 1, word_width=AW, tag_width=1)
        m.submodules.out_rows = rows_q = fifo.SyncFIFOBuffered(
            width=realign.row_layout.size, depth=_ROWS_DEPTH)
        src_layout = data.StructLayout({"data": 8 * D, "count": 32, "last": 1})
        m.submodules.src = src_q = fifo.SyncFIFOBuffered(width=src_layout.size,
                                                         depth=_SRC_DEPTH)
        m.submodules.divider = div = _MeanDivider(lanes=D // 4, steps=p["div_steps"])

        dh = data.View(drain_layout, dq.r_data)
        sw = Signal(range(max_nsrc + 1))
        row_pushed = Signal()
        dst = Signal(k + AW, reset_less=True)       # loaded by `start`
        pend = Signal()
        pend_q = Signal(2, reset_less=True)         # the `pend_*` are qualified by `pend`
        pend_zero = Signal(reset_less=True)
        pend_count = Signal(32, reset_less=True)
        pend_last = Signal(reset_less=True)
        rows_inflight = Signal(range(_ROWS_DEPTH + _OUT_DEPTH + 4))
        with m.If(self.start):
            m.d.sync += dst.eq(job.out_addr)

        nbytes = Signal(range(4 * p["max_dim"] + 1))
        m.d.comb += nbytes.eq(Mux(job.requant, job.dim, job.dim << 2))
        do = dst[:k]
        row = Signal(realign.row_layout)
        m.d.comb += [
            row.s.eq(do), row.d.eq(0), row.nin.eq(Mux(job.requant, job.w, job.nsrc)),
            row.steps.eq((do + nbytes + (D - 1)) >> k),
            row.lo.eq(do), row.hi.eq((do + nbytes - 1)[:k]),
            row.word.eq(dst[k:]), row.desc_last.eq(1), row.tag.eq(0), row.err.eq(0),
            rows_q.w_data.eq(row),
        ]
        src_credit = (src_q.level + pend) < _SRC_DEPTH
        row_push = Signal()
        out_layout = data.StructLayout({"word": AW, "data": 8 * D, "mask": D, "row_last": 1})
        m.submodules.out_q = out_q = fifo.SyncFIFOBuffered(width=out_layout.size,
                                                           depth=_OUT_DEPTH)
        oh = data.View(out_layout, out_q.r_data)
        # A row's last write, granted, is counted a cycle later (`row_done`, a register), so
        # that the scratchpad's grant reaches one flip-flop here, not the counter's adder;
        # `no_rows` is exact all the same.
        row_done = Signal()
        m.d.sync += row_done.eq(self.out_wr.req.valid & self.out_wr.req.ready & oh.row_last)
        m.d.sync += [rows_inflight.eq(rows_inflight + row_push - row_done), pend.eq(0)]
        no_rows = (rows_inflight == 0) | ((rows_inflight == 1) & row_done)
        m.d.comb += [rows_q.w_en.eq(row_push),
                     acc_drain.addr.eq(Cat(sw[2:2 + wb_bits], dh.buf)), acc_drain.en.eq(1)]
        finished = Signal()
        with m.If(dq.r_rdy):
            with m.If((dh.kind == _K_BAG) | (dh.kind == _K_EMPTY)):
                with m.If((row_pushed | rows_q.w_rdy) & src_credit):
                    m.d.comb += row_push.eq(~row_pushed)
                    m.d.sync += [pend.eq(1), pend_q.eq(sw[:2]),
                                 pend_zero.eq(dh.kind == _K_EMPTY), pend_count.eq(dh.count),
                                 pend_last.eq(sw == job.nsrc - 1)]
                    with m.If(sw == job.nsrc - 1):
                        m.d.comb += dq.r_en.eq(1)
                        m.d.sync += [sw.eq(0), row_pushed.eq(0), dst.eq(dst + job.out_stride)]
                        with m.If(dh.kind == _K_BAG):
                            m.d.comb += free_buf.bit_select(dh.buf, 1).eq(1)
                    with m.Else():
                        m.d.sync += [sw.eq(sw + 1), row_pushed.eq(1)]
            with m.Elif(no_rows):
                m.d.comb += [dq.r_en.eq(1), finished.eq(1)]
        src_in = Signal(src_layout)
        m.d.comb += [
            src_in.data.eq(Mux(pend_zero, 0, acc_drain.data.word_select(pend_q, 8 * D))),
            src_in.count.eq(pend_count),
            src_in.last.eq(pend_last),
            src_q.w_data.eq(src_in), src_q.w_en.eq(pend),
        ]
        m.d.comb += [
            self.finished.eq(finished),
            self.code.eq(Mux(dh.kind == _K_END, ERR_OK, dh.code)),
            self.err_bag.eq(pool_err_bag),
            self.err_pos.eq(pool_err_pos),
        ]

        sh = data.View(src_layout, src_q.r_data)
        # `post`: the source words after the optional divider, each with `last` (of its row).
        # The divider holds up to three words (two in its contexts, one in its output register),
        # in order: their `last` bits wait in a shift register, the oldest in bit 0.
        post_valid, post_ready, post_last = Signal(), Signal(), Signal()
        post_data = Signal(8 * D)
        div_lasts = Signal(3)
        div_n = Signal(range(4))
        div_push = div.i.valid & div.i.ready
        div_pop = div.o.valid & div.o.ready
        div_last = div_lasts[0]
        with m.If(div_pop):
            m.d.sync += div_lasts.eq(div_lasts >> 1)
        with m.If(div_push):
            m.d.sync += div_lasts.bit_select((div_n - div_pop)[:2], 1).eq(sh.last)
        m.d.sync += div_n.eq(div_n + div_push - div_pop)
        with m.If(job.mode == MODE_MEAN):
            m.d.comb += [
                div.i.valid.eq(src_q.r_rdy), div.i.payload.data.eq(sh.data),
                div.i.payload.count.eq(sh.count), src_q.r_en.eq(div.i.ready),
                post_valid.eq(div.o.valid), post_data.eq(div.o.payload),
                post_last.eq(div_last), div.o.ready.eq(post_ready),
            ]
        with m.Else():
            m.d.comb += [
                post_valid.eq(src_q.r_rdy), post_data.eq(sh.data), post_last.eq(sh.last),
                src_q.r_en.eq(post_ready),
            ]

        # Requantisation (INT8 output): the GEMM's output stage on W/4 lanes, with the job's
        # parameters broadcast to every lane (no bias). Each source word gives W/4 bytes; four of
        # them (or fewer at the end of a row) are packed into one word for the realigner.
        Q = D // 4
        m.submodules.requant = rq = Requant(cols=Q)
        for c in range(Q):
            m.d.comb += [rq.params.bias[c].eq(0), rq.params.multiplier[c].eq(job.multiplier),
                         rq.params.shift[c].eq(job.shift)]
        m.d.comb += [
            rq.params.zero_point.eq(job.zero_point), rq.params.act_min.eq(job.act_min),
            rq.params.act_max.eq(job.act_max), rq.params.raw.eq(0),
            rq.i.payload.data.eq(post_data), rq.i.payload.last.eq(post_last),
        ]
        # The quarters of `pk_asm` above `pk_q` are stale (their bytes are past the row's end
        # and masked); `pk_word` is qualified by `pk_full`.
        pk_asm = Signal(8 * D, reset_less=True)     # the word being assembled
        pk_q = Signal(2)              # next quarter
        pk_full = Signal()
        pk_word = Signal(8 * D, reset_less=True)    # the packed word offered to the realigner
        merged = Signal(8 * D)
        incoming = Cat(rq.o.payload.data[c][:8] for c in range(Q))
        for qq in range(4):
            m.d.comb += merged.word_select(qq, 2 * D).eq(
                Mux(pk_q == qq, incoming, pk_asm.word_select(qq, 2 * D)))
        pk_take = rq.o.valid & rq.o.ready
        pk_complete = rq.o.payload.last | (pk_q == 3)
        with m.If(realign.i.valid & realign.i.ready):
            m.d.sync += pk_full.eq(0)
        with m.If(pk_take):
            m.d.sync += [pk_asm.eq(merged), pk_q.eq(Mux(pk_complete, 0, pk_q + 1))]
            with m.If(pk_complete):
                m.d.sync += [pk_full.eq(1), pk_word.eq(merged)]
        with m.If(job.requant):
            m.d.comb += [
                rq.i.valid.eq(post_valid), post_ready.eq(rq.i.ready),
                rq.o.ready.eq(~pk_full | realign.i.ready),
                realign.i.valid.eq(pk_full), realign.i.payload.data.eq(pk_word),
            ]
        with m.Else():
            m.d.comb += [
                realign.i.valid.eq(post_valid), realign.i.payload.data.eq(post_data),
                post_ready.eq(realign.i.ready),
            ]
        m.d.comb += [
            realign.rows.valid.eq(rows_q.r_rdy),
            realign.rows.payload.eq(rows_q.r_data),
            rows_q.r_en.eq(realign.rows.ready),
            realign.i.payload.err.eq(0),
        ]
        # The writes wait in a small FIFO, so that the scratchpad's grant (`out_wr.req.ready`)
        # only pops it and does not run back through the realigner into the divider and the
        # output stage.
        o = realign.o
        wr = self.out_wr.req
        m.d.comb += [
            out_q.w_data.eq(Cat(o.payload.word, o.payload.data, o.payload.mask,
                                o.payload.row_last)),
            out_q.w_en.eq(o.valid),
            o.ready.eq(out_q.w_rdy),
            wr.valid.eq(out_q.r_rdy),
            wr.payload.addr.eq(oh.word),
            wr.payload.we.eq(1),
            wr.payload.wdata.eq(oh.data),
            wr.payload.wmask.eq(oh.mask),
            out_q.r_en.eq(wr.ready),
        ]

        m.d.comb += self.quiet.eq((ptr_i.as_value() == ptr_c.as_value()) & ~s2_valid
                                  & ~list_inflight)
        return m


class EmbeddingBagEngine(wiring.Component):
    """Embedding-bag pooling over DMA gathers (see the module documentation).

    Parameters
    ----------
    data_bytes : int
        Scratchpad word and AXI data width W in bytes (8 to 64, a power of two).
    addr_width : int
        AXI (DRAM) address width.
    sram_addr_width : int
        Scratchpad word-address width.
    sram_words : int
        Scratchpad words (the output range check).
    tag_width : int
        Width of command tags, and of the tags on ``gather`` (the arbiter adds one bit).
    max_dim : int
        Largest ``dim`` (row bytes); sets the accumulator size.
    ring_base, ring_half : int
        Staging ring: two halves of ``ring_half`` words at ``ring_base`` and
        ``ring_base + ring_half``. A row of ``max_dim`` bytes must fit in a half.
    slots : int
        Depth of the metadata FIFO: the most rows between issue and pooling (with the ring's own
        ``2·floor(ring_half / w)``).
    div_steps : int
        Quotient bits per digit of the mean divider (1 to 4): radix ``2**div_steps``, with
        ``2**div_steps - 1`` subtractors per lane working in parallel.

    Members
    -------
    cmd : In(stream.Signature(cmd_layout))
    done : Out(stream.Signature({tag, error}))
    gather : Out(stream.Signature(DMA descriptor layout with ``tag_width``))
    gather_done : In(stream.Signature(DMA completion layout with ``tag_width``))
    list_rd, slot_rd, out_wr : Out(sram_port_signature(...))
        Scratchpad ports: list prefetch, ring reads, output writes.
    cancel : In(1)
        A pulse (e.g. the soft reset) stops the running job: no new gather is issued, bags
        already complete are written, every gather in flight is waited for, and the job completes
        with ``ERR_CANCELLED``. Ignored when no job runs. (Resetting the engine instead would be
        unsafe: the DMA is not reset, and the completions of gathers in flight would reach the
        next job.)
    error_code, error_bag, error_pos : Out
        Sticky: the last failing job's code, bag and position.
    busy : Out(1)
    """

    def __init__(self, *, data_bytes, addr_width, sram_addr_width, sram_words,
                 tag_width=16, max_dim=1024, ring_base, ring_half, slots=256, div_steps=2):
        _check_int("data_bytes", data_bytes, 8, 64, pow2=True)
        _check_int("addr_width", addr_width, 32, 64)
        _check_int("sram_addr_width", sram_addr_width, 1, 32)
        _check_int("sram_words", sram_words, 1, 1 << sram_addr_width)
        _check_int("tag_width", tag_width, 1, 31)
        _check_int("max_dim", max_dim, 1, 65535)
        _check_int("ring_half", ring_half, 1, sram_words)
        _check_int("ring_base", ring_base, 0, sram_words - 2 * ring_half)
        _check_int("slots", slots, 4, 1 << 16)
        _check_int("div_steps", div_steps, 1, 4)
        if -(-max_dim // data_bytes) > ring_half:
            raise ValueError(f"a row of max_dim = {max_dim} bytes needs "
                             f"{-(-max_dim // data_bytes)} words, more than ring_half = "
                             f"{ring_half}")
        self.p = dict(data_bytes=data_bytes, addr_width=addr_width,
                      sram_addr_width=sram_addr_width, sram_words=sram_words,
                      tag_width=tag_width, max_dim=max_dim,
                      ring_base=ring_base, ring_half=ring_half, slots=slots, div_steps=div_steps)
        SB = sram_addr_width + data_bytes.bit_length() - 1
        self.cmd_layout = data.StructLayout({
            "idx_addr": sram_addr_width, "len_addr": sram_addr_width,
            "wgt_addr": sram_addr_width, "out_addr": SB, "out_stride": SB,
            "table_addr": addr_width, "rows": 32, "row_stride": addr_width, "dim": 16,
            "bags": 32, "mode": 2, "requant": 1, "multiplier": 32, "shift": 6,
            "zero_point": 8, "act_min": 8, "act_max": 8, "cont_in": 1, "cont_out": 1,
            "tag": tag_width,
        })
        self.done_layout = data.StructLayout({"tag": tag_width, "error": ERR_WIDTH})
        max_w = -(-max_dim // data_bytes)
        self._job_layout = data.StructLayout({
            **{n: f.shape for n, f in self.cmd_layout if n != "tag"},
            "w": range(max_w + 1), "lim": range(ring_half + 1),
            "nsrc": range(-(-4 * max_dim // data_bytes) + 1),
            "last_bag": 32,     # bags - 1 (mod 2**32), so the issuer compares without an adder
        })
        self._ptr_layout = data.StructLayout({"off": range(ring_half + 1), "half": 1, "lap": 1})
        desc = DMA.make_descriptor_layout(addr_width=addr_width, sram_addr_width=sram_addr_width,
                                          data_bytes=data_bytes, tag_width=tag_width)
        port = sram_port_signature(addr_width=sram_addr_width, data_bytes=data_bytes)
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "done": Out(stream.Signature(self.done_layout)),
            "gather": Out(stream.Signature(desc)),
            "gather_done": In(stream.Signature(DMA.make_done_layout(tag_width=tag_width))),
            "list_rd": Out(port),
            "slot_rd": Out(port),
            "out_wr": Out(port),
            "cancel": In(1),
            "error_code": Out(ERR_WIDTH),
            "error_bag": Out(32),
            "error_pos": Out(32),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        D = p["data_bytes"]
        clear = Signal()
        core = _Core(p=p, job_layout=self._job_layout, ptr_layout=self._ptr_layout)
        m.submodules.core = ResetInserter(clear)(core)
        for name in ("gather", "list_rd", "slot_rd", "out_wr"):
            wiring.connect(m, getattr(core, name), wiring.flipped(getattr(self, name)))
        wiring.connect(m, wiring.flipped(self.gather_done), core.gather_done)
        # The bag left open by the last job (``cont_out``), for the next job's ``cont_in``.
        carry_valid = Signal()
        carry = Signal.like(core.carry_out, reset_less=True)    # qualified by carry_valid
        m.d.comb += core.carry_in.eq(carry)

        # The job, its tag, the checks' intermediate values and the failing bag and position
        # are loaded (in IDLE, CHECK to VERDICT, START or RUN) before they are used, and the
        # completion's payload is qualified by `done_full`: none of them has a reset.
        job = Signal(self._job_layout, reset_less=True)
        tag = Signal(p["tag_width"], reset_less=True)
        code = Signal(ERR_WIDTH)
        ebag = Signal(32, reset_less=True)
        epos = Signal(32, reset_less=True)
        span = Signal(32 + len(job.out_stride), reset_less=True)
        done_full = Signal()
        done_payload = Signal(self.done_layout, reset_less=True)
        cancelling = Signal()
        m.d.comb += [core.job.eq(job), self.done.valid.eq(done_full),
                     self.done.payload.eq(done_payload), core.cancel.eq(cancelling)]
        with m.If(self.done.ready):
            m.d.sync += done_full.eq(0)

        cmd = self.cmd.payload
        malformed = ((job.dim == 0) | (job.dim > p["max_dim"]) | (job.mode == 3)
                     | (~job.requant & ((job.out_addr[:2] != 0) | (job.out_stride[:2] != 0)))
                     | ((job.cont_in | job.cont_out) & (job.bags == 0))
                     | (job.cont_in & ~carry_valid))
        # The checks take four cycles (each one carry chain or a multiply deep): the end of
        # bag 0's output and the derived fields, the span of the other bags and the ring limit,
        # the end of the last bag's output, then both verdicts into registers.
        end0 = Signal(len(job.out_addr) + 19, reset_less=True)
        total = Signal(len(span) + 2, reset_less=True)
        bad_form = Signal()
        bad_range = Signal()
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    for name, _ in self.cmd_layout:
                        if name != "tag":
                            m.d.sync += getattr(job, name).eq(getattr(cmd, name))
                    m.d.sync += tag.eq(cmd.tag)
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(self.cancel):         # held until the job completes
                    m.d.sync += cancelling.eq(1)
                m.d.sync += [
                    end0.eq(job.out_addr + Mux(job.requant, job.dim, job.dim << 2)),
                    job.w.eq((job.dim + (D - 1)) >> (D.bit_length() - 1)),
                    job.nsrc.eq(((job.dim << 2) + (D - 1)) >> (D.bit_length() - 1)),
                    job.last_bag.eq((job.bags - 1)[:32]),
                ]
                m.next = "SPAN"
            with m.State("SPAN"):
                with m.If(self.cancel):
                    m.d.sync += cancelling.eq(1)
                m.d.sync += [span.eq(job.last_bag * job.out_stride),
                             job.lim.eq(p["ring_half"] - job.w)]
                m.next = "TOTAL"
            with m.State("TOTAL"):
                with m.If(self.cancel):
                    m.d.sync += cancelling.eq(1)
                m.d.sync += total.eq(end0 + span)
                m.next = "VERDICT"
            with m.State("VERDICT"):
                with m.If(self.cancel):
                    m.d.sync += cancelling.eq(1)
                m.d.sync += [bad_form.eq(malformed),
                             bad_range.eq((job.bags != 0) & (total > p["sram_words"] * D))]
                m.next = "START"
            with m.State("START"):
                with m.If(self.cancel):         # held until the job completes
                    m.d.sync += cancelling.eq(1)
                with m.If(bad_form):
                    m.d.sync += [code.eq(ERR_MALFORMED), ebag.eq(0), epos.eq(0),
                                 carry_valid.eq(0)]
                    m.next = "FINISH"
                with m.Elif(bad_range):
                    m.d.sync += [code.eq(ERR_RANGE), ebag.eq(0), epos.eq(0), carry_valid.eq(0)]
                    m.next = "FINISH"
                with m.Else():
                    m.d.comb += core.start.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(self.cancel):         # held until the job completes
                    m.d.sync += cancelling.eq(1)
                with m.If(core.finished):
                    m.d.sync += [code.eq(core.code), ebag.eq(core.err_bag),
                                 epos.eq(core.err_pos)]
                    m.next = "QUIET"
            with m.State("QUIET"):
                with m.If(core.quiet):
                    # The core restarts from reset: it must not see this job's cancel again.
                    m.d.comb += clear.eq(1)
                    m.d.sync += [cancelling.eq(0), carry.eq(core.carry_out),
                                 carry_valid.eq(job.cont_out & (code == ERR_OK))]
                    m.next = "FINISH"
            with m.State("FINISH"):
                with m.If(~done_full | self.done.ready):
                    m.d.sync += [done_full.eq(1), cancelling.eq(0), done_payload.tag.eq(tag),
                                 done_payload.error.eq(code)]
                    with m.If(code != ERR_OK):
                        m.d.sync += [self.error_code.eq(code), self.error_bag.eq(ebag),
                                     self.error_pos.eq(epos)]
                    m.next = "IDLE"

        m.d.comb += self.busy.eq(~self.cmd.ready | done_full)
        return m


# ---------------------------------------------------------------------------------------------
# The command processor's view: TABLE and POOL commands (hw/top.py, queue 3)

KIND_POOL, KIND_TABLE = 0, 1


class EmbagCommands(wiring.Component):
    """Decodes the command processor's embedding-bag commands into engine commands.

    A queue command has six 32-bit argument words, too few for a whole engine command, so a job
    is split in two kinds of command (bit 31 of argument word 3 says which):

    - **TABLE** (``a3[31] = 1``): ``a0`` table_addr, ``a1`` rows, ``a2`` row_stride,
      ``a3`` ``dim[15:0] | requant << 16``, ``a4`` multiplier (INT32), ``a5``
      ``shift[7:0] | zero_point << 8 | act_min << 16 | act_max << 24`` (INT8 fields). It only
      sets the table registers used by the POOL commands that follow, and completes at once.
      It is taken only when the engine is idle with no completion pending, so its completion
      keeps the queue's order and a job in the engine never sees the registers change.
    - **POOL** (``a3[31] = 0``): ``a0`` ``idx_addr | len_addr << 16`` (scratchpad word
      addresses), ``a1`` ``wgt_addr | mode << 16 | cont_in << 18 | cont_out << 19``,
      ``a2`` out_addr (scratchpad bytes), ``a3`` out_stride (bytes, bits 30:0), ``a4`` bags,
      ``a5`` 0 (reserved). One engine command with the current table registers.

    A field wider than the engine's (a scratchpad address beyond the scratchpad, a shift outside
    ``[-31, 31]``) makes the POOL command malformed (engine error 3) instead of wrapping; so does
    a POOL command with no TABLE command since the last ``clear``.

    ``clear`` (the soft reset) forgets the table registers and a pending TABLE completion. The
    engine is not reset (see :attr:`EmbeddingBagEngine.cancel`): completions of POOL commands it
    took before ``clear`` are swallowed here, so that they are not taken for completions of
    commands issued after it.
    """

    def __init__(self, *, engine):
        from .cmdproc import cmd_layout, done_layout
        self._engine_cmd = engine.cmd_layout
        self._engine_done = engine.done_layout
        self.p = engine.p
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout)),
            "done": Out(stream.Signature(done_layout)),
            "eng_cmd": Out(stream.Signature(engine.cmd_layout)),
            "eng_done": In(stream.Signature(engine.done_layout)),
            "eng_busy": In(1),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        AW = p["sram_addr_width"]
        SB = AW + p["data_bytes"].bit_length() - 1
        args = self.cmd.payload.args
        cid = self.cmd.payload.header.id
        is_table = args[3][31]

        # Table registers. Only `t_bad` (and `t_requant`) are reset: while `t_bad` is set the
        # POOL commands are malformed (dim 0) whatever the others hold.
        t_addr = Signal(32, reset_less=True)
        t_rows = Signal(32, reset_less=True)
        t_stride = Signal(32, reset_less=True)
        t_dim = Signal(16, reset_less=True)
        t_requant = Signal()
        t_mult = Signal(32, reset_less=True)
        t_scalars = Signal(32, reset_less=True)
        t_bad = Signal(init=1)          # no TABLE yet, or one with a bad field

        own_full = Signal()
        own_tag = Signal(16, reset_less=True)       # qualified by own_full
        take_table = self.cmd.valid & is_table & ~self.eng_busy & ~own_full & \
            ~self.eng_done.valid
        shift = args[5][:8].as_signed()
        with m.If(take_table):
            m.d.sync += [
                t_addr.eq(args[0]), t_rows.eq(args[1]), t_stride.eq(args[2]),
                t_dim.eq(args[3][:16]), t_requant.eq(args[3][16]), t_mult.eq(args[4]),
                t_scalars.eq(args[5]),
                t_bad.eq((shift < -31) | (shift > 31) | args[3][17:31].any()
                         | (args[0][p["addr_width"]:].any() if p["addr_width"] < 32 else 0)),
                own_full.eq(1), own_tag.eq(cid),
            ]
        with m.Elif(own_full & self.done.ready):
            m.d.sync += own_full.eq(0)

        # POOL → engine command.
        e = self.eng_cmd.payload
        too_wide = Signal()
        checks = [(args[0][:16], AW), (args[0][16:], AW), (args[1][:16], AW),
                  (args[2], SB), (args[3][:31], SB)]
        m.d.comb += too_wide.eq(Cat(v[w:].any() for v, w in checks if len(v) > w).any()
                                | args[1][20:].any())
        m.d.comb += [
            e.idx_addr.eq(args[0][:16]), e.len_addr.eq(args[0][16:]),
            e.wgt_addr.eq(args[1][:16]), e.mode.eq(args[1][16:18]),
            e.cont_in.eq(args[1][18]), e.cont_out.eq(args[1][19]),
            e.out_addr.eq(args[2]), e.out_stride.eq(args[3][:31]), e.bags.eq(args[4]),
            e.table_addr.eq(t_addr), e.rows.eq(t_rows), e.row_stride.eq(t_stride),
            # dim = 0 makes the engine refuse the command as malformed.
            e.dim.eq(Mux(too_wide | t_bad, 0, t_dim)),
            e.requant.eq(t_requant), e.multiplier.eq(t_mult), e.shift.eq(t_scalars[:6]),
            e.zero_point.eq(t_scalars[8:16]), e.act_min.eq(t_scalars[16:24]),
            e.act_max.eq(t_scalars[24:32]),
            e.tag.eq(cid),
            self.eng_cmd.valid.eq(self.cmd.valid & ~is_table & ~own_full),
            self.cmd.ready.eq(Mux(is_table, take_table, self.eng_cmd.ready & ~own_full)),
        ]

        # Completions; those of commands taken before `clear` are swallowed.
        inflight = Signal(8)
        stale = Signal(8)
        issued = self.eng_cmd.valid & self.eng_cmd.ready
        completed = self.eng_done.valid & self.eng_done.ready
        m.d.sync += inflight.eq(inflight + issued - completed)
        with m.If(self.clear):
            m.d.sync += [stale.eq(inflight + issued - completed), own_full.eq(0), t_bad.eq(1),
                         t_requant.eq(0)]
        with m.Elif(completed & (stale != 0)):
            m.d.sync += stale.eq(stale - 1)
        m.d.comb += [
            self.done.valid.eq(own_full | (self.eng_done.valid & (stale == 0))),
            self.done.payload.tag.eq(Mux(own_full, own_tag, self.eng_done.payload.tag)),
            self.done.payload.error.eq(Mux(own_full, 0, self.eng_done.payload.error)),
            self.eng_done.ready.eq((self.done.ready & ~own_full) | (stale != 0)),
        ]
        return m
