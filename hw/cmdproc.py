"""The command processor: one queue per engine, semaphore dependencies, completion and errors.

Commands
--------
A command is :data:`CMD_WORDS` 32-bit words (:data:`cmd_layout`). Words 0 and 1 are the header:

======  =====================================================================
bits    field
======  =====================================================================
5:0     ``opcode``: which engine queue takes it (see ``opcodes`` below)
10:6    ``wait``: semaphore to wait on and decrement before issue (31 = none)
15:11   ``signal``: semaphore to increment when the engine completes it (31 = none)
31:16   ``id``: command id, reported with completions and errors
======  =====================================================================

Word 1 holds a second pair, ``wait2`` (bits 4:0) and ``signal2`` (bits 9:5), 31 = none; the rest
of word 1 is reserved. Words 2 to 7 are the engine's arguments, passed through unchanged.

Dependencies work like MTIA's command processor and VTA's dependency-token queues. There are
:data:`N_SEMS` counting semaphores. A queue issues its head command only when each of its wait
semaphores is non-zero, and takes one count from each at that moment. When the engine reports
completion, each of its signal semaphores gains one count (two cycles after the report; an error
it carries is captured after one, and issue stops in between). Two waits let a compute command wait
for its operands *and* for its output buffer to be stored, as VTA's compute waits on both load and
store tokens. A semaphore gives at most one count per cycle, to the lowest-numbered queue ready to
take it (head present, all its waits non-zero, issue register empty); semaphores are meant for
producer/consumer pairs, not for queues competing for a count. A queue's issue register refills
only when empty, so a queue issues at most every other cycle. A pushed command is checked and
routed into a register stage and enters its queue the cycle after the push. Firmware sets initial
counts (e.g. the number of free ping-pong buffers) through ``sem_write``. So the load of tile
i+1, the compute of tile i and the store of tile i-1 run at once, each waiting only on what it
needs.

Errors (sticky until ``clear``)
-------------------------------
The first error wins and is held with the failing command's id and its queue; from then on no
queue issues anything (engines finish what they already have) and ``irq`` is high.

======  =====================================================================
code    cause
======  =====================================================================
0x01    illegal opcode (no queue has it)
0x02    malformed header (semaphore index out of range, or ``wait == wait2``)
0x03    queue overflow (push into a full queue; the command is dropped)
0x04    watchdog (``ext_error`` from outside, e.g. ``hw/watchdog.py``: an engine made no
        progress on its oldest command, whose id is ``head_id``)
0x10+e  engine error ``e`` reported by the engine's completion
======  =====================================================================

``clear`` (the soft reset) empties every queue, forgets in-flight bookkeeping, zeroes the
semaphores, counters and error. Completions of commands issued before the clear are discarded.
"""

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CMD_WORDS", "N_SEMS", "SEM_NONE", "cmd_layout", "header_layout", "done_layout",
           "CommandProcessor", "ERR_OPCODE", "ERR_MALFORMED", "ERR_OVERFLOW", "ERR_WATCHDOG",
           "ERR_ENGINE"]

CMD_WORDS = 8
N_SEMS = 16
SEM_NONE = 31

ERR_OPCODE = 0x01
ERR_MALFORMED = 0x02
ERR_OVERFLOW = 0x03
ERR_WATCHDOG = 0x04
ERR_ENGINE = 0x10

header_layout = data.StructLayout({"opcode": 6, "wait": 5, "signal": 5, "id": 16,
                                   "wait2": 5, "signal2": 5, "reserved": 22})
cmd_layout = data.StructLayout({
    "header": header_layout,
    "args": data.ArrayLayout(32, CMD_WORDS - 2),
})
done_layout = data.StructLayout({"tag": 16, "error": 4})


def _or_tree(values):
    """Bitwise OR of ``values`` as a balanced tree."""
    values = list(values)
    while len(values) > 1:
        values = [values[k] | values[k + 1] if k + 1 < len(values) else values[k]
                  for k in range(0, len(values), 2)]
    return values[0]


class CommandProcessor(wiring.Component):
    """Per-engine command queues with semaphore dependencies.

    Parameters
    ----------
    opcodes : sequence of int
        Opcode of each queue, in queue order (queue q takes commands with ``opcodes[q]``).
    depth : int
        Commands each queue holds.
    inflight : int
        Commands an engine may hold between issue and completion.

    Members
    -------
    push : In(stream.Signature(cmd_layout))
        Commands from firmware or host. Always ready; a push into a full queue is an error.
    engines : Out(Signature(cmd, done)).array(len(opcodes))
        ``cmd`` carries issued commands to engine q; ``done`` returns ``{tag, error}`` per
        command, in issue order.
    sem_write : In(Signature(valid, index, value))
        Sets a semaphore's count.
    clear : In(1)
        Soft reset of all queue state and errors.
    hold : In(1)
        Issue nothing while high (commands are still accepted and queued). The top level holds
        issue after a soft reset until the engines that are not reset have drained.
    sems : Out(ArrayLayout(8, N_SEMS))
        Semaphore counts.
    completed : Out(ArrayLayout(32, queues))
        Commands completed per queue.
    pending : Out(ArrayLayout(8, queues))
        Commands queued or in flight per queue. A completion is registered and acted on over
        the next two cycles (its error captured, its semaphore counts added); the command
        counts as pending, and not yet in ``completed``, until both are visible.
    busy, waiting : Out(queues)
        Per queue: an engine holds a command / the head waits on a semaphore (for counters).
    error, error_id, error_queue : Out
        Sticky error code (0 = none), id of the faulting command and its queue.
    irq : Out(1)
        High while an error is held.
    head_id : Out(ArrayLayout(16, queues))
        Per queue, the id of the oldest command its engine holds (valid while ``busy``).
    ext_error : In(Signature(valid, code, id, queue))
        An error raised outside (the watchdog). Like an engine's, it is captured the cycle
        after it is raised; an engine error reported in the same cycle wins over it.
    """

    def __init__(self, *, opcodes, depth=8, inflight=4):
        opcodes = tuple(opcodes)
        if not opcodes or not all(isinstance(o, int) and 0 < o < 64 for o in opcodes):
            raise ValueError(f"opcodes must be a non-empty sequence of ints in [1, 63], "
                             f"not {opcodes!r}")
        if len(set(opcodes)) != len(opcodes):
            raise ValueError(f"opcodes must be distinct, not {opcodes!r}")
        for name, value in (("depth", depth), ("inflight", inflight)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self.opcodes, self.depth, self.inflight = opcodes, depth, inflight
        nq = len(opcodes)
        engine = wiring.Signature({
            "cmd": Out(stream.Signature(cmd_layout)),
            "done": In(stream.Signature(done_layout)),
        })
        super().__init__({
            "push": In(stream.Signature(cmd_layout)),
            "engines": Out(engine).array(nq),
            "sem_write": In(wiring.Signature({"valid": Out(1), "index": Out(4),
                                              "value": Out(8)})),
            "clear": In(1),
            "hold": In(1),
            "sems": Out(data.ArrayLayout(8, N_SEMS)),
            "completed": Out(data.ArrayLayout(32, nq)),
            "pending": Out(data.ArrayLayout(8, nq)),
            "busy": Out(nq),
            "waiting": Out(nq),
            "error": Out(8),
            "error_id": Out(16),
            "error_queue": Out(4),
            "irq": Out(1),
            "head_id": Out(data.ArrayLayout(16, nq)),
            "ext_error": In(wiring.Signature({"valid": Out(1), "code": Out(8), "id": Out(16),
                                              "queue": Out(4)})),
        })

    def elaborate(self, platform):
        m = Module()
        nq = len(self.opcodes)
        sems = self.sems
        halt = Signal()                     # `error != 0`, in its own flip-flop
        # An engine or the watchdog reported an error in the previous cycle: it is captured one
        # cycle after the report, so this flag stops issue in between, as the error would.
        failing = Signal()
        fails = []

        # Error capture: the first error wins. Engine and external errors are registered first
        # (so they are captured the cycle after they are reported, and `failing` stops issue in
        # that cycle); a push error is already a register. At equal age an engine error wins
        # over an external one, and both over a push error: the push error of cycle t+1 is
        # younger than an engine error reported in cycle t.
        new_err = Signal(8)
        new_err_id = Signal(16)
        new_err_q = Signal(4)
        x_valid = Signal()
        x_code = Signal(8, reset_less=True)
        x_id = Signal(16, reset_less=True)
        x_queue = Signal(4, reset_less=True)
        m.d.sync += [x_valid.eq(self.ext_error.valid), x_code.eq(self.ext_error.code),
                     x_id.eq(self.ext_error.id), x_queue.eq(self.ext_error.queue)]
        fails.append(self.ext_error.valid)

        # Push: a register stage that holds the command with its header already checked and
        # routed (the queue it goes to, its waits as a mask, an opcode/header error); the cycle
        # after, the command enters its queue, or raises overflow if the queue is full. So the
        # header decode and the queue's fullness do not chain into the error capture.
        head = self.push.payload.header
        m.d.comb += self.push.ready.eq(1)
        bad_sem = Cat((sem >= N_SEMS) & (sem != SEM_NONE)
                      for sem in (head.wait, head.signal, head.wait2, head.signal2)).any() | \
            ((head.wait == head.wait2) & (head.wait != SEM_NONE))
        known = Cat(head.opcode == opcode for opcode in self.opcodes).any()
        p_cmd = Signal(cmd_layout, reset_less=True)     # the pushed command
        p_mask = Signal(N_SEMS, reset_less=True)        # its waits as a mask of semaphores
        p_mine = Signal(nq)                 # the queue it enters (none for a bad header)
        p_err = Signal(8)                   # ERR_OPCODE / ERR_MALFORMED, or 0
        m.d.sync += [
            p_cmd.eq(self.push.payload),
            p_mask.eq(Cat((head.wait == s) | (head.wait2 == s) for s in range(N_SEMS))),
            p_mine.eq(Cat(self.push.valid & ~bad_sem & (head.opcode == opcode)
                          for opcode in self.opcodes)),
            p_err.eq(Mux(self.push.valid & ~known, ERR_OPCODE,
                         Mux(self.push.valid & bad_sem, ERR_MALFORMED, 0))),
        ]

        # Per queue and semaphore, a completion's count (0-2), registered; `dec`: takes.
        inc = [[Signal(2, name=f"inc_q{q}_s{s}") for s in range(N_SEMS)] for q in range(nq)]
        dec = [Signal(N_SEMS, name=f"dec_q{q}") for q in range(nq)]
        ready = [Signal(name=f"ready_{q}") for q in range(nq)]
        masks = [Signal(N_SEMS, name=f"head_mask_{q}", reset_less=True) for q in range(nq)]
        with m.If(p_err != 0):
            m.d.comb += [new_err.eq(p_err), new_err_id.eq(p_cmd.header.id), new_err_q.eq(0)]
        with m.If(x_valid):
            m.d.comb += [new_err.eq(x_code), new_err_id.eq(x_id), new_err_q.eq(x_queue)]
        # `sems[s] != 0`, kept in a register beside the counts (updated with them below), so the
        # issue decision starts from one flip-flop per semaphore, not from an 8-bit zero test.
        nonzero = Signal(N_SEMS)

        for q, opcode in enumerate(self.opcodes):
            eng = self.engines[q]
            # Each entry carries, beside the command, its waits decoded at push time into a mask
            # of semaphores (`wait` and `wait2` one-hot, SEM_NONE none): the issue logic then
            # reads a register per semaphore instead of a 16-way multiplexer per wait. The queue
            # is followed by a head register (below), so it holds one entry less.
            queue = fifo.SyncFIFOBuffered(width=cmd_layout.size + N_SEMS,
                                          depth=max(self.depth - 1, 1))
            # Bookkeeping of issued commands: their signals as two one-hot masks (decoded at issue
            # from the head register) and their id. First-word fall-through: an entry is readable
            # the cycle after the take, before the engine can possibly complete the command.
            track = fifo.SyncFIFO(width=2 * N_SEMS + 16, depth=max(self.inflight, 2))
            m.submodules[f"queue{q}"] = queue
            m.submodules[f"track{q}"] = track
            with m.If(p_mine[q]):
                with m.If(queue.w_rdy):
                    m.d.comb += queue.w_en.eq(1)
                with m.Else():
                    m.d.comb += [new_err.eq(ERR_OVERFLOW), new_err_id.eq(p_cmd.header.id),
                                 new_err_q.eq(q)]
            m.d.comb += queue.w_data.eq(Cat(p_cmd, p_mask))

            # Head register: the queue's read data comes from LUT RAM, late in the cycle, so the
            # oldest entry is first moved into flip-flops (when the register is empty) and the
            # issue decision starts from them.
            qhead = Signal(cmd_layout, name=f"head_{q}", reset_less=True)
            qmask = masks[q]
            head_full = Signal(name=f"head_full_{q}")
            m.d.comb += queue.r_en.eq(~head_full)
            with m.If(~head_full & queue.r_rdy):
                m.d.sync += [Cat(qhead, qmask).eq(queue.r_data), head_full.eq(1)]

            # Gate: the head moves into the issue register once its semaphores allow; the count is
            # taken at that moment, so `cmd.valid` never drops before `ready`.
            cmd_reg = Signal(cmd_layout, name=f"issue_{q}", reset_less=True)
            cmd_full = Signal(name=f"issue_full_{q}")
            # A semaphore gives at most one count per cycle, to the lowest-numbered queue that is
            # ready to take it (`ready_q`: a head, its waits non-zero, room to issue), so two
            # queues can never both take the last count. The priority looks at the lower queues'
            # readiness, which is all registers, not at their takes, so the queues do not chain.
            # Whether two heads share a semaphore (`conflict`) is decided from their masks alone,
            # beside the semaphore test, so a queue's take is one gate on the queues' readiness.
            own_ok = Signal(name=f"sem_own_{q}")
            sem_ok = Signal(name=f"sem_ok_{q}")
            free = Signal(name=f"sem_free_{q}")
            m.d.comb += own_ok.eq(~(qmask & ~nonzero).any())
            blocked = []
            for j in range(q):
                conflict = Signal(name=f"sem_conflict_{j}_{q}")
                m.d.comb += conflict.eq((masks[j] & qmask).any())
                blocked.append(ready[j] & conflict)
            m.d.comb += free.eq(~Cat(blocked).any() if blocked else 1)
            m.d.comb += sem_ok.eq(own_ok & free)
            # The issue register refills only when empty (not in the cycle the engine takes it):
            # the engine's `ready`, often deep logic, then only clears `cmd_full` and never runs
            # into the semaphore and queue logic. Commands last longer than the refill cycle.
            room = Signal(name=f"issue_room_{q}")
            ready_q = ready[q]
            m.d.comb += room.eq(head_full & ~halt & ~failing & ~self.hold & ~cmd_full &
                                track.w_rdy)
            m.d.comb += ready_q.eq(room & own_ok)
            take = Signal(name=f"take_{q}")
            m.d.comb += take.eq(ready_q & free)
            signals = Cat(Cat(qhead.header.signal == s for s in range(N_SEMS)),
                          Cat(qhead.header.signal2 == s for s in range(N_SEMS)))
            m.d.comb += [
                self.waiting[q].eq(head_full & ~sem_ok & ~halt),
                eng.cmd.valid.eq(cmd_full),
                eng.cmd.payload.eq(cmd_reg),
                track.w_en.eq(take),
                track.w_data.eq(Cat(signals, qhead.header.id)),
                dec[q].eq(qmask & take.replicate(N_SEMS)),
            ]
            with m.If(eng.cmd.ready & cmd_full):
                m.d.sync += cmd_full.eq(0)
            # While empty, the issue register follows the head register (so its 256 enables
            # hang on one flip-flop, not on the issue decision); a take only marks it full.
            with m.If(~cmd_full):
                m.d.sync += cmd_reg.eq(qhead)
            with m.If(take):
                m.d.sync += [cmd_full.eq(1), head_full.eq(0)]

            # Completion: in issue order. Completions are always taken; one with no bookkeeping
            # entry can only come from a command issued before a `clear`, and is discarded. The
            # completion is registered (its signals, id and error) and acted on the cycle after.
            m.d.comb += eng.done.ready.eq(1)
            completes = eng.done.valid & track.r_rdy
            m.d.comb += track.r_en.eq(completes)
            fails.append(completes & (eng.done.payload.error != 0))
            c_valid = Signal(name=f"done_valid_{q}")
            c_settle = Signal(name=f"done_settle_{q}")
            m.d.sync += c_settle.eq(c_valid)
            # `c_signals` holds the bookkeeping entry's signal masks as read (reset-less); they
            # count only while `c_valid` is set, so a clear drops a completion registered in
            # the cycle of the clear.
            c_signals = Signal(2 * N_SEMS, name=f"done_signals_{q}", reset_less=True)
            c_id = Signal(16, name=f"done_id_{q}", reset_less=True)
            c_error = Signal(4, name=f"done_error_{q}", reset_less=True)
            m.d.sync += [
                c_valid.eq(completes),
                c_signals.eq(track.r_data[:2 * N_SEMS]),
                c_id.eq(track.r_data[2 * N_SEMS:]),
                c_error.eq(eng.done.payload.error),
            ]
            for s in range(N_SEMS):
                m.d.comb += inc[q][s].eq((c_signals[s] & c_valid) +
                                         (c_signals[N_SEMS + s] & c_valid))
            with m.If(c_settle):
                m.d.sync += self.completed[q].eq(self.completed[q] + 1)
            with m.If(c_valid):
                with m.If(c_error != 0):
                    m.d.comb += [new_err.eq(ERR_ENGINE | c_error), new_err_id.eq(c_id),
                                 new_err_q.eq(q)]
            m.d.comb += [
                self.busy[q].eq(track.r_rdy),
                self.head_id[q].eq(track.r_data[2 * N_SEMS:]),
                # A completion stays pending until its error is captured and its semaphore
                # counts are in `sems` (two cycles), so an idle STATUS means all of it is seen.
                self.pending[q].eq(queue.level + head_full + track.level + p_mine[q] +
                                   c_valid + c_settle),
            ]

        m.d.sync += failing.eq(_or_tree(fails))

        # Semaphores: every queue's takes and completions in one update per cycle. The
        # completions' counts are summed per semaphore into a register (`up`) first, so a
        # completion adds its count two cycles after the engine reports it. At most one queue
        # takes a given semaphore per cycle, so `down` is one bit, and both outcomes (`sems + up`
        # and `sems + up - 1`, with their zero tests) come from registers alone: the takes only
        # select one, so no adder follows the issue decision.
        for s in range(N_SEMS):
            up = Signal(range(2 * nq + 1), name=f"sem_up_{s}")
            m.d.sync += up.eq(sum(inc[q][s] for q in range(nq)))
            down = Signal(name=f"sem_down_{s}")
            m.d.comb += down.eq(_or_tree(dec[q][s] for q in range(nq)))
            keep = Signal(8, name=f"sem_keep_{s}")
            less = Signal(8, name=f"sem_less_{s}")
            m.d.comb += [keep.eq(sems[s] + up), less.eq(sems[s] + up - 1)]
            with m.If(self.sem_write.valid & (self.sem_write.index == s)):
                m.d.sync += [sems[s].eq(self.sem_write.value),
                             nonzero[s].eq(self.sem_write.value != 0)]
            with m.Elif(down):
                m.d.sync += [sems[s].eq(less), nonzero[s].eq(keep != 1)]
            with m.Else():
                m.d.sync += [sems[s].eq(keep), nonzero[s].eq(keep != 0)]

        with m.If(~halt & (new_err != 0)):
            m.d.sync += [self.error.eq(new_err), self.error_id.eq(new_err_id),
                         self.error_queue.eq(new_err_q), halt.eq(1)]
        m.d.comb += self.irq.eq(halt)

        # Soft reset: a synchronous reset of this whole block, FIFOs included, except for the
        # datapath registers declared `reset_less` (the pushed command and its wait mask, the
        # head and issue registers, the external error's and the completions' signal masks,
        # code and id): each is read only while a reset valid flag (`p_mine`/`p_err`,
        # `head_full_q`, `issue_full_q`, `x_valid`, `done_valid_q`) says it holds something.
        # Semaphore counts, their pending increments (`sem_up_s`, added unconditionally),
        # counters and the error are reset.
        return ResetInserter(self.clear)(m)
