"""cocotb drivers for Amaranth ``lib.stream`` interfaces (``<name>__valid/ready/payload``), and
the seed rule every random testbench follows.

Both follow the stream rules: a source never waits on ``ready`` to raise ``valid`` and holds a
beat until it is taken; a sink may drop ``ready`` at any time. Gaps and backpressure come from
pause generators (iterables of booleans, e.g. ``itertools.cycle``), as in cocotbext-axi.
"""

import collections
import os

import cocotb
from cocotb.triggers import RisingEdge

__all__ = ["StreamSource", "StreamSink", "random_seed"]


def random_seed():
    """The seed of a random test: ``EMBER_SEED`` if set (to replay a run), else cocotb's."""
    if "EMBER_SEED" in os.environ:
        return int(os.environ["EMBER_SEED"])
    return int(cocotb.RANDOM_SEED)


class StreamSource:
    """Drive ``<name>__payload``/``__valid`` from a queue of integer payloads.

    Members
    -------
    sent : int
        Beats transferred so far.
    """

    def __init__(self, dut, name, clk):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clk = clk
        self.queue = collections.deque()
        self.pause = None
        self.sent = 0
        self.valid.value = 0

    def set_pause_generator(self, generator=None):
        self.pause = iter(generator) if generator is not None else None

    def send_nowait(self, payload):
        self.queue.append(payload)

    def idle(self):
        return not self.queue and not self.valid.value

    async def run(self):
        edge = RisingEdge(self.clk)
        holding = False
        while True:
            await edge
            if holding and self.ready.value:
                holding = False
                self.sent += 1
            if not holding:
                paused = self.pause is not None and next(self.pause)
                if self.queue and not paused:
                    self._present(self.queue.popleft())
                    self.valid.value = 1
                    holding = True
                else:
                    self.valid.value = 0
                    self._idle()

    def _present(self, item):
        """Drive one queued item (a subclass may drive more than ``payload``)."""
        self.payload.value = item

    def _idle(self):
        """Called in every cycle without a beat (a subclass may drive garbage)."""


class StreamSink:
    """Accept beats from ``<name>__payload``/``__valid``, applying backpressure on ``__ready``.

    Members
    -------
    beats : list of int
        Every payload received, in order.
    """

    def __init__(self, dut, name, clk):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clk = clk
        self.pause = None
        self.beats = []
        self.ready.value = 0

    def set_pause_generator(self, generator=None):
        self.pause = iter(generator) if generator is not None else None

    async def run(self):
        edge = RisingEdge(self.clk)
        ready = False
        while True:
            await edge
            if ready and self.valid.value:
                self.beats.append(self.payload.value.to_unsigned())
            ready = not (self.pause is not None and next(self.pause))
            self.ready.value = int(ready)
