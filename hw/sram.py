"""The scratchpad: N single-ported SRAM banks shared by several clients.

Address map
-----------
Clients address the scratchpad in words of ``data_bytes`` bytes (the DMA bus width). Banks are
*block-partitioned*, not interleaved::

    word = byte_address // data_bytes
    bank = word // depth            (the high bits)
    row  = word %  depth            (the low bits)

so bank ``b`` holds the bytes ``[b·depth·data_bytes, (b+1)·depth·data_bytes)``. Software decides
which bank each buffer lives in, and places buffers that are used in the same cycles (operands
being computed on, operands being loaded, results being written, results being stored) in
different banks. The GEMM plan (README, "Scratchpad"; ``sim/host.py``) gives each operand's
slots (A, B, C, parameters: ``sram_banks / 4`` each) banks of their own that way, and is
then free of conflicts by construction; interleaving would instead spread every stream over every
bank and make conflicts a matter of chance.

Arbitration
-----------
Each bank does one access (a read or a byte-masked write) per cycle, like an FPGA block RAM port.
Clients that want the same bank in the same cycle are served round-robin: the bank's pointer moves
past the client it granted, so every waiting client is served within ``ports`` cycles
(starvation-free; a yielding port, below, only while the port it yields to leaves the bank
free). A request is granted in the cycle it is presented (``req.ready`` is the grant).
The grant and every port's request are registered, and the bank does the access in the next
cycle, selecting the granted port's registered request: the grant logic and the block RAM's
inputs are in different cycles (synth/README.md, "Issue 7"), and the grant reaches no wide
multiplexer (synth/README.md, "ninth round"). Every access, read or write, is delayed alike, so
accesses to a bank happen in grant order.

Yielding ports
--------------
``yields`` maps a port to one it gives way to: a port that yields does not compete for a bank
that the other port asks for in the same cycle, and is served there only when that port does not
ask (a fixed priority between those two; round-robin among the rest). With single-ported banks,
the embedding-bag engine's slot reads should yield to the DMA's writes, so that gathered rows
stream into the ring at the bus rate (``hw/embag.py``, "Why the ring alternates halves"; the
top's dual-ported pairs, below, put the two on different sides instead). The rule sits beside
the arbiter, where both requests are registers, not in front of the client's request.

Dual-ported pairs
-----------------
With ``b_side`` (a set of ports), the banks are built in pairs: banks ``2k`` and ``2k+1`` are
the two halves of one true dual-port memory (on an ECP5, DP16KD block RAM in its 1024×18 mode,
as single-ported banks of more than 512 words already are), and each of its two sides has an
arbiter of its own. The ports in ``b_side`` are served by side B of every pair, the others by
side A. So a side-B port and a side-A port never compete, even for the same word, while two
ports of one side compete for a pair as if it were one bank. The address map does not change.
The top puts the DMA's two ports on side B: the DMA's loads and stores never wait for an
engine, and the engines compete only with each other, in pairs of banks that software already
gives to one operand (``sim/host.py``: A in banks 0/1, B 2/3, C 4/5, parameters 6/7;
``sim/embag_plan.py``: lists 0/1, outputs 2/3 and 4/5, the ring 6/7).

Why: the crossbar is what keeps the ``small`` preset from routing on the ECP5 (synth/README.md,
"tenth round"). Every port reaches every arbitration unit, both ways, with whole words; pairs
halve the units each port reaches, so the crossbar has the size of four banks, while the DMA
keeps a path of its own beside the engines, as eight banks gave it.

A read on one side of the word that the other side writes in the same cycle returns undefined
data in the block RAM (a DP16KD address collision; simulation returns the old word), and two
writes of one word in the same cycle leave it undefined. Ember's plans never do either: a
buffer is read only after the DMA command that loads it has completed, and stored only after
the command that writes it has (the command processor's semaphores). ``python -m synth``
declares these collisions undefined to Yosys, so that it can map each pair onto DP16KD.

Read latency
------------
Exactly :data:`Scratchpad.READ_LATENCY` = 3 cycles: a read granted in cycle t has its data on the
client's ``rsp`` in cycle t+3 (one cycle in the request register, one in the block RAM, one in the
output register of the crossbar). Responses come back in request order and cannot be refused, so
a client issues a read only when it can take the data.
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["sram_port_signature", "Scratchpad"]


def _log2(value, name):
    if value < 1 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two, not {value!r}")
    return value.bit_length() - 1


def sram_port_signature(*, addr_width, data_bytes):
    """Signature of a scratchpad client port, from the client's side.

    Members
    -------
    req : Out(stream.Signature(StructLayout(addr, we, wdata, wmask)))
        One access: ``addr`` is a word address, ``we`` selects a write of ``wdata`` under the byte
        mask ``wmask`` (bit i enables byte i). ``ready`` is the grant.
    rsp : In(Signature(valid, data))
        Read data: ``rsp.valid`` is high with ``rsp.data`` exactly
        :data:`Scratchpad.READ_LATENCY` cycles after each granted read. It cannot be refused.
    """
    return wiring.Signature({
        "req": Out(stream.Signature(data.StructLayout({
            "addr": addr_width,
            "we": 1,
            "wdata": 8 * data_bytes,
            "wmask": data_bytes,
        }))),
        "rsp": In(wiring.Signature({"valid": Out(1), "data": Out(8 * data_bytes)})),
    })


def _or_tree(values):
    """Bitwise OR of ``values`` as a balanced tree (0 for none)."""
    values = list(values)
    if not values:
        return Const(0, 1)
    while len(values) > 1:
        values = [values[k] | values[k + 1] if k + 1 < len(values) else values[k]
                  for k in range(0, len(values), 2)]
    return values[0]


class Scratchpad(wiring.Component):
    """Block-partitioned, round-robin arbitrated multi-bank scratchpad.

    Parameters
    ----------
    banks : int
        Number of banks (a power of two).
    depth : int
        Words per bank (a power of two).
    data_bytes : int
        Word width in bytes.
    ports : int
        Number of client ports.
    yields : dict of int to int
        ``{low: high}``: port ``low`` yields each bank to port ``high`` (see above). Default none.
    b_side : tuple of int
        The ports served by the memories' second side (see "Dual-ported pairs" above). Default
        none: single-ported banks.

    Members
    -------
    ports : In(sram_port_signature(...)).array(ports)
        Client ports; lower indices have no priority over higher ones.
    """

    READ_LATENCY = 3

    def __init__(self, *, banks, depth, data_bytes, ports, yields=None, b_side=()):
        for name, value in (("banks", banks), ("depth", depth), ("data_bytes", data_bytes),
                            ("ports", ports)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, not {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value!r}")
        yields = {} if yields is None else yields
        if not isinstance(yields, dict):
            raise TypeError(f"yields must be a dict of port to port, not {yields!r}")
        for low, high in yields.items():
            for value in (low, high):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"yields must map port numbers, not {yields!r}")
                if not 0 <= value < ports:
                    raise ValueError(f"yields names port {value!r}, which is not in "
                                     f"[0, {ports!r})")
            if low == high or high in yields:
                raise ValueError(f"yields must map a port to another that yields to none, "
                                 f"not {yields!r}")
        if not isinstance(b_side, (tuple, list, set, frozenset)):
            raise TypeError(f"b_side must be a tuple of port numbers, not {b_side!r}")
        for value in b_side:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"b_side must be a tuple of port numbers, not {b_side!r}")
            if not 0 <= value < ports:
                raise ValueError(f"b_side names port {value!r}, which is not in [0, {ports!r})")
        if len(set(b_side)) != len(b_side):
            raise ValueError(f"b_side names a port twice: {b_side!r}")
        if b_side and len(b_side) == ports:
            raise ValueError(f"b_side must leave at least one port on side A, not {b_side!r}")
        if b_side and banks < 2:
            raise ValueError(f"a dual-ported scratchpad (b_side) needs at least 2 banks, "
                             f"not {banks!r}")
        for low, high in yields.items():
            if (low in b_side) != (high in b_side):
                raise ValueError(f"yields must map ports of the same side (b_side "
                                 f"{b_side!r}), not {yields!r}")
        self.yields = dict(yields)
        self.b_side = tuple(sorted(b_side))
        #: The ports of each side (one side, all ports, when ``b_side`` is empty).
        self.sides = [[i for i in range(ports) if i not in self.b_side]]
        if self.b_side:
            self.sides.append(list(self.b_side))
        self.bank_bits = _log2(banks, "banks")
        self.row_bits = _log2(depth, "depth")
        self.banks, self.depth, self.data_bytes, self.nports = banks, depth, data_bytes, ports
        self.addr_width = max(self.bank_bits + self.row_bits, 1)
        self.port_signature = sram_port_signature(addr_width=self.addr_width,
                                                  data_bytes=data_bytes)
        super().__init__({"ports": In(self.port_signature).array(ports)})

    def elaborate(self, platform):
        m = Module()
        P = self.nports
        ports = self.ports
        pair_bits = 1 if self.b_side else 0
        unit_bits = self.bank_bits - pair_bits       # memory index bits of an address
        row_bits = self.row_bits + pair_bits         # row bits of a memory

        def memory_of(port):
            if unit_bits == 0:
                return 0
            return port.req.payload.addr[row_bits:row_bits + unit_bits]

        # Every port's request, registered each cycle without an enable or a reset: in the cycle
        # after a grant it holds the granted request (a stream's payload is stable until taken).
        preq = [Signal.like(port.req.payload, name=f"preq_{i}", reset_less=True)
                for i, port in enumerate(ports)]
        for i, port in enumerate(ports):
            m.d.sync += preq[i].eq(port.req.payload)
        grants = [[] for _ in range(P)]     # per port: its grant bit at each unit
        hits = [[] for _ in range(P)]       # per port: (hit flip-flop, read data) of each unit

        for k in range(self.banks >> pair_bits):
            mem = Memory(shape=8 * self.data_bytes, depth=self.depth << pair_bits, init=[])
            m.submodules[f"pair{k}" if self.b_side else f"bank{k}"] = mem
            for s, side in enumerate(self.sides):
                # One arbitration unit: the ports of one side, at one memory's port.
                u = f"{k}{'ab'[s]}" if self.b_side else f"{k}"
                n = len(side)
                rd = mem.read_port(transparent_for=())
                wr = mem.write_port(granularity=8)

                # Round-robin arbiter: grant the first requester at or after the pointer. The
                # pointer is kept as a mask of the ports at or after it (all ones for pointer 0),
                # so the grant is two lowest-set-bit picks (`x & -x`, a carry chain) and a
                # multiplexer, not a priority chain per pointer value.
                asks = [Signal(name=f"ask_{u}_{i}") for i in side]
                for j, i in enumerate(side):
                    m.d.comb += asks[j].eq(ports[i].req.valid & (memory_of(ports[i]) == k))
                want = Signal(n, name=f"want_{u}")
                for j, i in enumerate(side):
                    high = self.yields.get(i)
                    m.d.comb += want[j].eq(asks[j] if high is None
                                           else asks[j] & ~asks[side.index(high)])
                mask = Signal(n, name=f"rr_{u}", init=(1 << n) - 1)
                masked = Signal(n, name=f"masked_{u}")
                grant = Signal(n, name=f"grant_{u}")
                m.d.comb += [
                    masked.eq(want & mask),
                    grant.eq(Mux(masked.any(), masked & -masked, want & -want)[:n]),
                ]
                with m.If(want.any()):
                    # The ports after the granted one; none after the last means pointer 0. The
                    # bits above the lowest set bit of x are ~(x ^ (x - 1)), taken of `masked`
                    # and `want` in parallel with the picks, not of the grant after them (one
                    # carry chain from the requests to the pointer instead of two in a row).
                    after = Signal(n, name=f"after_{u}")
                    m.d.comb += after.eq(Mux(masked.any(), ~(masked ^ (masked - 1)),
                                             ~(want ^ (want - 1)))[:n])
                    m.d.sync += mask.eq(Mux(after.any(), after, (1 << n) - 1))

                # The grant is registered (`acc_grant`: which port, if any, the unit serves next
                # cycle), and so is every port's request (`preq`, above); in the next cycle the
                # registered grant selects the registered request for the block RAM. The grant
                # thus drives only `ready` and these few flip-flops, and the wide payload
                # multiplexer runs between registers. The one-hot multiplexer is an AND-OR tree
                # (not an if-chain, which would become a priority chain of multiplexers).
                acc_grant = Signal(n, name=f"acc_grant_{u}")
                acc_valid = Signal(name=f"acc_valid_{u}")
                acc = Signal.like(ports[0].req.payload, name=f"acc_{u}")
                m.d.sync += acc_grant.eq(grant)
                m.d.comb += [
                    acc.eq(_or_tree([Mux(acc_grant[j], preq[i].as_value(), 0)
                                     for j, i in enumerate(side)])),
                    acc_valid.eq(acc_grant.any()),
                ]
                row = acc.addr[:row_bits] if row_bits else 0
                m.d.comb += [
                    rd.addr.eq(row),
                    rd.en.eq(acc_valid & ~acc.we),
                    wr.addr.eq(row),
                    wr.data.eq(acc.wdata),
                ]
                with m.If(acc_valid & acc.we):
                    m.d.comb += wr.en.eq(acc.wmask)
                # Response path register: one bit per port of the side, set for the port whose
                # read the unit did last cycle (one-hot, so each port's hit is a flip-flop).
                pend_hit = Signal(n, name=f"pend_hit_{u}")
                m.d.sync += pend_hit.eq(Mux(acc.we, 0, acc_grant))

                for j, i in enumerate(side):
                    grants[i].append(grant[j])
                    hits[i].append((pend_hit[j], rd.data))

        for i, port in enumerate(ports):
            m.d.comb += port.req.ready.eq(_or_tree(grants[i]))

        # Crossbar back to the ports, registered: data reach the client at t+3. The data
        # register has no reset (`rsp.valid` says when it means something).
        for i, port in enumerate(ports):
            valid_next = Signal(name=f"rsp_valid_next_{i}")
            data_next = Signal(8 * self.data_bytes, name=f"rsp_data_next_{i}")
            data_q = Signal(8 * self.data_bytes, name=f"rsp_data_{i}", reset_less=True)
            m.d.comb += [valid_next.eq(_or_tree([hit for hit, _ in hits[i]])),
                         data_next.eq(_or_tree([Mux(hit, rdata, 0) for hit, rdata in hits[i]]))]
            m.d.sync += [port.rsp.valid.eq(valid_next), data_q.eq(data_next)]
            m.d.comb += port.rsp.data.eq(data_q)

        return m
