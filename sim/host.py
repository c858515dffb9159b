"""Host side of Ember: command encoding, the tiled GEMM plan, and a register-level driver.

This is what a host (or, later, the control core's firmware) does to run a GEMM. Nothing here
imports Amaranth or cocotb: :func:`plan_gemm` is plain Python, and :class:`HostDriver` is written
against a small asynchronous register-bus interface (:class:`RegisterBus`) that a cocotb
testbench implements with an AXI4-Lite master (``sim/tb_top.py``).

Commands (``hw/cmdproc.py``, ``hw/top.py``)
-------------------------------------------
Eight 32-bit words: two header words (``opcode | wait << 6 | signal << 11 | id << 16`` and
``wait2 | signal2 << 5``; 31 = no semaphore), then six argument words:

- DMA load (queue 0) and store (queue 1): ``dram_addr``, ``sram_addr`` (bytes), ``rows``
  (a store: ``rows | (blocks - 1) << 16``, ``blocks`` side-by-side 2D blocks, see
  :func:`dma_command`), ``row_bytes``, ``dram_stride``, ``sram_stride``;
- GEMM (queue 2): ``a | b << 16``, ``c | p << 16`` (scratchpad word addresses),
  ``steps | m_tiles << 16 | n_tiles << 24``, ``raw | zero_point << 8 | act_min << 16 |
  act_max << 24``;
- embedding bags (queue 3): a TABLE command (bit 31 of word 3 set: ``table_addr``, ``rows``,
  ``row_stride``, ``dim | requant << 16 | 1 << 31``, ``multiplier``,
  ``shift | zero_point << 8 | act_min << 16 | act_max << 24``) or a POOL command
  (``idx_addr | len_addr << 16``, ``wgt_addr | mode << 16 | cont_in << 18 | cont_out << 19``,
  ``out_addr``, ``out_stride``, ``bags``, 0); see :func:`embag_table_command`,
  :func:`embag_pool_command`, :class:`hw.embag.EmbagCommands` and the plan in
  ``sim/embag_plan.py``.

The GEMM plan
-------------
Inputs in DRAM: A packed by :func:`sim.layout.pack_a` (row-tile ``i``, step ``s`` at word
``i·S + s``), B packed by :func:`sim.layout.pack_b` (column-tile ``j`` at word ``j·S + s``), the
output-stage parameters packed by :func:`pack_params` (3 words per column tile: bias,
multiplier, shift), and C, row-major ``M×N`` of INT32 (raw) or INT8 (requantised) elements.
``S = ceil(K/L)`` steps, ``mt = ceil(M/R)`` row tiles, ``nt = ceil(N/C)`` column tiles.

1. **Scratchpad.** ``ns = sram_banks // 4`` slots per operand (at least 2), one bank each: A in
   banks ``[0, ns)``, B in ``[ns, 2·ns)``, C in ``[2·ns, 3·ns)``, parameters in
   ``[3·ns, 4·ns)`` (so the engine's operand ports and the DMA never share a bank). With 8 banks
   that is ping-pong (A 0/1, B 2/3, C 4/5, parameters 6/7); with 16, four slots each, so the
   loads run up to three jobs ahead of the array and a DRAM round trip per job stays hidden.
   **K chunks** (:func:`k_chunks`): while a tile's K panel fits a bank (``S ≤ sram_depth``)
   there is one chunk; beyond that K is split into ``kc = ceil(S / (depth // 4))`` chunks of
   ``Sc = ceil(S / kc)`` steps or one fewer (chunk ``k``: steps ``[k·S // kc, (k+1)·S // kc)``).
   Each chunk is one GEMM command on the same C slot: the first adds the bias (raw), the later
   ones add the partial sums already there (``acc``, ``hw/gemm.py``), and only the last
   requantises. So K has no practical limit (``kc ≤ 65535``).
2. **Block size** (``mb`` row tiles × ``nb`` column tiles per GEMM command). Caps:
   ``mb ≤ min(mt, depth // Sc, 255)``, ``nb ≤ min(nt, depth // Sc, depth // 3, 255)``; while
   ``mb·nb·R > depth`` (the C block must fit a bank), decrease the larger of the two (``nb``
   on a tie). Then balance: ``m_blocks = ceil(mt / mb)``, ``mb = ceil(mt / m_blocks)``, and the
   same for ``n``. Edge blocks are smaller.
3. **Loop order.** Jobs run over blocks with one operand in the *inner* loop (reloaded for every
   job) and the other in the *outer* loop (loaded once per outer block). The inner one is the
   one with less DRAM traffic overall: A inner costs ``n_blocks·mt·S + nt·(S+3)`` words,
   B inner ``m_blocks·nt·(S+3) + mt·S``; on a tie A is inner. The parameters travel with B.
   With K chunks both operands are inner (``inner = "ab"``): blocks run with j fastest, each
   block's ``kc`` chunks in a row, and every job loads its A chunk, its B chunk and the
   parameters.
4. **Slots.** Job ``t`` (0, 1, ... in loop order; one per block and K chunk): the inner operand
   goes to slot ``t % ns``, the outer operand (loaded at the first job of outer block ``o``) to
   slot ``o % ns``, C to slot ``u % ns`` for output block ``u = t // kc``; the parameters to
   the slot of B.
5. **Commands of job t.** Loads: the inner operand, then the outer operand if it changes, then
   the parameters if they change; 1D (one row of the block's bytes) without K chunks, else 2D
   (one row of ``Sk·W`` bytes per tile, DRAM stride ``S·W``). One GEMM command. After the last
   chunk of a block, per row of output tiles, one store of its full tiles as side-by-side
   blocks (``blocks`` = the row's tiles, ``hw/store_blocks.py``: the tiles follow one another
   in the scratchpad, ``R`` words each, and sit ``C·e`` bytes apart in DRAM), with
   ``rows = R``, ``row_bytes = C·e``, ``sram_stride = W`` (one result row per word),
   ``dram_stride = N·e``; then one store of the row's last tile if it is clipped at N
   (``row_bytes = (N - col0)·e``). The last row of tiles, if clipped at M (``rows = M - row0``),
   is stored one tile per command. Rows and columns beyond the matrix are never stored.
6. **Semaphores** (each has one producer queue and one consumer queue):

   =============  ====  ===========================================  ==========================
   semaphore      init  signalled by                                 waited on by
   =============  ====  ===========================================  ==========================
   0 OPS_FREE     ns    each GEMM (signal)                           the first load of a job
   1 OPS_READY    0     the last load of a job                       each GEMM (wait)
   2 C_FREE       ns    the last store of a block                    a block's first GEMM
                                                                     (wait2)
   3 C_READY      0     a block's last GEMM (signal2)                the first store of a block
   =============  ====  ===========================================  ==========================

   So the loads of job t start once GEMM t-ns is done (their slots were last read by job t-ns
   or earlier: outer block o-ns ended at least ns jobs before outer block o starts), GEMM t
   starts once its operands are in (and, if it is the first GEMM of block u, once the stores of
   block u-ns have emptied its C slot), and the stores of block u start once
   its last GEMM is done. Commands within a queue complete in
   order, which is why one signal from a job's last load (or store) covers all of them. Every
   job has at least one load (the inner operand) and every block one store, so the counts stay
   balanced. Between the chunks of a block no semaphore is needed: the GEMM engine starts an
   ``acc`` command only after the previous command has written its results.
7. **Push order:** ``L0``, then for each job t: ``G(t)``, ``L(t+1)``, and, if t is the first
   job of block ``u ≥ 1``, the stores of block ``u-1``; finally the stores of the last block
   (without K chunks: ``G(t)``, ``L(t+1)``, ``S(t-1)``, then ``S(T-1)``). Every command waits
   only on commands pushed before it, so a host that blocks on a
   full queue never deadlocks, and the next job's loads are queued before the (many) stores of
   the previous job: load t+1 and store t-1 overlap compute t. Command ids count up from
   ``first_id`` in push order (mod 2^16), so ``ERR_ID`` names the exact command.
"""

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np

from hw import regmap
from sim.layout import gemm_tiles

__all__ = [
    "SEM_NONE", "SEM_OPS_FREE", "SEM_OPS_READY", "SEM_C_FREE", "SEM_C_READY", "QUEUE_DEPTH",
    "Command", "command_words", "decode_command", "dma_rows", "dma_command", "gemm_command",
    "pack_params",
    "embag_table_command", "embag_pool_command", "EMBAG_MODES",
    "GemmPlan", "plan_gemm", "plan_slots", "plan_semaphores", "DramLayout", "dram_layout",
    "EmberHardwareError", "EmberTimeout", "BusError", "describe_error", "RegisterBus", "HostDriver",
    "utilization", "block_sizes", "k_chunks",
]

SEM_NONE = 31
SEM_OPS_FREE, SEM_OPS_READY, SEM_C_FREE, SEM_C_READY = 0, 1, 2, 3
QUEUE_DEPTH = 8


def plan_slots(config):
    """Slots per operand of the GEMM plan: ``sram_banks // 4`` (see the module docs)."""
    return config.sram_banks // 4


def plan_semaphores(config):
    """Initial semaphore counts of the GEMM plan on ``config``."""
    ns = plan_slots(config)
    return {SEM_OPS_FREE: ns, SEM_OPS_READY: 0, SEM_C_FREE: ns, SEM_C_READY: 0}

_QUEUE_OF_OPCODE = {regmap.OPCODES[name]: q for q, name in enumerate(regmap.QUEUE_NAMES)}
_MASK32 = (1 << 32) - 1


# -- commands -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    """One command: its queue, its eight words, and a short description for logs."""
    queue: int
    words: tuple
    note: str = ""

    @property
    def id(self):
        return self.words[0] >> 16


def _check_sem(name, value):
    if not (0 <= value < 16 or value == SEM_NONE):
        raise ValueError(f"{name} must be a semaphore in [0, 15] or {SEM_NONE}, not {value!r}")


def command_words(opcode, cid, args, *, wait=SEM_NONE, signal=SEM_NONE, wait2=SEM_NONE,
                  signal2=SEM_NONE):
    """The eight words of a command with ``opcode``, id ``cid`` and six argument words."""
    for name, value in (("wait", wait), ("signal", signal), ("wait2", wait2),
                        ("signal2", signal2)):
        _check_sem(name, value)
    if not 0 <= cid < 1 << 16:
        raise ValueError(f"command id must be in [0, 65535], not {cid!r}")
    if len(args) != 6:
        raise ValueError(f"a command has 6 argument words, not {len(args)}")
    w0 = opcode | wait << 6 | signal << 11 | cid << 16
    w1 = wait2 | signal2 << 5
    return (w0, w1, *(int(a) & _MASK32 for a in args))


def decode_command(words):
    """The header fields and arguments of a command, as a dict (for logs and tests)."""
    w0, w1 = words[0], words[1]
    return {"opcode": w0 & 0x3F, "wait": (w0 >> 6) & 31, "signal": (w0 >> 11) & 31,
            "id": w0 >> 16, "wait2": w1 & 31, "signal2": (w1 >> 5) & 31,
            "args": list(words[2:])}


def dma_rows(cmd):
    """The rows a DMA command moves, in order, as ``(dram_addr, sram_addr, row_bytes)``: a
    store's ``blocks`` expanded (see :func:`dma_command`); ``dram_stride`` as a signed 32-bit
    value. For testbench models and checks."""
    dram, sram, rows, row_bytes, dstride, sstride = cmd.words[2:]
    dstride = dstride - (1 << 32) if dstride >> 31 else dstride
    blocks = 1
    if cmd.queue == _QUEUE_OF_OPCODE[regmap.OPCODES["store"]]:
        rows, blocks = rows & 0xFFFF, (rows >> 16) + 1
    return [(dram + t * row_bytes + r * dstride, sram + (t * rows + r) * sstride, row_bytes)
            for t in range(blocks) for r in range(rows)]


def dma_command(kind, cid, *, dram_addr, sram_addr, rows, row_bytes, dram_stride=0,
                sram_stride=0, blocks=1, **sems):
    """A DMA ``"load"`` (DRAM → scratchpad) or ``"store"`` command; addresses in bytes.

    A store may carry ``blocks`` side-by-side 2D blocks (``hw/store_blocks.py``): block ``t``
    goes from ``sram_addr + t·rows·sram_stride`` to ``dram_addr + t·row_bytes``. Word 2 is then
    ``rows | (blocks - 1) << 16``."""
    if kind not in ("load", "store"):
        raise ValueError(f"kind must be 'load' or 'store', not {kind!r}")
    if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 <= blocks <= 1 << 16:
        raise ValueError(f"blocks must be an integer in [1, 65536], not {blocks!r}")
    if blocks > 1 and kind != "store":
        raise ValueError(f"blocks applies to stores only, not to a {kind}")
    if kind == "store" and not 0 <= rows <= 0xFFFF:
        # (A load's rows word is passed as given: the hardware refuses one that is too wide.)
        raise ValueError(f"rows must be in [0, 65535] for a store, not {rows!r}")
    word2 = rows | (blocks - 1) << 16
    words = command_words(regmap.OPCODES[kind], cid,
                          (dram_addr, sram_addr, word2, row_bytes, dram_stride, sram_stride),
                          **sems)
    note = (f"{kind} dram={dram_addr:#x} sram={sram_addr:#x} rows={rows} row_bytes={row_bytes} "
            f"dstride={dram_stride} sstride={sram_stride}"
            + (f" blocks={blocks}" if blocks > 1 else ""))
    return Command(regmap.QUEUE_NAMES.index(kind), words, note)


def gemm_command(cid, *, a_addr, b_addr, c_addr, p_addr, steps, m_tiles, n_tiles, raw,
                 zero_point=0, act_min=-128, act_max=127, acc=False, **sems):
    """A GEMM command; scratchpad addresses are word addresses. ``acc``: add the INT32 partial
    sums at ``c_addr`` instead of the bias (a later K chunk, ``hw/gemm.py``)."""
    for name, value, hi in (("a_addr", a_addr, 0xFFFF), ("b_addr", b_addr, 0xFFFF),
                            ("c_addr", c_addr, 0xFFFF), ("p_addr", p_addr, 0xFFFF),
                            ("steps", steps, 0xFFFF), ("m_tiles", m_tiles, 0xFF),
                            ("n_tiles", n_tiles, 0xFF)):
        if not 0 <= value <= hi:
            raise ValueError(f"{name} must be in [0, {hi}], not {value!r}")
    args = (a_addr | b_addr << 16, c_addr | p_addr << 16, steps | m_tiles << 16 | n_tiles << 24,
            int(bool(raw)) | int(bool(acc)) << 1 | (zero_point & 0xFF) << 8
            | (act_min & 0xFF) << 16 | (act_max & 0xFF) << 24, 0, 0)
    words = command_words(regmap.OPCODES["gemm"], cid, args, **sems)
    note = (f"gemm a={a_addr} b={b_addr} c={c_addr} p={p_addr} steps={steps} "
            f"tiles={m_tiles}x{n_tiles} raw={int(bool(raw))} acc={int(bool(acc))}")
    return Command(regmap.QUEUE_NAMES.index("gemm"), words, note)


EMBAG_MODES = {"sum": 0, "mean": 1, "weighted": 2}


def _check_field(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], not {value!r}")
    return int(value)


def embag_table_command(cid, *, table_addr, rows, row_stride, dim, requant=False, multiplier=0,
                        shift=0, zero_point=0, act_min=-128, act_max=127, **sems):
    """An embedding-bag TABLE command (queue 3): the table's DRAM byte address, rows, row
    stride (bytes) and dim; with ``requant``, INT8 output through the output stage with these
    scalar parameters (no bias). See :class:`hw.embag.EmbagCommands`."""
    for name, value, lo, hi in (("table_addr", table_addr, 0, _MASK32),
                                ("rows", rows, 0, _MASK32), ("row_stride", row_stride, 0, _MASK32),
                                ("dim", dim, 1, 0xFFFF),
                                ("multiplier", multiplier, -2**31, 2**31 - 1),
                                ("shift", shift, -31, 31), ("zero_point", zero_point, -128, 127),
                                ("act_min", act_min, -128, 127), ("act_max", act_max, -128, 127)):
        _check_field(name, value, lo, hi)
    args = (table_addr, rows, row_stride, dim | int(bool(requant)) << 16 | 1 << 31,
            multiplier & _MASK32,
            (shift & 0xFF) | (zero_point & 0xFF) << 8 | (act_min & 0xFF) << 16
            | (act_max & 0xFF) << 24)
    words = command_words(regmap.OPCODES["embag"], cid, args, **sems)
    note = (f"embag table dram={table_addr:#x} rows={rows} stride={row_stride} dim={dim}"
            + (f" requant m={multiplier} s={shift} zp={zero_point} [{act_min},{act_max}]"
               if requant else ""))
    return Command(regmap.QUEUE_NAMES.index("embag"), words, note)


def embag_pool_command(cid, *, idx_addr, len_addr, wgt_addr=0, out_addr, out_stride, bags,
                       mode="sum", cont_in=False, cont_out=False, **sems):
    """An embedding-bag POOL command (queue 3) on the current table: list word addresses and the
    output's byte address and row stride in the scratchpad; ``mode`` is ``"sum"``, ``"mean"``
    or ``"weighted"`` (or 0, 1, 2); ``cont_in``/``cont_out`` continue a bag across commands."""
    mode = EMBAG_MODES.get(mode, mode)
    for name, value, lo, hi in (("idx_addr", idx_addr, 0, 0xFFFF),
                                ("len_addr", len_addr, 0, 0xFFFF),
                                ("wgt_addr", wgt_addr, 0, 0xFFFF),
                                ("out_addr", out_addr, 0, _MASK32),
                                ("out_stride", out_stride, 0, (1 << 31) - 1),
                                ("bags", bags, 0, _MASK32), ("mode", mode, 0, 2)):
        _check_field(name, value, lo, hi)
    args = (idx_addr | len_addr << 16,
            wgt_addr | mode << 16 | int(bool(cont_in)) << 18 | int(bool(cont_out)) << 19,
            out_addr, out_stride, bags, 0)
    words = command_words(regmap.OPCODES["embag"], cid, args, **sems)
    note = (f"embag pool idx={idx_addr} len={len_addr} wgt={wgt_addr} out={out_addr:#x} "
            f"stride={out_stride} bags={bags} mode={mode}"
            + (" cont_in" if cont_in else "") + (" cont_out" if cont_out else ""))
    return Command(regmap.QUEUE_NAMES.index("embag"), words, note)


def pack_params(bias, multiplier, shift, *, cols, word_bytes):
    """Output-stage parameters → words[3·nt, W] uint8 (``hw/gemm.py``): per column tile j, the
    INT32 biases, the INT32 multipliers, the INT8 shifts of columns ``jC .. jC+C-1`` (zero for
    padded columns)."""
    bias = np.asarray(bias, np.int64)
    n = len(bias)
    multiplier = np.asarray(multiplier, np.int64)
    shift = np.asarray(shift, np.int64)
    nt = -(-n // cols)
    padded = np.zeros((3, nt * cols), np.int64)
    padded[0, :n], padded[1, :n], padded[2, :n] = bias, multiplier, shift
    words = np.zeros((3 * nt, word_bytes), np.uint8)
    for j in range(nt):
        sl = slice(j * cols, (j + 1) * cols)
        words[3 * j, :4 * cols] = padded[0, sl].astype("<i4").view(np.uint8)
        words[3 * j + 1, :4 * cols] = padded[1, sl].astype("<i4").view(np.uint8)
        words[3 * j + 2, :cols] = padded[2, sl].astype(np.int8).view(np.uint8)
    return words


# -- the GEMM plan --------------------------------------------------------------------------------

@dataclass(frozen=True)
class GemmPlan:
    """What :func:`plan_gemm` decided, and the commands in push order.

    Members
    -------
    m_tiles, n_tiles, steps : int
        Tiles of the whole problem and array steps per tile.
    mb, nb, m_blocks, n_blocks : int
        Block size (tiles) and number of blocks along M and N.
    inner : str
        ``"a"`` or ``"b"``: the operand reloaded for every job; ``"ab"``: both (K chunks).
    k_chunks : int
        K chunks per output block (1 when the K panel of a tile fits a bank).
    jobs : list of (i_block, j_block, k_chunk)
        In execution order.
    commands : list of Command
        In push order.
    semaphores : dict
        Initial semaphore counts to set before the first push.
    array_steps : int
        PE-array steps the GEMM commands make (``m_tiles·n_tiles·steps``).
    dram_read_bytes, dram_write_bytes : int
        Bytes the plan's loads read and its stores write.
    """
    m_tiles: int
    n_tiles: int
    steps: int
    mb: int
    nb: int
    m_blocks: int
    n_blocks: int
    inner: str
    k_chunks: int
    jobs: list
    commands: list
    semaphores: dict
    array_steps: int
    dram_read_bytes: int
    dram_write_bytes: int

    def count(self, queue):
        return sum(1 for c in self.commands if c.queue == queue)


def k_chunks(config, S):
    """``(kc, Sc)``: the number of K chunks for ``S`` array steps, and the largest chunk.

    One chunk while the K panel of one tile fits a bank (``S ≤ sram_depth``); else chunks of at
    most ``sram_depth // 4`` steps, so that blocks of up to 4×4 tiles fit the operand slots.
    Chunk ``k`` covers steps ``[k·S // kc, (k+1)·S // kc)``.
    """
    depth = config.sram_depth
    if S <= depth:
        return 1, S
    kc = -(-S // max(1, depth // 4))
    if kc > 0xFFFF:
        raise ValueError(f"K needs {kc} K chunks of at most {max(1, depth // 4)} array steps; "
                         f"the plan supports at most 65535")
    return kc, -(-S // kc)


def block_sizes(config, M, K, N):
    """``(mt, S, nt, mb, nb)``: the tiles of the problem and the block size of the plan."""
    R, C, L = config.pe_rows, config.pe_cols, config.pe_lanes
    depth = config.sram_depth
    mt, S, nt = gemm_tiles(M, K, N, rows=R, cols=C, lanes=L)
    if R > depth:
        raise ValueError(f"a result tile of {R} rows does not fit a bank of {depth} words")
    _, Sc = k_chunks(config, S)
    mb = min(mt, depth // Sc, 255)
    nb = min(nt, depth // Sc, depth // 3, 255)
    while mb * nb * R > depth:
        if mb > nb:
            mb -= 1
        else:
            nb -= 1
    m_blocks, n_blocks = -(-mt // mb), -(-nt // nb)
    return mt, S, nt, -(-mt // m_blocks), -(-nt // n_blocks)


def plan_gemm(config, M, K, N, *, a_addr, b_addr, p_addr, c_addr, raw, zero_point=0,
              act_min=-128, act_max=127, first_id=1):
    """The command list of an ``M×K×N`` GEMM whose operands are in DRAM (see the module docs).

    Parameters
    ----------
    config : EmberConfig
    M, K, N : int
        Problem size (each at least 1).
    a_addr, b_addr, p_addr : int
        DRAM byte addresses of packed A, packed B and the packed parameters.
    c_addr : int
        DRAM byte address of C (row-major, ``M×N`` elements of 4 bytes if ``raw`` else 1).
    raw : bool
        INT32 ``acc + bias`` (True) or requantised INT8 (False).
    zero_point, act_min, act_max : int
        Output-stage scalars (INT8).
    first_id : int
        Id of the first command; ids count up (mod 2^16).

    Raises
    ------
    ValueError
        If an argument is out of range, a result tile does not fit a bank, or the configuration
        has fewer than 8 banks.
    """
    for name, value in (("M", M), ("K", K), ("N", N)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if config.sram_banks < 8:
        raise ValueError(f"the GEMM plan needs 8 scratchpad banks, {config.name!r} has "
                         f"{config.sram_banks}")
    R, C, W, depth = config.pe_rows, config.pe_cols, config.bus_bytes, config.sram_depth
    ns = plan_slots(config)
    mt, S, nt, mb, nb = block_sizes(config, M, K, N)
    kc, _ = k_chunks(config, S)
    m_blocks, n_blocks = -(-mt // mb), -(-nt // nb)
    a_inner_cost = n_blocks * mt * S + nt * (S + 3)
    b_inner_cost = m_blocks * nt * (S + 3) + mt * S
    if kc > 1:
        inner = "ab"
        blocks = [(i, j) for i in range(m_blocks) for j in range(n_blocks)]
    elif a_inner_cost <= b_inner_cost:
        inner = "a"
        blocks = [(i, j) for j in range(n_blocks) for i in range(m_blocks)]
    else:
        inner = "b"
        blocks = [(i, j) for i in range(m_blocks) for j in range(n_blocks)]
    jobs = [(i, j, k) for i, j in blocks for k in range(kc)]
    e = 4 if raw else 1

    ids = itertools.count(first_id)

    def next_id():
        return next(ids) & 0xFFFF

    def bank(b):
        return b * depth

    loads, gemms, stores = [], [], []
    read_bytes = write_bytes = 0
    outer_block = -1
    prev_outer = None
    for t, (i, j, k) in enumerate(jobs):
        u = t // kc                       # output block
        m_here = min(mb, mt - i * mb)
        n_here = min(nb, nt - j * nb)
        k0, k1 = k * S // kc, (k + 1) * S // kc
        Sk = k1 - k0
        outer_key = j if inner == "a" else i
        if outer_key != prev_outer:
            outer_block += 1
            prev_outer = outer_key
            new_outer = True
        else:
            new_outer = False
        a_slot = outer_block % ns if inner == "b" else t % ns
        b_slot = outer_block % ns if inner == "a" else t % ns
        c_slot = u % ns
        a_word, b_word, p_word, c_word = bank(a_slot), bank(ns + b_slot), \
            bank(3 * ns + b_slot), bank(2 * ns + c_slot)

        # Loads: inner operand, outer operand (if new), parameters (if B is new). K chunks
        # reload both operands (2D: one row of the chunk's steps per tile).
        job_loads = []
        load_a = inner != "b" or new_outer
        load_b = inner != "a" or new_outer
        specs = []
        if load_a:
            specs.append(("A", a_addr + (i * mb * S + k0) * W, a_word, m_here, Sk * W))
        if load_b:
            specs.append(("B", b_addr + (j * nb * S + k0) * W, b_word, n_here, Sk * W))
        if inner == "b":
            specs.reverse()   # the inner operand (B) first
        if load_b:
            specs.append(("P", p_addr + 3 * j * nb * W, p_word, 1, 3 * n_here * W))
        for n, (what, dram, word, rows, row_bytes) in enumerate(specs):
            sems = {}
            if n == 0:
                sems["wait"] = SEM_OPS_FREE
            if n == len(specs) - 1:
                sems["signal"] = SEM_OPS_READY
            if kc == 1 or what == "P":
                geometry = dict(rows=1, row_bytes=rows * row_bytes)
            else:
                geometry = dict(rows=rows, row_bytes=row_bytes, dram_stride=S * W,
                                sram_stride=row_bytes)
            cmd = dma_command("load", 0, dram_addr=dram, sram_addr=word * W, **geometry,
                              **sems)
            job_loads.append(dataclasses.replace(cmd, note=f"job {t} {what}: {cmd.note}"))
            read_bytes += rows * row_bytes
        loads.append(job_loads)

        first, last = k == 0, k == kc - 1
        g = gemm_command(0, a_addr=a_word, b_addr=b_word, c_addr=c_word, p_addr=p_word,
                         steps=Sk, m_tiles=m_here, n_tiles=n_here, raw=raw or not last,
                         acc=not first, zero_point=zero_point, act_min=act_min,
                         act_max=act_max, wait=SEM_OPS_READY, signal=SEM_OPS_FREE,
                         wait2=SEM_C_FREE if first else SEM_NONE,
                         signal2=SEM_C_READY if last else SEM_NONE)
        gemms.append(dataclasses.replace(g, note=f"job {t}: {g.note}"))
        if not last:
            continue

        # Per row of tiles: one multi-block store of its full tiles, then one of its last
        # tile if that is clipped at N. A row of tiles clipped at M: one store per tile (its
        # tiles are R words apart in the scratchpad, not `rows`).
        pieces = []                  # (first tile n, tiles, rows, columns)
        for il in range(m_here):
            row0 = (i * mb + il) * R
            rows = min(R, M - row0)
            last_cols = min(C, N - (j * nb + n_here - 1) * C)
            full = n_here if last_cols == C else n_here - 1
            if rows < R:
                pieces += [(il * n_here + jl, 1, rows, C) for jl in range(full)]
            elif full:
                pieces.append((il * n_here, full, rows, C))
            if full < n_here:
                pieces.append((il * n_here + n_here - 1, 1, rows, last_cols))
        job_stores = []
        for p, (n, tiles, rows, cols) in enumerate(pieces):
            il, jl = divmod(n, n_here)
            row0, col0 = (i * mb + il) * R, (j * nb + jl) * C
            sems = {}
            if p == 0:
                sems["wait"] = SEM_C_READY
            if p == len(pieces) - 1:
                sems["signal"] = SEM_C_FREE
            cmd = dma_command("store", 0, dram_addr=c_addr + (row0 * N + col0) * e,
                              sram_addr=(c_word + n * R) * W, rows=rows, row_bytes=cols * e,
                              dram_stride=N * e, sram_stride=W, blocks=tiles, **sems)
            job_stores.append(dataclasses.replace(cmd, note=f"block {u} tile {n}: {cmd.note}"))
            write_bytes += tiles * rows * cols * e
        stores.append(job_stores)

    order = list(loads[0])
    for t in range(len(jobs)):
        order.append(gemms[t])
        if t + 1 < len(jobs):
            order += loads[t + 1]
        if t % kc == 0 and t >= kc:
            order += stores[t // kc - 1]
    order += stores[-1]
    commands = []
    for cmd in order:
        w = list(cmd.words)
        w[0] = (w[0] & 0xFFFF) | next_id() << 16
        commands.append(dataclasses.replace(cmd, words=tuple(w)))
    return GemmPlan(m_tiles=mt, n_tiles=nt, steps=S, mb=mb, nb=nb, m_blocks=m_blocks,
                    n_blocks=n_blocks, inner=inner, k_chunks=kc, jobs=jobs, commands=commands,
                    semaphores=plan_semaphores(config), array_steps=mt * nt * S,
                    dram_read_bytes=read_bytes, dram_write_bytes=write_bytes)


@dataclass(frozen=True)
class DramLayout:
    """Byte addresses of the GEMM's buffers in DRAM, and the DRAM size that holds them."""
    a_addr: int
    a_bytes: int
    b_addr: int
    b_bytes: int
    p_addr: int
    p_bytes: int
    c_addr: int
    c_bytes: int
    size: int


def dram_layout(config, M, K, N, *, raw, base=0x1000, align=64, gap=256, offsets=(0, 0, 0, 0),
                min_size=1 << 16):
    """A DRAM layout for packed A, packed B, packed parameters and C, in that order.

    Each buffer starts ``gap`` bytes after the previous one, rounded up to ``align``, plus its
    entry of ``offsets`` (bytes, to test unaligned buffers). ``size`` is a power of two at least
    ``min_size`` that leaves ``gap`` bytes after C.
    """
    mt, S, nt = gemm_tiles(M, K, N, rows=config.pe_rows, cols=config.pe_cols,
                           lanes=config.pe_lanes)
    W = config.bus_bytes
    sizes = (mt * S * W, nt * S * W, 3 * nt * W, M * N * (4 if raw else 1))
    addrs = []
    at = base
    for nbytes, off in zip(sizes, offsets):
        at = -(-at // align) * align + off
        addrs.append(at)
        at += nbytes + gap
    size = max(min_size, 1 << max(at - 1, 1).bit_length())
    return DramLayout(addrs[0], sizes[0], addrs[1], sizes[1], addrs[2], sizes[2], addrs[3],
                      sizes[3], size)


# -- errors ---------------------------------------------------------------------------------------

_CP_ERRORS = {0x01: "illegal opcode", 0x02: "malformed header", 0x03: "queue overflow",
              0x04: "watchdog: the engine made no progress"}
_ENGINE_ERRORS = {
    0: {1: "AXI SLVERR", 2: "AXI DECERR", 3: "scratchpad range", 4: "malformed descriptor",
        5: "outside the DRAM read window"},
    1: {1: "AXI SLVERR", 2: "AXI DECERR", 3: "scratchpad range", 4: "malformed descriptor",
        5: "outside the DRAM write window"},
    2: {1: "malformed command"},
    3: {1: "index out of range", 2: "negative bag length", 3: "malformed command",
        4: "output beyond the scratchpad", 5: "cancelled", 9: "gather: AXI SLVERR",
        10: "gather: AXI DECERR", 11: "gather: scratchpad range",
        12: "gather: malformed descriptor", 13: "gather: outside the DRAM read window"},
}


def describe_error(code, queue):
    """A short text for an ``ERR_CODE`` of queue ``queue``."""
    if code in _CP_ERRORS:
        return _CP_ERRORS[code]
    if code >= 0x10:
        name = regmap.QUEUE_NAMES[queue] if 0 <= queue < regmap.N_QUEUES else f"queue {queue}"
        return f"{name} engine: " + _ENGINE_ERRORS.get(queue, {}).get(code - 0x10,
                                                                       f"code {code - 0x10}")
    return f"code {code:#x}"


class EmberHardwareError(RuntimeError):
    """The accelerator reported an error (``STATUS.ERROR``): code, command id and queue.

    For an embedding-bag error also ``bag`` and ``pos`` (the bag and the position in it of the
    failing index) and, when a runtime knows the job, ``table``; otherwise None."""

    def __init__(self, code, cmd_id, queue, message=None, *, bag=None, pos=None, table=None):
        self.code, self.cmd_id, self.queue = code, cmd_id, queue
        self.bag, self.pos, self.table = bag, pos, table
        where = ""
        if bag is not None:
            where = (f" at {'' if table is None else f'table {table}, '}bag {bag}, "
                     f"position {pos}")
        super().__init__(message or f"hardware error {code:#04x} ({describe_error(code, queue)}) "
                                    f"on command id {cmd_id} in queue {queue}{where}")


class EmberTimeout(RuntimeError):
    """The accelerator did not finish within the cycle budget."""


class BusError(RuntimeError):
    """A register access got an error response (AXI SLVERR)."""


# -- the register-level driver --------------------------------------------------------------------

class RegisterBus:
    """What :class:`HostDriver` needs from the host port (implemented by the testbench).

    ``async read(offset)`` returns the 32-bit value or raises :class:`BusError`;
    ``post(offset, value)`` queues a write (writes complete in order); ``async flush()`` waits for
    every queued write and raises :class:`BusError` if one failed; ``cycle()`` is the current
    clock cycle (for time limits). A port with the interrupt line also has ``async
    wait_irq(deadline)``: return when ``irq`` is high (at once if it is) or at cycle
    ``deadline``, whichever is first (used by ``HostDriver(irq=True)``).
    """

    async def read(self, offset):
        raise NotImplementedError

    def post(self, offset, value):
        raise NotImplementedError

    async def flush(self):
        raise NotImplementedError

    def cycle(self):
        raise NotImplementedError

    async def wait_irq(self, deadline):
        raise NotImplementedError


def _off(name):
    return regmap.BY_NAME[name].offset


class HostDriver:
    """Drives Ember through its registers: commands, semaphores, completion, errors, counters.

    Pushes are paced so that no queue ever overflows: the driver counts the commands it pushed
    into each queue and, before a push that could exceed :data:`QUEUE_DEPTH` commands queued or
    in flight, reads that queue's ``Q_COMPLETED`` until there is room (``pushed - completed`` is
    never less than ``Q_PENDING``, and stays correct however late a read is). Writes are posted
    (not awaited one by one); before polling for room the driver waits for its posted writes, so
    that the polls do not take bus slots from them. Only the staging words that changed since
    the last push are written (the staging registers keep their values).

    With ``irq=True`` the driver does not poll while it waits: it enables the interrupt cause it
    waits for (``DONE<q>`` for room in queue q, ``IDLE`` for the queues to drain) and ``ERROR``
    in ``IRQ_ENABLE``, clears both (W1C) and waits for its posted writes, reads the state
    once (``Q_COMPLETED<q>`` or ``STATUS``) and, if it must still wait, awaits the ``irq`` line
    (:meth:`RegisterBus.wait_irq`) before reading again. The clear precedes the read, so an
    event after the read is latched and raises ``irq``; none is missed. The driver then owns
    ``IRQ_ENABLE`` (it leaves its last value there).

    Parameters
    ----------
    bus : RegisterBus
    timeout : int
        Cycle budget of each wait.
    log : logging.Logger or None
    irq : bool
        Wait on the interrupt line instead of polling (the bus must implement ``wait_irq``).
    """

    def __init__(self, bus, *, timeout=1_000_000, log=None, irq=False):
        if not isinstance(irq, bool):
            raise TypeError(f"irq must be a bool, not {irq!r}")
        self.bus = bus
        self.timeout = timeout
        self.log = log
        self.irq = irq
        self.irq_enable = None       # the last value the driver wrote to IRQ_ENABLE
        self.irq_waits = 0
        self.staged = [None] * 8
        self.pushed = [0] * regmap.N_QUEUES
        self.completed = [0] * regmap.N_QUEUES
        self.pushes = 0
        self.credit_reads = 0

    async def read(self, name):
        return await self.bus.read(_off(name))

    def write(self, name, value):
        self.bus.post(_off(name), value & _MASK32)

    async def write_now(self, name, value):
        self.write(name, value)
        await self.bus.flush()

    async def set_semaphores(self, counts):
        for index, value in counts.items():
            self.write(f"SEM{index}", value)
        await self.bus.flush()

    async def errors(self):
        """``{"code", "id", "queue"}`` of the sticky error (code 0: none)."""
        return {"code": await self.read("ERR_CODE"), "id": await self.read("ERR_ID"),
                "queue": await self.read("ERR_QUEUE")}

    async def embag_error(self):
        """``(bag, pos)`` of the embedding-bag engine's last error, within its command."""
        return await self.read("EMBAG_ERR_BAG"), await self.read("EMBAG_ERR_POS")

    async def raise_if_error(self):
        if (await self.read("STATUS")) & 2:
            err = await self.errors()
            where = {}
            if err["queue"] == regmap.QUEUE_NAMES.index("embag") and err["code"] >= 0x10:
                where["bag"], where["pos"] = await self.embag_error()
            raise EmberHardwareError(err["code"], err["id"], err["queue"], **where)

    def _deadline(self, timeout=None):
        return self.bus.cycle() + (self.timeout if timeout is None else timeout)

    def _arm(self, cause):
        """Post ``IRQ_ENABLE = ERROR | cause`` (if it changed) and the W1C of both; the caller
        flushes before it reads the state the cause reports. (``ERROR`` is latched again at
        once while an error is held; clearing it drops one left from an earlier job.)"""
        enable = 1 << regmap.IRQ_ERROR | cause
        if enable != self.irq_enable:
            self.write("IRQ_ENABLE", enable)
            self.irq_enable = enable
        self.write("IRQ_STATUS", enable)

    async def _sleep(self, woke, cause, deadline):
        """One wait of an ``irq=True`` loop that found no progress: after a wake-up (``woke``)
        clear ``cause`` again and return to read the state (the wake was an error or a timeout,
        which the caller has checked); else await ``irq``. Returns the new ``woke``."""
        if woke:
            self._arm(cause)
            await self.bus.flush()
            return False
        self.irq_waits += 1
        await self.bus.wait_irq(deadline)
        return True

    def _full(self, q):
        return (self.pushed[q] - self.completed[q]) & _MASK32 >= QUEUE_DEPTH

    async def _room(self, q, deadline):
        cause = 1 << (regmap.IRQ_DONE + q)
        woke = False
        if self._full(q):
            if self.irq:
                self._arm(cause)
            # Let the posted pushes reach the hardware first: polling while writes are queued
            # only takes bus slots from them.
            await self.bus.flush()
        while self._full(q):
            before = self.completed[q]
            self.completed[q] = await self.read(f"Q_COMPLETED{q}")
            self.credit_reads += 1
            if self.completed[q] == before:
                await self.raise_if_error()
                if self.bus.cycle() > deadline:
                    raise EmberTimeout(f"queue {q} ({regmap.QUEUE_NAMES[q]}) made no progress "
                                       f"for {self.timeout} cycles")
                if self.irq:
                    woke = await self._sleep(woke, cause, deadline)

    async def push(self, cmd, *, deadline=None):
        """Stage and push one :class:`Command` (waiting for room in its queue)."""
        q = _QUEUE_OF_OPCODE.get(cmd.words[0] & 0x3F, cmd.queue)
        await self._room(q, self._deadline() if deadline is None else deadline)
        for i, word in enumerate(cmd.words):
            if self.staged[i] != word:
                self.write(f"CMD{i}", word)
                self.staged[i] = word
        self.write("CMD_PUSH", 1)
        self.pushed[q] += 1
        self.pushes += 1
        if self.log is not None:
            self.log.debug("push q%d id %d: %s", q, cmd.id, cmd.note)

    async def push_all(self, commands):
        """Push ``commands`` in order; every wait for room has its own cycle budget."""
        for cmd in commands:
            await self.push(cmd)
        await self.bus.flush()

    async def wait_idle(self, timeout=None):
        """Wait until every queue is empty: ``STATUS.BUSY`` low (it is the OR of
        ``Q_PENDING* != 0``, sampled in one cycle, so those are not read again).

        Raises :class:`EmberHardwareError` as soon as ``STATUS.ERROR`` is seen, and
        :class:`EmberTimeout` after the cycle budget.
        """
        cause = 1 << regmap.IRQ_IDLE
        woke = False
        if self.irq:
            self._arm(cause)
        await self.bus.flush()
        start = self.bus.cycle()
        deadline = self._deadline(timeout)
        while True:
            status = await self.read("STATUS")
            if status & 2:
                await self.raise_if_error()
            if not status & 1:
                return
            if self.bus.cycle() > deadline:
                pending = [await self.read(f"Q_PENDING{q}") for q in range(regmap.N_QUEUES)]
                raise EmberTimeout(f"queues not drained after {deadline - start} cycles "
                                   f"(Q_PENDING {pending})")
            if self.irq:
                woke = await self._sleep(woke, cause, deadline)

    async def soft_reset(self):
        """``CTRL.SOFT_RESET`` (keeping ``CPU_RESET`` as it is); forget the queue bookkeeping.

        The DMA and the embedding-bag engine are not reset: they finish what they hold (their
        completions are discarded), and the command processor issues nothing pushed after the
        reset until they have (``hw/top.py``), so the driver may push again at once."""
        ctrl = await self.read("CTRL")
        await self.write_now("CTRL", (ctrl & 1) | 2)
        self.pushed = [0] * regmap.N_QUEUES
        self.completed = [0] * regmap.N_QUEUES
        self.staged = [None] * 8

    async def perf(self):
        """Every performance counter, by lower-case name (``cycles`` is 64-bit)."""
        out = {}
        lo = await self.read("PERF_CYCLES")
        hi = await self.read("PERF_CYCLES_HI")
        if (await self.read("PERF_CYCLES")) < lo:      # the low word carried between the reads
            lo = await self.read("PERF_CYCLES")
            hi = await self.read("PERF_CYCLES_HI")
        out["cycles"] = hi << 32 | lo
        for name in ("PERF_GEMM_STEPS", "PERF_GEMM_STALL", "PERF_DMA_RD_BEATS",
                     "PERF_DMA_WR_BEATS"):
            out[name[5:].lower()] = await self.read(name)
        for q in range(regmap.N_QUEUES):
            out[f"busy{q}"] = await self.read(f"PERF_BUSY{q}")
            out[f"wait{q}"] = await self.read(f"PERF_WAIT{q}")
        return out

    async def run_plan(self, plan, *, timeout=None):
        """Set the plan's semaphores, clear the counters, push every command, wait until idle;
        return the performance counters."""
        await self.set_semaphores(plan.semaphores)
        self.write("PERF_CLEAR", 1)
        await self.push_all(plan.commands)
        await self.wait_idle(timeout)
        return await self.perf()


def utilization(macs, cycles, peak):
    """``macs / (cycles · peak)`` (0 when nothing ran)."""
    return macs / (cycles * peak) if cycles and peak else 0.0

