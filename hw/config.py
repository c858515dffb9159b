"""The one configuration object of Ember, and its named presets.

Every consumer (the hardware generators in ``hw/``, the cocotb testbenches and runner in ``sim/``,
the CLI, and later the firmware build) takes an :class:`EmberConfig`. Testbenches receive it as
JSON through the environment (:meth:`EmberConfig.to_json` / :meth:`EmberConfig.from_json`).

This module is deliberately free of Amaranth imports so that ``sim/`` can use it without touching
the hardware description.
"""

import dataclasses
import json
from dataclasses import dataclass

__all__ = ["EmberConfig", "PRESETS", "get_preset"]


def _check_int(name, value, *, minimum, maximum=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bound}, not {value!r}")


def _check_pow2(name, value, *, minimum, maximum):
    _check_int(name, value, minimum=minimum, maximum=maximum)
    if value & (value - 1):
        raise ValueError(f"{name} must be a power of two, not {value!r}")


@dataclass(frozen=True)
class EmberConfig:
    """Parameters of one Ember instance.

    Parameters
    ----------
    name : str
        Preset name; it becomes part of the Verilog top-module name (``ember_<name>``), so it must
        be a lower-case identifier without ``__``.
    pe_rows : int
        Rows R of the PE array: output-tile height (rows of A per tile).
    pe_cols : int
        Columns C of the PE array: output-tile width (columns of B per tile).
    pe_lanes : int
        Lanes L of each PE's INT8 dot-product unit: reduction elements consumed per step.
    bus_bytes : int
        Data width of the DMA's AXI4 master in bytes (8 to 64, i.e. 64 to 512 bits; a power of
        two). The scratchpad word is the same width.
    sram_banks : int
        Number of scratchpad banks (a power of two, at least 2).
    sram_depth : int
        Words per bank (a power of two, at least 16).
    axi_id_width : int
        AXI ID width of the DMA master (1 to 16).
    axi_addr_width : int
        AXI address width (32 to 64).
    dma_outstanding : int
        Outstanding AXI transactions allowed per direction (reads and writes separately; a power of
        two, at least 1).
    dma_max_burst : int
        Longest AXI INCR burst the DMA issues, in beats (1 to 256, a power of two). Bursts are also
        split at every 4 KB boundary.
    cmd_inflight : int
        Commands the command processor lets each engine hold at once (issued, not yet completed;
        1 to 64). A DMA store completes only when its last B response is back, so at a DRAM
        latency of ``T`` cycles a queue of short stores completes at most ``cmd_inflight / T``
        commands per cycle (Little's law).
    simulate : bool
        Whether the preset may be simulated. ``mtia`` is elaboration-only.
    cpu_async : bool
        Whether the control core runs on a clock of its own: the top-level input ``cpu_clk``
        drives its domain ``cpu``, and its MMIO port, the host's firmware writes, ``cpu_reset``
        and its interrupt cross between ``cpu`` and ``sync`` (``hw/cdc.py``,
        ``hw/host_cdc.py``). When False the core shares ``clk`` and there is no crossing.

    Members
    -------
    macs_per_cycle : int
        Peak INT8 multiply-accumulates per cycle, R·C·L.
    top_name : str
        Verilog top-module name of this preset.
    sram_bytes : int
        Scratchpad capacity in bytes, ``sram_banks · sram_depth · bus_bytes``.
    """

    name: str
    pe_rows: int
    pe_cols: int
    pe_lanes: int
    bus_bytes: int = 8
    sram_banks: int = 8
    sram_depth: int = 256
    axi_id_width: int = 4
    axi_addr_width: int = 32
    dma_outstanding: int = 8
    dma_max_burst: int = 256
    cmd_inflight: int = 4
    simulate: bool = True
    cpu_async: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier() \
                or self.name != self.name.lower() or "__" in self.name \
                or self.name.startswith("_") or self.name.endswith("_"):
            raise ValueError(f"name must be a lower-case identifier without '__', "
                             f"not {self.name!r}")
        _check_int("pe_rows", self.pe_rows, minimum=1, maximum=256)
        _check_int("pe_cols", self.pe_cols, minimum=1, maximum=256)
        _check_int("pe_lanes", self.pe_lanes, minimum=1, maximum=4096)
        _check_pow2("bus_bytes", self.bus_bytes, minimum=8, maximum=64)
        _check_pow2("sram_banks", self.sram_banks, minimum=2, maximum=256)
        _check_pow2("sram_depth", self.sram_depth, minimum=16, maximum=1 << 20)
        _check_int("axi_id_width", self.axi_id_width, minimum=1, maximum=16)
        _check_int("axi_addr_width", self.axi_addr_width, minimum=32, maximum=64)
        _check_pow2("dma_outstanding", self.dma_outstanding, minimum=1, maximum=256)
        _check_pow2("dma_max_burst", self.dma_max_burst, minimum=1, maximum=256)
        _check_int("cmd_inflight", self.cmd_inflight, minimum=1, maximum=64)
        if not isinstance(self.simulate, bool):
            raise TypeError(f"simulate must be a bool, not {self.simulate!r}")
        if not isinstance(self.cpu_async, bool):
            raise TypeError(f"cpu_async must be a bool, not {self.cpu_async!r}")

    @property
    def macs_per_cycle(self):
        return self.pe_rows * self.pe_cols * self.pe_lanes

    @property
    def sram_bytes(self):
        return self.sram_banks * self.sram_depth * self.bus_bytes

    @property
    def top_name(self):
        return f"ember_{self.name}"

    def replace(self, **changes):
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        fields = json.loads(text)
        if not isinstance(fields, dict):
            raise ValueError(f"configuration JSON must be an object, not {fields!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown configuration fields {unknown!r}")
        return cls(**fields)


PRESETS = {
    # CI-sized: 2×2 PEs of 4 lanes, 16 MACs/cycle. Small enough for fast Verilator builds.
    # 64-bit AXI, 8 banks × 256 words × 8 B = 16 KB of scratchpad.
    "tiny": EmberConfig(name="tiny", pe_rows=2, pe_cols=2, pe_lanes=4,
                        bus_bytes=8, sram_banks=8, sram_depth=256,
                        axi_id_width=4, dma_outstanding=8, dma_max_burst=256,
                        cpu_async=True),
    # Sized for a Lattice ECP5-85F (ULX3S) with everything else on board, for 100 MHz
    # (`make synth CONFIG=small`, synth/README.md): 4×4 PEs of 4 lanes, 64 MACs/cycle, each in
    # one of the 85F's MULT18X18D blocks (the most a 16-byte word feeds: R·L, C·L and 4·C bytes).
    # 128-bit AXI, 8 banks × 1024 words × 16 B = 128 KB of scratchpad in block RAM.
    "small": EmberConfig(name="small", pe_rows=4, pe_cols=4, pe_lanes=4,
                         bus_bytes=16, sram_banks=8, sram_depth=1024,
                         axi_id_width=4, dma_outstanding=16, dma_max_burst=256,
                         cpu_async=True),
    # MTIA's 8×8 PE grid, 8 lanes per PE: 512 MACs/cycle.
    # 512-bit AXI, 16 banks × 256 words × 64 B = 256 KB: four slots per GEMM operand
    # (sim/host.py), so that the loads of a weight-streaming GEMM run up to three jobs ahead of
    # the array and the DRAM latency stays hidden.
    # 128 reads and 128 writes in flight, 32 commands per engine: at a DRAM latency of 100
    # cycles, one-beat embedding rows and short stores still flow at one per cycle (make bench).
    "default": EmberConfig(name="default", pe_rows=8, pe_cols=8, pe_lanes=8,
                           bus_bytes=64, sram_banks=16, sram_depth=256,
                           axi_id_width=6, dma_outstanding=128, dma_max_burst=256,
                           cmd_inflight=32),
    # MTIA v1 scale: 65,536 MACs/cycle as 32×32 PEs of 64 lanes. Elaboration only. (MTIA's own
    # 8×8×1024 split does not elaborate: its 65,537-bit A-operand port exceeds the 65,536 bits
    # that Amaranth's netlist allows a single port; see README.)
    "mtia": EmberConfig(name="mtia", pe_rows=32, pe_cols=32, pe_lanes=64,
                        bus_bytes=64, sram_banks=16, sram_depth=2048,
                        axi_id_width=8, dma_outstanding=32, dma_max_burst=256,
                        simulate=False),
}


def get_preset(name):
    """Look up a preset by name, with an error that lists the choices."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)!r}") from None
