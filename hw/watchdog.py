"""The engine watchdog: an engine that holds a command and makes no progress is an error.

Per queue, a counter runs while the queue's engine holds a command (``busy``) and restarts at
every ``progress`` event of that engine (a completion, a data beat, an array step: the top level
says what counts, ``hw/top.py``), one cycle after it (events are registered first). When it reaches ``limit`` the watchdog raises ``error`` (one
cycle later, from registers) with the queue and that engine's oldest command id, for the command
processor's sticky error (``ERR_WATCHDOG``). ``limit`` 0 turns it off. While ``halt`` is high (an
error is already held) or on ``clear`` (the soft reset) every counter restarts.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Watchdog"]


class Watchdog(wiring.Component):
    """No-progress detector for ``queues`` engines.

    Parameters
    ----------
    queues : int
        Number of engine queues.
    code : int
        The error code raised (the command processor's ``ERR_WATCHDOG``).

    Members
    -------
    busy, progress : In(queues)
        Per queue: its engine holds a command; its engine made progress this cycle.
    head_id : In(ArrayLayout(16, queues))
        Per queue, the id of the engine's oldest command.
    limit : In(32)
        Cycles without progress that make an error; 0 = off.
    halt, clear : In(1)
        An error is held / soft reset: counters restart.
    error : Out(Signature(valid, code, id, queue))
        The error, for ``CommandProcessor.ext_error``; ``code`` is ``ERR_WATCHDOG``.
    """

    def __init__(self, *, queues, code):
        if isinstance(queues, bool) or not isinstance(queues, int) or not 1 <= queues <= 16:
            raise ValueError(f"queues must be an integer in [1, 16], not {queues!r}")
        if isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= 255:
            raise ValueError(f"code must be an integer in [1, 255], not {code!r}")
        self.queues, self.code = queues, code
        super().__init__({
            "busy": In(queues),
            "progress": In(queues),
            "head_id": In(data.ArrayLayout(16, queues)),
            "limit": In(32),
            "halt": In(1),
            "clear": In(1),
            "error": Out(wiring.Signature({"valid": Out(1), "code": Out(8), "id": Out(16),
                                           "queue": Out(4)})),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.error.code.eq(self.code)
        # For timing, the verdict is registered: `limit - 1` is kept in a register, so each
        # counter meets one comparison (`count >= limit - 1`, a carry chain on registers), and
        # the error reaches the command processor one cycle after the counter hits the limit.
        # The counters do not run while `clear` is high, and the command processor is itself
        # reset by `clear`, so no error can come out of a soft reset.
        last = Signal(32)
        on = Signal()
        m.d.sync += [last.eq(self.limit - 1), on.eq(self.limit != 0)]
        # `progress` comes from engines' handshakes with the scratchpad's same-cycle grant (a
        # routed path from the arbiter's carry chain into every counter's enable); it is
        # registered first, so an event restarts its counter one cycle late.
        progress = Signal(self.queues)
        m.d.sync += progress.eq(self.progress)
        valid = Signal()
        qid = Signal(16)
        queue = Signal(4)
        m.d.sync += valid.eq(0)
        for q in reversed(range(self.queues)):      # the lowest queue wins a tie
            count = Signal(32, name=f"idle{q}")
            idle = self.busy[q] & ~progress[q] & ~self.halt & ~self.clear & on
            with m.If(idle):
                m.d.sync += count.eq(count + 1)
            with m.Else():
                m.d.sync += count.eq(0)
            with m.If(idle & (count >= last)):
                m.d.sync += [valid.eq(1), qid.eq(self.head_id[q]), queue.eq(q)]
        m.d.comb += [self.error.valid.eq(valid & ~self.clear), self.error.id.eq(qid),
                     self.error.queue.eq(queue)]
        return m
