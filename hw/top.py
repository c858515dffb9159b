"""The Ember top level: host port, control core, command processor, DMA, GEMM engine,
embedding-bag engine, scratchpad.

Ports
-----
``host__*``
    AXI4-Lite subordinate (32-bit data, 16-bit byte address): the registers of
    ``hw/regmap.py`` and the control core's IMEM window.
``axi__*``
    The DMA's AXI4 manager port to DRAM.
``irq``
    ``|(IRQ_STATUS & IRQ_ENABLE)``.
``cpu_clk``
    Only with ``EmberConfig.cpu_async``: the control core's clock (domain ``cpu``). The ``cpu``
    domain's reset is the ``sync`` reset through a ``ResetSynchronizer`` (asserted at once,
    released on ``cpu_clk``).

Clock domains
-------------
Everything runs in ``sync`` (``clk``/``rst``), except, with ``cpu_async``, the control core,
which runs in ``cpu``. Its crossings: the MMIO port through ``WishboneCDC`` (``hw/cdc.py``,
a toggle handshake; the registers see one classic cycle per access); the host's IMEM/DMEM
writes and ``CTRL.CPU_RESET`` through ``HostCDC`` (``hw/host_cdc.py``: an ``AsyncFIFO`` whose
room holds back the host's Wishbone ``ack``, and a synchroniser that comes up asserted and
releases the core only once the written words have landed); the command processor's ``irq``
through an ``FFSynchronizer``. The core's ``bus_error`` is used by nothing in ``sync``.

Inside
------
The host loads firmware into the control core (VexRiscv) through the IMEM window while
``CTRL.CPU_RESET`` holds it, then releases it. Firmware and host both write commands through
their registers into the command processor. Its queues feed the engines:

=====  ======  ==========================================================================
queue  opcode  engine, and the meaning of argument words 0..5 (header words 2..7)
=====  ======  ==========================================================================
0      1       DMA load (DRAM → scratchpad): dram_addr, sram_addr (bytes), rows, row_bytes,
               dram_stride, sram_stride
1      2       DMA store (scratchpad → DRAM): the same fields
2      3       GEMM: ``a_addr | b_addr << 16``, ``c_addr | p_addr << 16`` (scratchpad word
               addresses), ``steps | m_tiles << 16 | n_tiles << 24``,
               ``raw | acc << 1 | zero_point << 8 | act_min << 16 | act_max << 24``
3      4       embedding bags (``hw/embag.py``, :class:`~hw.embag.EmbagCommands`), two kinds
               told apart by bit 31 of word 3.
               TABLE (``a3[31] = 1``): table_addr (DRAM bytes), rows, row_stride (bytes),
               ``dim | requant << 16 | 1 << 31``, multiplier (INT32),
               ``shift | zero_point << 8 | act_min << 16 | act_max << 24`` (INT8 fields).
               POOL (``a3[31] = 0``): ``idx_addr | len_addr << 16`` (scratchpad words),
               ``wgt_addr | mode << 16 | cont_in << 18 | cont_out << 19``,
               out_addr (scratchpad bytes), out_stride (bytes), bags, 0
=====  ======  ==========================================================================

The embedding-bag engine's gathers share the DMA's load path with queue 0 through a
``GatherArbiter`` (the DMA's tags have one more bit, naming the source). Its error bag and
position are the registers ``EMBAG_ERR_BAG`` and ``EMBAG_ERR_POS``.

Scratchpad ports: 0 DMA write (loads), 1 DMA read (stores), 2 GEMM A, 3 GEMM B, 4 GEMM results,
5 GEMM parameters, 6 GEMM partial sums, 7 embedding-bag lists, 8 embedding-bag ring reads,
9 embedding-bag outputs. Banks are dual-ported in pairs (0/1, 2/3, ...): the DMA's two ports use
one side of every pair and the engines' ports the other, so the DMA never waits for an engine.

``CTRL.SOFT_RESET`` clears the command processor and resets the GEMM engine (the responses to
its scratchpad reads still in flight are dropped). The scratchpad is not reset: it keeps its
contents, and every read granted to the DMA or the embedding-bag engine gets its response (a
reset scratchpad used to lose them, and a soft reset in the middle of an embedding-bag job could
leave the engine waiting forever). The DMA is not reset, because AXI gives no way to
abandon transactions in flight. It finishes the descriptors it already holds (they complete in
order, before anything issued after the reset), and their completions are discarded.
Nor are the embedding-bag engine and its arbiter reset: ``SOFT_RESET`` cancels the engine's job
(it stops issuing gathers, waits for those in flight and completes), and ``EmbagCommands``
discards that completion. Until both have drained (the DMA's old descriptors still write loaded
data into the scratchpad, the cancelled job still writes the bags it had finished), the command
processor holds issue: commands pushed right after the reset wait in their queues, so no late
write from before the reset lands on the operands of a new job.

Faults
------
Every fault ends in the command processor's sticky ``ERR_CODE``/``ERR_ID``/``ERR_QUEUE`` and
the interrupt (``IRQ_STATUS.ERROR``); issue stops until ``SOFT_RESET``.

- DRAM windows: ``DRAM_RD_BASE``/``DRAM_RD_LIMIT`` bound every DMA load *and* every
  embedding-bag gather (they share the load path), ``DRAM_WR_BASE``/``DRAM_WR_LIMIT`` every
  store. Only the host writes them (firmware reads them), ``SOFT_RESET`` keeps them, and after
  reset they allow the whole address space. A descriptor outside its window is refused by the
  DMA before any beat (DMA error 5: ``ERR_CODE`` 0x15 on queue 0 or 1, 0x1D on queue 3 for a
  gather).
- Watchdog (``hw/watchdog.py``): with ``WATCHDOG`` = n > 0, an engine that holds a command for n
  cycles without progress raises ``ERR_CODE`` 0x04 with that command's id and queue. Progress is
  a completion of that queue or: loads, an AXI R beat; stores, a W beat or a B response; GEMM, an
  array step or a result write; embedding bags, an R beat or an output write.

Argument words wider than their descriptor fields (e.g. a scratchpad address beyond the
scratchpad) make the DMA command malformed (engine error 4) rather than wrapping.
"""

from amaranth.hdl import (Cat, ClockDomain, ClockSignal, DomainRenamer, Module, Mux,
                          ResetInserter, ResetSignal, Signal)
from amaranth.lib import wiring
from amaranth.lib.cdc import FFSynchronizer, ResetSynchronizer
from amaranth.lib.wiring import In, Out

from . import regmap
from .axi import axi4_signature
from .axil import AXILiteToWishbone, axil_signature
from .cdc import WishboneCDC
from .cmdproc import ERR_WATCHDOG, CommandProcessor
from .config import EmberConfig
from .cpu import ControlCore, DEFAULT_IMEM_SIZE
from .dma import DMA
from .embag import EmbagCommands, EmbeddingBagEngine, GatherArbiter, embag_params
from .gemm import GemmEngine
from .host_cdc import HostCDC
from .regs import Registers
from .sram import Scratchpad
from .store_blocks import StoreBlocks
from .watchdog import Watchdog

__all__ = ["Ember", "build_top", "BLOCKS"]

TAG_WIDTH = 16
#: Scratchpad ports: the clients `Ember` connects (DMA 2, GEMM engine 5, embedding engine 3).
SRAM_PORTS = 10
#: The DMA's ports (0 and 1) are served by side B of the scratchpad's dual-ported pairs of banks,
#: the engines by side A (`Scratchpad`'s ``b_side``; hw/sram.py, "Dual-ported pairs").
SRAM_B_SIDE = (0, 1)


def _sram_addr_width(cfg):
    """The scratchpad's word-address width for ``cfg``."""
    return embag_params(cfg, tag_width=TAG_WIDTH)["sram_addr_width"]


#: ``{name: factory(cfg)}``: every block `Ember` instantiates with parameters derived from the
#: preset, built exactly as it builds them (also used by ``python -m synth --part <name>``).
BLOCKS = {
    "cmdproc": lambda cfg: CommandProcessor(
        opcodes=[regmap.OPCODES[q] for q in regmap.QUEUE_NAMES], depth=8,
        inflight=cfg.cmd_inflight),
    # The DMA's tags have one more bit than the command ids: the GatherArbiter's source bit.
    "dma": lambda cfg: DMA(
        data_bytes=cfg.bus_bytes, addr_width=cfg.axi_addr_width, id_width=cfg.axi_id_width,
        outstanding=cfg.dma_outstanding, max_burst=cfg.dma_max_burst,
        sram_addr_width=_sram_addr_width(cfg), sram_words=cfg.sram_banks * cfg.sram_depth,
        tag_width=TAG_WIDTH + 1, windows=True),
    "gemm": lambda cfg: GemmEngine(
        rows=cfg.pe_rows, cols=cfg.pe_cols, lanes=cfg.pe_lanes, data_bytes=cfg.bus_bytes,
        addr_width=_sram_addr_width(cfg), tag_width=TAG_WIDTH),
    "embag": lambda cfg: EmbeddingBagEngine(**embag_params(cfg, tag_width=TAG_WIDTH)),
    "sram": lambda cfg: Scratchpad(banks=cfg.sram_banks, depth=cfg.sram_depth,
                                   data_bytes=cfg.bus_bytes, ports=SRAM_PORTS,
                                   b_side=SRAM_B_SIDE),
}


class Ember(wiring.Component):
    """The whole accelerator for one configuration.

    Parameters
    ----------
    config : EmberConfig
        The preset.

    Members
    -------
    host : In(axil_signature(addr_width=16))
        Host register port.
    axi : Out(axi4_signature(...))
        DRAM port.
    irq : Out(1)
        Interrupt to the host.
    cpu_clk : In(1)
        Only with ``config.cpu_async``: the control core's clock.
    """

    def __init__(self, config):
        if not isinstance(config, EmberConfig):
            raise TypeError(f"config must be an EmberConfig, not {config!r}")
        self.config = config
        members = {
            "host": In(axil_signature(addr_width=regmap.HOST_ADDR_WIDTH)),
            "axi": Out(axi4_signature(addr_width=config.axi_addr_width,
                                      data_bytes=config.bus_bytes,
                                      id_width=config.axi_id_width)),
            "irq": Out(1),
        }
        if config.cpu_async:
            members["cpu_clk"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        queues = regmap.QUEUE_NAMES

        m.submodules.bridge = bridge = AXILiteToWishbone(addr_width=regmap.HOST_ADDR_WIDTH)
        cpu = ControlCore()
        if cfg.cpu_async:
            m.domains.cpu = ClockDomain("cpu")
            m.d.comb += ClockSignal("cpu").eq(self.cpu_clk)
            m.submodules.cpu_rst_sync = ResetSynchronizer(ResetSignal("sync"), domain="cpu")
            m.submodules.cpu = DomainRenamer("cpu")(cpu)
        else:
            m.submodules.cpu = cpu
        m.submodules.regs = regs = Registers(config=cfg, imem_words=DEFAULT_IMEM_SIZE // 4,
                                             fw_addr_width=len(cpu.mmio.adr),
                                             imem_backpressure=cfg.cpu_async)
        m.submodules.cp = cp = BLOCKS["cmdproc"](cfg)
        sram_aw = _sram_addr_width(cfg)      # the scratchpad's word-address width
        dma = BLOCKS["dma"](cfg)
        gemm = BLOCKS["gemm"](cfg)
        embag = BLOCKS["embag"](cfg)
        arb = GatherArbiter(addr_width=cfg.axi_addr_width, sram_addr_width=sram_aw,
                            data_bytes=cfg.bus_bytes, tag_width=TAG_WIDTH)
        embag_cmds = EmbagCommands(engine=embag)
        m.submodules.dma = dma
        m.submodules.gemm = ResetInserter(regs.soft_reset)(gemm)
        # The embedding-bag engine and the arbiter are not reset: gathers in flight must complete
        # (SOFT_RESET cancels the engine's job instead; see EmbeddingBagEngine.cancel).
        m.submodules.embag = embag
        m.submodules.gather_arbiter = arb
        m.submodules.embag_cmds = embag_cmds

        # Host port → registers; control core ↔ registers.
        wiring.connect(m, wiring.flipped(self.host), bridge.axil)
        wiring.connect(m, bridge.wb, regs.host)
        if cfg.cpu_async:
            # Control core (domain cpu) ↔ registers (sync): see "Clock domains" above.
            m.submodules.mmio_cdc = mmio_cdc = WishboneCDC(addr_width=len(cpu.mmio.adr),
                                                           i_domain="cpu", t_domain="sync")
            wiring.connect(m, cpu.mmio, mmio_cdc.i)
            wiring.connect(m, mmio_cdc.t, regs.fw)
            m.submodules.host_cdc = host_cdc = HostCDC(addr_width=len(regs.imem_write.addr),
                                                       w_domain="sync", r_domain="cpu")
            wiring.connect(m, regs.imem_write, host_cdc.write_i)
            wiring.connect(m, host_cdc.write_o, cpu.host)
            cpu_irq = Signal.like(cp.irq, name="cpu_irq")
            m.submodules.irq_sync = FFSynchronizer(cp.irq, cpu_irq, o_domain="cpu",
                                                   reset_less=False)
            m.d.comb += [
                regs.imem_write_rdy.eq(host_cdc.write_rdy),
                host_cdc.reset_i.eq(regs.cpu_reset),
            ]
            cpu_reset = host_cdc.reset_o
        else:
            wiring.connect(m, cpu.mmio, regs.fw)
            wiring.connect(m, regs.imem_write, cpu.host)
            cpu_reset, cpu_irq = regs.cpu_reset, cp.irq
        m.d.comb += [
            cpu.cpu_reset.eq(cpu_reset),
            cpu.irq.eq(cpu_irq),
            self.irq.eq(regs.irq),
        ]

        # Registers ↔ command processor.
        wiring.connect(m, regs.push, cp.push)
        wiring.connect(m, regs.sem_write, cp.sem_write)
        m.d.comb += [
            cp.clear.eq(regs.soft_reset),
            regs.cp_sems.eq(cp.sems),
            regs.cp_completed.eq(cp.completed),
            regs.cp_pending.eq(cp.pending),
            regs.cp_busy.eq(cp.busy),
            regs.cp_waiting.eq(cp.waiting),
            regs.cp_error.eq(cp.error),
            regs.cp_error_id.eq(cp.error_id),
            regs.cp_error_queue.eq(cp.error_queue),
        ]

        # Command processor → DMA (queues 0 and 1): argument words to descriptor fields. A word
        # with bits set beyond its field would wrap into a different, valid transfer; such a
        # command is passed on with rows = 0, which the DMA refuses as malformed (error 4).
        # The DMA is not reset by SOFT_RESET: what it holds then still completes, and those
        # completions ("stale") are swallowed here instead of reaching the command processor,
        # where they would be taken for completions of commands issued after the reset.
        # Loads reach the DMA through the GatherArbiter, which shares the load path with the
        # embedding-bag engine's gathers and returns each completion to its source.
        # Stores go through StoreBlocks: argument word 2 is ``rows | (blocks - 1) << 16``, and
        # one command stores ``blocks`` side-by-side 2D blocks (hw/store_blocks.py). For loads
        # the upper half of word 2 must be 0.
        blocks = StoreBlocks(desc_layout=dma.descriptor_layout)
        m.submodules.store_blocks = ResetInserter(regs.soft_reset)(blocks)
        stales = []
        for q, (cmd_in, dma_in, dma_done) in enumerate((
                (arb.load, arb.load, arb.load_done),
                (blocks.cmd, dma.store, dma.store_done))):
            eng = cp.engines[q]
            done_out = eng.done if q == 0 else blocks.dma_done
            args = eng.cmd.payload.args
            desc = cmd_in.payload
            too_wide = Signal(name=f"dma{q}_too_wide")
            fields = ((desc.sram_addr, args[1]), (desc.row_bytes, args[3]),
                      (desc.sram_stride, args[5]))
            if q == 0:
                fields += ((desc.rows, args[2]),)
            for field, word in fields:
                if len(field) < 32:
                    with m.If(word[len(field):].any()):
                        m.d.comb += too_wide.eq(1)
            # Counted per DMA descriptor, at the DMA's own ports.
            inflight = Signal(32, name=f"dma{q}_inflight")
            stale = Signal(32, name=f"dma{q}_stale")
            issued = dma_in.valid & dma_in.ready
            completed = dma_done.valid & dma_done.ready
            m.d.sync += inflight.eq(inflight + issued - completed)
            with m.If(regs.soft_reset):
                m.d.sync += stale.eq(inflight + issued - completed)
            with m.Elif(completed & (stale != 0)):
                m.d.sync += stale.eq(stale - 1)
            stales.append(stale)
            m.d.comb += [
                cmd_in.valid.eq(eng.cmd.valid),
                eng.cmd.ready.eq(cmd_in.ready),
                desc.dram_addr.eq(args[0]),
                desc.sram_addr.eq(args[1]),
                desc.rows.eq(Mux(too_wide, 0, args[2][:16])),
                desc.row_bytes.eq(args[3]),
                desc.dram_stride.eq(args[4]),
                desc.sram_stride.eq(args[5]),
                desc.tag.eq(eng.cmd.payload.header.id),
            ]
            if q == 1:
                m.d.comb += desc.more_blocks.eq(args[2][16:])
                wiring.connect(m, blocks.desc, dma.store)
                m.d.comb += [  # the command processor's error field is one bit wider
                    eng.done.valid.eq(blocks.done.valid),
                    blocks.done.ready.eq(eng.done.ready),
                    eng.done.payload.tag.eq(blocks.done.payload.tag),
                    eng.done.payload.error.eq(blocks.done.payload.error),
                ]
            m.d.comb += [
                done_out.valid.eq(dma_done.valid & (stale == 0)),
                dma_done.ready.eq(done_out.ready | (stale != 0)),
                done_out.payload.tag.eq(dma_done.payload.tag),
                done_out.payload.error.eq(dma_done.payload.error),
            ]

        # Command processor → GEMM engine (queue 2).
        eng = cp.engines[2]
        args = eng.cmd.payload.args
        g = gemm.cmd.payload
        m.d.comb += [
            gemm.cmd.valid.eq(eng.cmd.valid),
            eng.cmd.ready.eq(gemm.cmd.ready),
            g.a_addr.eq(args[0][:16]), g.b_addr.eq(args[0][16:]),
            g.c_addr.eq(args[1][:16]), g.p_addr.eq(args[1][16:]),
            g.steps.eq(args[2][:16]), g.m_tiles.eq(args[2][16:24]), g.n_tiles.eq(args[2][24:]),
            g.raw.eq(args[3][0]), g.acc.eq(args[3][1]), g.zero_point.eq(args[3][8:16]),
            g.act_min.eq(args[3][16:24]), g.act_max.eq(args[3][24:]),
            g.tag.eq(eng.cmd.payload.header.id),
            eng.done.valid.eq(gemm.done.valid),
            gemm.done.ready.eq(eng.done.ready),
            eng.done.payload.tag.eq(gemm.done.payload.tag),
            eng.done.payload.error.eq(gemm.done.payload.error),
        ]

        # Command processor → embedding-bag engine (queue 3), through the TABLE/POOL decoder;
        # its gathers share the DMA's load path.
        eng = cp.engines[3]
        wiring.connect(m, eng.cmd, embag_cmds.cmd)
        wiring.connect(m, embag_cmds.done, eng.done)
        wiring.connect(m, embag_cmds.eng_cmd, embag.cmd)
        wiring.connect(m, embag.done, embag_cmds.eng_done)
        wiring.connect(m, arb.dma, dma.load)
        wiring.connect(m, dma.load_done, arb.dma_done)
        wiring.connect(m, embag.gather, arb.gather)
        wiring.connect(m, arb.gather_done, embag.gather_done)
        m.d.comb += [
            embag_cmds.eng_busy.eq(embag.busy),
            embag_cmds.clear.eq(regs.soft_reset),
            embag.cancel.eq(regs.soft_reset),
            regs.embag_err_bag.eq(embag.error_bag),
            regs.embag_err_pos.eq(embag.error_pos),
        ]

        # After SOFT_RESET the command processor issues nothing until what was not reset has
        # drained: the DMA's descriptors from before the reset (their loads still write the
        # scratchpad) and the embedding-bag engine's cancelled job (it still writes the bags it
        # had finished). Commands pushed meanwhile wait in their queues.
        settling = Signal()
        with m.If(regs.soft_reset):
            m.d.sync += settling.eq(1)
        with m.Elif(~Cat(stale != 0 for stale in stales).any() & ~embag.busy):
            m.d.sync += settling.eq(0)
        m.d.comb += cp.hold.eq(settling)

        # DRAM windows (host registers) → DMA.
        # The registers are 32 bits; with a wider AXI address a limit of 0xFFFF_FFFF means no
        # upper limit at all.
        top = (1 << cfg.axi_addr_width) - 1
        for name in ("rd_base", "rd_limit", "wr_base", "wr_limit"):
            reg = getattr(regs, f"dram_{name}")
            if "limit" in name:
                reg = Mux(reg == 0xFFFF_FFFF, top, reg)
            m.d.comb += getattr(dma, name).eq(reg)

        # Watchdog: what counts as progress for each queue's engine.
        m.submodules.watchdog = wd = Watchdog(queues=len(queues), code=ERR_WATCHDOG)
        r_beat = self.axi.rvalid & self.axi.rready
        w_beat = self.axi.wvalid & self.axi.wready
        b_resp = self.axi.bvalid & self.axi.bready
        progress = (r_beat, w_beat | b_resp,
                    gemm.step | (gemm.c_wr.req.valid & gemm.c_wr.req.ready),
                    r_beat | (embag.out_wr.req.valid & embag.out_wr.req.ready))
        for q, p in enumerate(progress):
            m.d.comb += wd.progress[q].eq(p | cp.engines[q].done.valid)
        m.d.comb += [
            wd.busy.eq(cp.busy),
            wd.head_id.eq(cp.head_id),
            wd.limit.eq(regs.watchdog),
            wd.halt.eq(cp.error != 0),
            wd.clear.eq(regs.soft_reset),
        ]
        wiring.connect(m, wd.error, cp.ext_error)

        # Scratchpad clients (ports in this order; new clients go at the end).
        sram_clients = (dma.sram_wr, dma.sram_rd, gemm.a_rd, gemm.b_rd, gemm.c_wr, gemm.p_rd,
                        gemm.d_rd, embag.list_rd, embag.slot_rd, embag.out_wr)
        sram = BLOCKS["sram"](cfg)
        assert len(sram_clients) == SRAM_PORTS and sram.addr_width == sram_aw
        # The scratchpad is not reset by SOFT_RESET: the DMA and the embedding-bag engine, which
        # are not reset either, count on the response of every read they were granted (a lost
        # response left them waiting forever). Only the GEMM engine is reset; the responses to
        # its reads still in flight then (READ_LATENCY cycles) are dropped instead.
        m.submodules.sram = sram
        gemm_clients = (gemm.a_rd, gemm.b_rd, gemm.c_wr, gemm.p_rd, gemm.d_rd)
        drop = Signal(range(Scratchpad.READ_LATENCY + 1))
        with m.If(regs.soft_reset):
            m.d.sync += drop.eq(Scratchpad.READ_LATENCY)
        with m.Elif(drop != 0):
            m.d.sync += drop.eq(drop - 1)
        for port, client in enumerate(sram_clients):
            if any(client is c for c in gemm_clients):
                sp = sram.ports[port]
                wiring.connect(m, client.req, sp.req)
                m.d.comb += [client.rsp.valid.eq(sp.rsp.valid & (drop == 0)),
                             client.rsp.data.eq(sp.rsp.data)]
            else:
                wiring.connect(m, client, sram.ports[port])

        # DRAM.
        wiring.connect(m, dma.axi, wiring.flipped(self.axi))

        # Performance events.
        m.d.comb += [
            regs.perf_gemm_step.eq(gemm.step),
            regs.perf_gemm_stall.eq(cp.busy[2] & ~gemm.step),
            regs.perf_dma_rd_beat.eq(self.axi.rvalid & self.axi.rready),
            regs.perf_dma_wr_beat.eq(self.axi.wvalid & self.axi.wready),
        ]
        return m


def build_top(config):
    """Build a fresh top-level component for ``config`` (one per conversion or simulation)."""
    return Ember(config)
