"""AXI4 signatures and constants.

The signature is *flat*: one member per AXI signal, named exactly as in the AXI specification
(``awaddr``, ``wstrb``, ``rlast``, ...). Amaranth flattens a member ``axi`` of a top-level
component into ports ``axi__awaddr``, ``axi__wstrb``, ... which is what
``cocotbext.axi.AxiBus.from_prefix(dut, "axi_")`` looks for (prefix, ``_``, signal name).
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "BURST_FIXED", "BURST_INCR", "BURST_WRAP",
    "RESP_OKAY", "RESP_EXOKAY", "RESP_SLVERR", "RESP_DECERR",
    "axi4_signature",
]

BURST_FIXED, BURST_INCR, BURST_WRAP = 0b00, 0b01, 0b10
RESP_OKAY, RESP_EXOKAY, RESP_SLVERR, RESP_DECERR = 0b00, 0b01, 0b10, 0b11


def axi4_signature(*, addr_width, data_bytes, id_width):
    """Signature of a full AXI4 port, from the manager's (master's) side.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr``/``araddr`` in bits.
    data_bytes : int
        Data bus width in bytes (``wdata``/``rdata`` are ``8·data_bytes`` bits wide, ``wstrb``
        ``data_bytes`` bits).
    id_width : int
        Width of the ID signals.

    Members
    -------
    aw* : write address channel (``awid awaddr awlen awsize awburst awlock awcache awprot awqos
        awvalid`` out, ``awready`` in).
    w* : write data channel (``wdata wstrb wlast wvalid`` out, ``wready`` in).
    b* : write response channel (``bid bresp bvalid`` in, ``bready`` out).
    ar* : read address channel (as ``aw*``).
    r* : read data channel (``rid rdata rresp rlast rvalid`` in, ``rready`` out).
    """
    for name, value in (("addr_width", addr_width), ("data_bytes", data_bytes),
                        ("id_width", id_width)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value!r}")
    members = {}
    for ch in ("aw", "ar"):
        members.update({
            f"{ch}id": Out(id_width),
            f"{ch}addr": Out(addr_width),
            f"{ch}len": Out(8),
            f"{ch}size": Out(3),
            f"{ch}burst": Out(2),
            f"{ch}lock": Out(1),
            f"{ch}cache": Out(4),
            f"{ch}prot": Out(3),
            f"{ch}qos": Out(4),
            f"{ch}valid": Out(1),
            f"{ch}ready": In(1),
        })
    members.update({
        "wdata": Out(8 * data_bytes),
        "wstrb": Out(data_bytes),
        "wlast": Out(1),
        "wvalid": Out(1),
        "wready": In(1),
        "bid": In(id_width),
        "bresp": In(2),
        "bvalid": In(1),
        "bready": Out(1),
        "rid": In(id_width),
        "rdata": In(8 * data_bytes),
        "rresp": In(2),
        "rlast": In(1),
        "rvalid": In(1),
        "rready": Out(1),
    })
    return wiring.Signature(members)
