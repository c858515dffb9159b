"""Multi-block DMA stores: one command, several side-by-side blocks of rows.

A GEMM's output tile is ``R`` rows of ``C·e`` bytes, one row per scratchpad word, and the tiles
of a block lie one after another in the scratchpad; in DRAM the tiles of one row of tiles sit
side by side, ``C·e`` bytes apart. Storing them one 2D command per tile costs a command per
tile: on a 64-byte bus with 8×8 tiles that is one command per 64 bytes of INT8 output, and the
command stream, not the bus, becomes the limit. :class:`StoreBlocks` lets one store command
carry ``blocks`` such 2D blocks: block ``t`` (``0 ≤ t < blocks``) is the 2D transfer

- ``dram_addr + t·row_bytes`` (the blocks are side by side in DRAM), and
- ``sram_addr + t·rows·sram_stride`` (they follow one another in the scratchpad),

each of ``rows`` rows of ``row_bytes`` bytes with the command's two strides. It turns the
command into ``blocks`` DMA descriptors, one per cycle, and the DMA's completions back into one
completion per command, carrying the first error of its blocks.

A block whose scratchpad address would pass the end of the scratchpad's byte-address range is
sent with the largest scratchpad address instead (it cannot wrap around into a valid one), so
the DMA refuses it as out of range (``ERR_RANGE``), before any of its beats.
"""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .dma import ERR_WIDTH

__all__ = ["StoreBlocks", "BLOCKS_WIDTH"]

#: Width of the ``blocks - 1`` field of a store command (the upper half of argument word 2).
BLOCKS_WIDTH = 16


class StoreBlocks(wiring.Component):
    """Expand a multi-block store command into DMA descriptors (see the module documentation).

    Parameters
    ----------
    desc_layout : StructLayout
        The DMA's descriptor layout (:meth:`hw.dma.DMA.make_descriptor_layout`). Its ``tag`` is
        one bit wider than the command tag: the top bit marks a command's last block.

    Members
    -------
    cmd : In(stream.Signature(cmd_layout))
        Commands: the descriptor's fields with a command tag (one bit narrower) and
        ``more_blocks`` (``blocks - 1``, :data:`BLOCKS_WIDTH` bits).
    desc : Out(stream.Signature(desc_layout))
        Descriptors to the DMA's store port, one per block.
    dma_done : In(stream.Signature({tag, error}))
        The DMA's store completions, one per descriptor, in order.
    done : Out(stream.Signature({tag, error}))
        One completion per command, after its last block: the first nonzero error of its
        blocks, else 0.
    """

    def __init__(self, *, desc_layout):
        if not isinstance(desc_layout, data.StructLayout) or \
                not {"dram_addr", "sram_addr", "rows", "row_bytes", "dram_stride",
                     "sram_stride", "tag"} <= set(desc_layout.members):
            raise TypeError(f"desc_layout must be the DMA's descriptor StructLayout, "
                            f"not {desc_layout!r}")
        members = dict(desc_layout.members)
        tag_width = Shape.cast(members.pop("tag")).width - 1
        if tag_width < 1:
            raise ValueError(f"desc_layout's tag must be at least 2 bits wide, not "
                             f"{tag_width + 1!r}")
        self.desc_layout = desc_layout
        self.cmd_layout = data.StructLayout({**members, "more_blocks": BLOCKS_WIDTH,
                                             "tag": tag_width})
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "desc": Out(stream.Signature(desc_layout)),
            "dma_done": In(stream.Signature(data.StructLayout(
                {"tag": tag_width + 1, "error": ERR_WIDTH}))),
            "done": Out(stream.Signature(data.StructLayout(
                {"tag": tag_width, "error": ERR_WIDTH}))),
        })

    def elaborate(self, platform):
        m = Module()
        c, d = self.cmd.payload, self.desc.payload
        sw = len(d.sram_addr)

        # Accept a command (stage 1), compute the scratchpad step rows·sram_stride (stage 2),
        # then send one descriptor per block.
        job = Signal(self.cmd_layout)
        loaded = Signal()       # `job` holds a command whose step is not computed yet
        active = Signal()       # sending `job`'s blocks
        step = Signal(len(c.rows) + sw)
        left = Signal(BLOCKS_WIDTH)              # blocks after the current one
        sram = Signal(sw + 1)                    # bit sw: passed the end (saturated)
        m.d.comb += self.cmd.ready.eq(~loaded & ~active)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [job.eq(c), loaded.eq(1)]
        with m.If(loaded):
            m.d.sync += [step.eq(job.rows * job.sram_stride), loaded.eq(0), active.eq(1),
                         left.eq(job.more_blocks), sram.eq(job.sram_addr)]

        last = left == 0
        m.d.comb += [
            self.desc.valid.eq(active),
            d.dram_addr.eq(job.dram_addr),
            d.sram_addr.eq(Mux(sram[sw], (1 << sw) - 1, sram[:sw])),
            d.rows.eq(job.rows),
            d.row_bytes.eq(job.row_bytes),
            d.dram_stride.eq(job.dram_stride),
            d.sram_stride.eq(job.sram_stride),
            d.tag.eq(Cat(job.tag, last)),
        ]
        with m.If(self.desc.valid & self.desc.ready):
            nxt = sram[:sw] + step
            m.d.sync += [
                job.dram_addr.eq(job.dram_addr + job.row_bytes),
                sram.eq(Mux(sram[sw] | (nxt >> sw != 0), 1 << sw, nxt)),
                left.eq(left - 1),
            ]
            with m.If(last):
                m.d.sync += active.eq(0)

        # Completions: swallow all but the last block's, remember the first error.
        i, o = self.dma_done, self.done
        err = Signal(ERR_WIDTH)
        final = i.payload.tag[-1]
        m.d.comb += [
            o.valid.eq(i.valid & final),
            o.payload.tag.eq(i.payload.tag[:-1]),
            o.payload.error.eq(Mux(err != 0, err, i.payload.error)),
            i.ready.eq(~final | o.ready),
        ]
        with m.If(i.valid & i.ready):
            m.d.sync += err.eq(Mux(final, 0, Mux(err != 0, err, i.payload.error)))
        return m
