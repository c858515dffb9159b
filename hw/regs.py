"""The register block: the map of ``hw/regmap.py`` on two Wishbone subordinate ports.

``host`` comes from the AXI4-Lite bridge (``hw/axil.py``); ``fw`` is the control core's MMIO
window. Both are answered two cycles after the request is taken, with ``ack``, or ``err`` for an
offset that is neither a register nor (host only) the IMEM window. A request is taken in the
cycle it is presented, except a read when the other side starts a read in the same cycle: the
two take turns, and one of them is taken a cycle later. Access rights per side come from the
map. A write takes effect in the cycle it is taken; a read returns the value of that cycle.

The read multiplexer is split in two registered levels: every group of eight words (offset bits
4:2) is selected into a register of its own, and the groups (offset bits 8:5) in the next cycle.
In one level, some 80 registers of 32 bits on two sides converged on 64 flip-flops and made the
most congested spot of the whole chip, the one that kept ``router2`` from finishing
(synth/README.md, "Routability"). The first level is shared by the two sides (hence the turns):
with one per side, it was again the most congested spot of ``small`` once the scratchpad's
crossbar had been halved (synth/README.md, "eleventh round").
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import regmap, wishbone
from .cmdproc import N_SEMS, cmd_layout

__all__ = ["Registers"]


class Registers(wiring.Component):
    """Host and firmware registers, command staging, performance counters and the interrupt.

    Parameters
    ----------
    config : EmberConfig
        Reported in ``HW_PE``/``HW_MEM``.
    imem_words : int
        Size of the control core's IMEM in 32-bit words (the host's IMEM window).
    fw_addr_width : int
        Width of ``fw.adr`` (the control core's MMIO window, default 26).
    imem_backpressure : bool
        Add the input ``imem_write_rdy``: a host write to the IMEM window is then acknowledged
        two cycles after ``imem_write_rdy`` was high with it (``imem_write.en`` stays up,
        with the same fields, until then). For a write port that crosses into another clock
        domain (``hw/host_cdc.py``). Default False: every write is taken at once.

    Members
    -------
    host : In(wishbone.Signature(addr_width=HOST_ADDR_WIDTH - 2))
        Host side (byte offset = 4·adr).
    fw : In(wishbone.Signature(addr_width=...))
        Firmware side (MMIO window, word offsets).
    push : Out(stream.Signature(cmd_layout))
        Commands to the command processor.
    sem_write : Out(Signature(valid, index, value))
        Semaphore writes.
    soft_reset : Out(1)
        One-cycle pulse in the cycle after a write of ``CTRL.SOFT_RESET``: a flip-flop, since
        it resets the GEMM engine and clears the command processor (thousands of flip-flops),
        still before the write is acknowledged.
    cpu_reset : Out(1)
        ``CTRL.CPU_RESET``.
    imem_write : Out(host_write_signature(30))
        Host writes into the IMEM window, in the core's word address space.
    imem_write_rdy : In(1)
        Only with ``imem_backpressure``: the write port takes the write offered in this cycle.
    cp_* : In
        Command-processor status: semaphores, counters, error.
    perf_* : In(1)
        Per-cycle events for the performance counters.
    embag_err_bag, embag_err_pos : In(32)
        The embedding-bag engine's sticky error bag and position (``EMBAG_ERR_*``).
    watchdog : Out(32)
        ``WATCHDOG``: the watchdog limit in cycles (0 off).
    dram_rd_base, dram_rd_limit, dram_wr_base, dram_wr_limit : Out(32)
        The DRAM windows (``DRAM_RD_*``, ``DRAM_WR_*``), inclusive byte bounds in whole bus
        words: the bits below the bus width read 0 in a base and 1 in a limit. Only the host
        writes them (firmware reads), and ``SOFT_RESET`` keeps them.
    irq : Out(1)
        ``|(IRQ_STATUS & IRQ_ENABLE)``.
    """

    def __init__(self, *, config, imem_words, fw_addr_width=26, imem_backpressure=False):
        if not isinstance(imem_backpressure, bool):
            raise TypeError(f"imem_backpressure must be a bool, not {imem_backpressure!r}")
        self.config = config
        self.imem_words = imem_words
        self.imem_backpressure = imem_backpressure
        nq = regmap.N_QUEUES
        members = {
            "host": In(wishbone.Signature(addr_width=regmap.HOST_ADDR_WIDTH - 2)),
            "fw": In(wishbone.Signature(addr_width=fw_addr_width)),
            "push": Out(stream.Signature(cmd_layout)),
            "sem_write": Out(wiring.Signature({"valid": Out(1), "index": Out(4),
                                               "value": Out(8)})),
            "soft_reset": Out(1),
            "cpu_reset": Out(1, init=1),
            "imem_write": Out(wishbone.host_write_signature(30)),
            "cp_sems": In(data.ArrayLayout(8, N_SEMS)),
            "cp_completed": In(data.ArrayLayout(32, nq)),
            "cp_pending": In(data.ArrayLayout(8, nq)),
            "cp_busy": In(nq),
            "cp_waiting": In(nq),
            "cp_error": In(8),
            "cp_error_id": In(16),
            "cp_error_queue": In(4),
            "perf_gemm_step": In(1),
            "perf_gemm_stall": In(1),
            "perf_dma_rd_beat": In(1),
            "perf_dma_wr_beat": In(1),
            "embag_err_bag": In(32),
            "embag_err_pos": In(32),
            "watchdog": Out(32),
            "dram_rd_base": Out(32),
            "dram_rd_limit": Out(32, init=0xFFFF_FFFF),
            "dram_wr_base": Out(32),
            "dram_wr_limit": Out(32, init=0xFFFF_FFFF),
            "irq": Out(1),
        }
        if imem_backpressure:
            members["imem_write_rdy"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        nq = regmap.N_QUEUES

        doorbell = Signal(32)
        mailbox = Signal(32, name="host_mailbox")
        fw_status = Signal(32)
        irq_status = Signal(regmap.IRQ_BITS)
        irq_enable = Signal(regmap.IRQ_BITS)
        cycles = Signal(64)
        gemm_steps, gemm_stall = Signal(32), Signal(32)
        rd_beats, wr_beats = Signal(32), Signal(32)
        job_args = [Signal(32, name=f"arg{i}") for i in range(16)]
        busy_cycles = [Signal(32, name=f"perf_busy{q}") for q in range(nq)]
        wait_cycles = [Signal(32, name=f"perf_wait{q}") for q in range(nq)]

        def log2(v):
            return v.bit_length() - 1

        # Values read at each register (same on both sides where readable).
        readable = {
            "ID": Const(regmap.ID_VALUE, 32),
            "VERSION": Const(regmap.VERSION, 32),
            "HW_PE": Const(cfg.pe_rows | cfg.pe_cols << 8 | cfg.pe_lanes << 16, 32),
            "HW_MEM": Const(cfg.bus_bytes | log2(cfg.sram_banks) << 8
                            | log2(cfg.sram_depth) << 16, 32),
            "CTRL": Cat(self.cpu_reset, Const(0, 1)),
            "STATUS": Cat(Cat(self.cp_pending[q] != 0 for q in range(nq)).any(),
                          self.cp_error != 0, self.cpu_reset),
            "DOORBELL": doorbell,
            "MAILBOX": mailbox,
            "FW_STATUS": fw_status,
            "IRQ_STATUS": irq_status,
            "IRQ_ENABLE": irq_enable,
            "ERR_CODE": self.cp_error,
            "ERR_ID": self.cp_error_id,
            "ERR_QUEUE": self.cp_error_queue,
            "PERF_CYCLES": cycles[:32],
            "PERF_CYCLES_HI": cycles[32:],
            "PERF_GEMM_STEPS": gemm_steps,
            "PERF_GEMM_STALL": gemm_stall,
            "PERF_DMA_RD_BEATS": rd_beats,
            "PERF_DMA_WR_BEATS": wr_beats,
            "EMBAG_ERR_BAG": self.embag_err_bag,
            "EMBAG_ERR_POS": self.embag_err_pos,
            "WATCHDOG": self.watchdog,
            "DRAM_RD_BASE": self.dram_rd_base,
            "DRAM_RD_LIMIT": self.dram_rd_limit,
            "DRAM_WR_BASE": self.dram_wr_base,
            "DRAM_WR_LIMIT": self.dram_wr_limit,
        }
        for s in range(N_SEMS):
            readable[f"SEM{s}"] = self.cp_sems[s]
        for i in range(16):
            readable[f"ARG{i}"] = job_args[i]
        for q in range(nq):
            readable[f"Q_COMPLETED{q}"] = self.cp_completed[q]
            readable[f"Q_PENDING{q}"] = self.cp_pending[q]
            readable[f"PERF_BUSY{q}"] = busy_cycles[q]
            readable[f"PERF_WAIT{q}"] = wait_cycles[q]

        perf_clear = Signal()
        soft_reset_req = Signal()       # a write of CTRL.SOFT_RESET, this cycle
        m.d.sync += self.soft_reset.eq(soft_reset_req)
        pushes = []

        # Each side: its request, offset, write decode and hit; the reads go through one first
        # level shared by both sides (below), so a read is taken only when that level is free.
        sides = {}
        for side in ("host", "fw"):
            bus = getattr(self, side)
            stage = Signal(data.ArrayLayout(32, 8), name=f"{side}_stage")
            busy = Signal(name=f"{side}_busy")          # a request in the read's second cycle
            request = bus.cyc & bus.stb & ~bus.ack & ~bus.err & ~busy
            offset = Signal(regmap.HOST_ADDR_WIDTH if side == "host" else len(bus.adr) + 2,
                            name=f"{side}_offset")
            m.d.comb += offset.eq(bus.adr << 2)
            write = request & bus.we
            hit = Signal(name=f"{side}_hit")
            push = Signal(name=f"{side}_push")
            pushes.append((push, stage))
            # A host write to the IMEM window that the write port cannot take yet is not
            # acknowledged: the request stays, and is offered again next cycle.
            stall = None
            if side == "host" and self.imem_backpressure:
                stall = Signal(name="imem_stall")

            with m.Switch(offset):
                for reg in regmap.REGS:
                    rights = getattr(reg, side)
                    if rights == "-":
                        continue
                    with m.Case(reg.offset):
                        m.d.comb += hit.eq(1)
                        if "w" in rights:
                            with m.If(write):
                                self._write(m, side, reg.name, bus.dat_w, locals_=dict(
                                    doorbell=doorbell, mailbox=mailbox, fw_status=fw_status,
                                    irq_status=irq_status, irq_enable=irq_enable,
                                    stage=stage, push=push, perf_clear=perf_clear,
                                    job_args=job_args, soft_reset=soft_reset_req))
                if side == "host":
                    with m.Default():
                        in_imem = (offset >= regmap.IMEM_WINDOW) & \
                                  (offset < regmap.IMEM_WINDOW + 4 * self.imem_words)
                        m.d.comb += hit.eq(in_imem)
                        with m.If(write & in_imem):
                            m.d.comb += [
                                self.imem_write.en.eq(1),
                                self.imem_write.addr.eq((offset - regmap.IMEM_WINDOW) >> 2),
                                self.imem_write.data.eq(bus.dat_w),
                                self.imem_write.sel.eq(bus.sel),
                            ]
                            if stall is not None:
                                m.d.comb += stall.eq(~self.imem_write_rdy)
            # The registers this side may not read, but the other may: they read 0 here.
            hidden = [reg.offset for reg in regmap.REGS
                      if reg.name in readable and not self._readable(reg, side)
                      and self._readable(reg, "fw" if side == "host" else "host")]
            sides[side] = dict(bus=bus, stage=stage, busy=busy, request=request, offset=offset,
                               hit=hit, stall=stall, hidden=hidden,
                               read=request & ~bus.we)

        # Reads, first level, shared: each group of eight words into a register, for the side
        # whose read is taken this cycle. With one such level per side, the ~80 registers of
        # 32 bits that both sides read converged on two sets of multiplexers, and on the `small`
        # preset that spot was the most congested of the chip once the scratchpad's crossbar was
        # halved (synth/README.md, "tenth round"). When both sides start a read in the same
        # cycle they take turns; the other side's request stays and is taken a cycle later.
        host, fw = sides["host"], sides["fw"]
        read_turn = Signal()                # 1: the firmware's read goes first on a clash
        pick_fw = Signal()                  # the first level serves the firmware this cycle
        m.d.comb += pick_fw.eq(fw["read"] & (~host["read"] | read_turn))
        with m.If(host["read"] & fw["read"]):
            m.d.sync += read_turn.eq(~read_turn)
        host["taken"] = host["request"] & ~(host["read"] & pick_fw)
        fw["taken"] = fw["request"] & ~(fw["read"] & ~pick_fw)
        if host["stall"] is not None:
            host["taken"] = host["taken"] & ~host["stall"]
        sel = Signal(9, name="rd_offset")   # the offset the first level selects
        m.d.comb += sel.eq(Mux(pick_fw, fw["offset"][:9], host["offset"][:9]))
        values = dict(readable)
        for i in range(8):
            values[f"CMD{i}"] = Mux(pick_fw, fw["stage"][i], host["stage"][i])
        groups = {}
        for reg in regmap.REGS:
            if reg.name in values and (self._readable(reg, "host") or self._readable(reg, "fw")):
                assert reg.offset < 1 << 9 and reg.offset % 4 == 0, reg
                groups.setdefault(reg.offset >> 5, {})[(reg.offset >> 2) & 7] = values[reg.name]
        group_q = {}
        for g, words in sorted(groups.items()):
            group_q[g] = Signal(32, name=f"rd_group{g}", reset_less=True)
            with m.Switch(sel[2:5]):
                for w, value in sorted(words.items()):
                    with m.Case(w):
                        m.d.sync += group_q[g].eq(value)
                with m.Default():
                    m.d.sync += group_q[g].eq(0)

        for side, v in sides.items():
            bus, offset, busy = v["bus"], v["offset"], v["busy"]
            rdata = Signal(32, name=f"{side}_rdata")
            dat_r = Signal(32, name=f"{side}_dat_r", reset_less=True)    # read with ack only
            group = Signal(4, name=f"{side}_group")
            in_regs = Signal(name=f"{side}_in_regs")    # not the IMEM window (reads 0)
            hidden = Signal(name=f"{side}_hidden")      # readable by the other side only
            hit_q = Signal(name=f"{side}_hit_q")
            m.d.sync += [busy.eq(v["taken"]), hit_q.eq(v["hit"]), group.eq(offset[5:9]),
                         in_regs.eq(offset[9:] == 0),
                         hidden.eq(Cat(offset == o for o in v["hidden"]).any())]
            # Second level: the group, with the answer.
            with m.If(in_regs & ~hidden):
                with m.Switch(group):
                    for g, q in group_q.items():
                        with m.Case(g):
                            m.d.comb += rdata.eq(q)
            m.d.sync += [
                bus.ack.eq(busy & hit_q),
                bus.err.eq(busy & ~hit_q),
            ]
            # Loaded only with the answer, and held until the next one: the shared first level
            # moves on to the other side's reads while this side still holds its address.
            with m.If(busy):
                m.d.sync += dat_r.eq(rdata)
            m.d.comb += bus.dat_r.eq(dat_r)

        # Pushes: each side's push is held until the command processor takes it (the two sides
        # alternate when both wait). The command processor is always ready, so a push is held
        # for at most two cycles; a push in that time would be dropped, but a bus write takes two.
        # If both sides write a semaphore in the same cycle, the firmware's write wins.
        pending = [Signal(name=f"push_pending_{i}") for i in range(2)]
        held = [Signal(cmd_layout, name=f"push_held_{i}", reset_less=True)   # used when pending
                for i in range(2)]
        for i, (push, stage) in enumerate(pushes):
            with m.If(push & ~pending[i]):
                m.d.sync += [pending[i].eq(1), held[i].eq(stage)]
        turn = Signal()
        pick = Signal()
        m.d.comb += [
            pick.eq(pending[1] & (turn | ~pending[0])),
            self.push.valid.eq(pending[0] | pending[1]),
            self.push.payload.eq(Mux(pick, held[1], held[0])),
        ]
        with m.If(self.push.valid & self.push.ready):
            m.d.sync += turn.eq(~pick)
            for i in range(2):
                with m.If(pick == i):
                    m.d.sync += pending[i].eq(0)

        # Performance counters. Events are registered first and counted a cycle late, so that no
        # engine's handshake logic runs combinationally into the 32-bit counter adders.
        ev = {name: Signal(name=f"{name}_r") for name in
              ("perf_gemm_step", "perf_gemm_stall", "perf_dma_rd_beat", "perf_dma_wr_beat")}
        for name, reg in ev.items():
            m.d.sync += reg.eq(getattr(self, name))
        busy_r, waiting_r = Signal(nq), Signal(nq)
        m.d.sync += [busy_r.eq(self.cp_busy), waiting_r.eq(self.cp_waiting)]
        with m.If(perf_clear):
            m.d.sync += [c.eq(0) for c in (cycles, gemm_steps, gemm_stall, rd_beats, wr_beats,
                                           *busy_cycles, *wait_cycles)]
        with m.Else():
            m.d.sync += [
                cycles.eq(cycles + 1),
                gemm_steps.eq(gemm_steps + ev["perf_gemm_step"]),
                gemm_stall.eq(gemm_stall + ev["perf_gemm_stall"]),
                rd_beats.eq(rd_beats + ev["perf_dma_rd_beat"]),
                wr_beats.eq(wr_beats + ev["perf_dma_wr_beat"]),
            ]
            for q in range(nq):
                m.d.sync += [busy_cycles[q].eq(busy_cycles[q] + busy_r[q]),
                             wait_cycles[q].eq(wait_cycles[q] + waiting_r[q])]

        # Interrupts: errors latch into IRQ_STATUS.ERROR; a completion in queue q latches
        # DONE<q> (a queue's count goes up by at most one a cycle, so its low bit toggles); BUSY
        # falling (every queue drained) latches IDLE. A W1C write in the same cycle as an event
        # loses to the event, so a host that clears a cause and then reads the state it
        # reports cannot miss an event between the two. `irq` also sees the events of this
        # cycle, before they are latched: a host reacts one cycle sooner.
        busy = Signal()
        busy_prev = Signal()
        done_lsb = Signal(nq)
        events = Signal(regmap.IRQ_BITS)
        m.d.comb += busy.eq(Cat(self.cp_pending[q] != 0 for q in range(nq)).any())
        m.d.sync += [busy_prev.eq(busy),
                     done_lsb.eq(Cat(self.cp_completed[q][0] for q in range(nq)))]
        with m.If(self.soft_reset):      # the counts are zeroed with it: no DONE for that
            m.d.sync += done_lsb.eq(0)
        m.d.comb += events[regmap.IRQ_ERROR].eq(self.cp_error != 0)
        for q in range(nq):
            m.d.comb += events[regmap.IRQ_DONE + q].eq(self.cp_completed[q][0] != done_lsb[q])
        m.d.comb += events[regmap.IRQ_IDLE].eq(busy_prev & ~busy)
        for bit in (regmap.IRQ_ERROR, *range(regmap.IRQ_DONE, regmap.IRQ_IDLE + 1)):
            with m.If(events[bit]):
                m.d.sync += irq_status[bit].eq(1)
        m.d.comb += self.irq.eq(((irq_status | events) & irq_enable).any())
        return m

    @staticmethod
    def _readable(reg, side):
        rights = getattr(reg, side)
        return "r" in rights or rights == "w1c"

    def _write(self, m, side, name, value, locals_):
        v = locals_
        if name == "CTRL":
            m.d.sync += self.cpu_reset.eq(value[0])
            m.d.comb += v["soft_reset"].eq(value[1])
        elif name == "DOORBELL":
            m.d.sync += v["doorbell"].eq(v["doorbell"] + 1)
        elif name == "MAILBOX":
            m.d.sync += v["mailbox"].eq(value)
        elif name == "FW_STATUS":
            m.d.sync += v["fw_status"].eq(value)
        elif name == "IRQ_STATUS":       # write 1 to clear
            m.d.sync += v["irq_status"].eq(v["irq_status"] & ~value[:regmap.IRQ_BITS])
        elif name == "IRQ_ENABLE":
            m.d.sync += v["irq_enable"].eq(value[:regmap.IRQ_BITS])
        elif name == "FW_IRQ":
            with m.If(value[0]):
                m.d.sync += v["irq_status"][regmap.IRQ_FW].eq(1)
        elif name.startswith("CMD") and name[3:].isdigit():
            m.d.sync += v["stage"][int(name[3:])].eq(value)
        elif name == "CMD_PUSH":
            m.d.comb += v["push"].eq(1)
        elif name.startswith("SEM"):
            m.d.comb += [self.sem_write.valid.eq(1), self.sem_write.index.eq(int(name[3:])),
                         self.sem_write.value.eq(value[:8])]
        elif name.startswith("ARG"):
            m.d.sync += v["job_args"][int(name[3:])].eq(value)
        elif name == "PERF_CLEAR":
            with m.If(value[0]):
                m.d.comb += v["perf_clear"].eq(1)
        elif name == "WATCHDOG":
            m.d.sync += self.watchdog.eq(value)
        elif name.startswith("DRAM_"):
            # Windows are whole bus words: a base's low bits are 0, a limit's are 1.
            low = (1 << (self.config.bus_bytes.bit_length() - 1)) - 1
            target = getattr(self, name.lower())
            if name.endswith("_BASE"):
                m.d.sync += target.eq(value & ~low & 0xFFFF_FFFF)
            else:
                m.d.sync += target.eq(value | low)
        else:
            raise AssertionError(f"no write action for {name!r}")

