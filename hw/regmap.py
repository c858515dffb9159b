"""Ember's register map: the one source for the RTL, the firmware header and the host runtime.

The same registers appear at the same offsets on two buses:

- the host's AXI4-Lite port (offsets from the port's base);
- the control core's MMIO window (``hw.cpu.MMIO_BASE`` + offset).

Each side has its own access rights (``host``/``fw``: ``r``, ``w``, ``rw``, ``w1c`` or ``-``).
Reading a write-only or absent register gives 0, and writing a read-only one is ignored. An
offset outside every register and window gets an error response (AXI SLVERR, Wishbone ERR).

Each side also has its own command staging registers ``CMD0``..``CMD7``: a write to ``CMD_PUSH``
pushes the eight staged words as one command into the command processor
(``hw/cmdproc.py``).

The host also sees the control core's instruction memory at :data:`IMEM_WINDOW`. Writes there load
firmware, and are meant for while ``CTRL.CPU_RESET`` holds the core. Reads there return 0.

``python -m sim regmap`` prints the table as Markdown, and :func:`c_header` writes
``fw/ember_regs.h``.
"""

from dataclasses import dataclass

__all__ = ["Reg", "REGS", "BY_NAME", "IMEM_WINDOW", "HOST_ADDR_WIDTH", "ID_VALUE", "VERSION",
           "N_QUEUES", "QUEUE_NAMES", "OPCODES", "IRQ_ERROR", "IRQ_FW", "IRQ_DONE", "IRQ_IDLE",
           "IRQ_BITS", "c_header", "markdown"]

ID_VALUE = 0x454D4252      # "EMBR"
VERSION = 0x0001_0000      # 1.0
HOST_ADDR_WIDTH = 16       # 64 KB host window
IMEM_WINDOW = 0x8000       # host byte offset of IMEM (up to 32 KB)

# Engine queues of the command processor, in queue order, with their opcodes.
QUEUE_NAMES = ("load", "store", "gemm", "embag")
OPCODES = {"load": 1, "store": 2, "gemm": 3, "embag": 4}
N_QUEUES = len(QUEUE_NAMES)

# Interrupt causes: bit numbers in IRQ_STATUS and IRQ_ENABLE.
IRQ_ERROR = 0              # an error was captured
IRQ_FW = 1                 # the firmware wrote FW_IRQ
IRQ_DONE = 2               # DONE<q> = bit IRQ_DONE + q: queue q completed a command
IRQ_IDLE = IRQ_DONE + N_QUEUES   # STATUS.BUSY fell: every queue drained
IRQ_BITS = IRQ_IDLE + 1


@dataclass(frozen=True)
class Reg:
    name: str
    offset: int
    host: str
    fw: str
    doc: str
    #: Value after reset; None where it depends on the configuration.
    reset: "int | None" = 0


def _regs():
    regs = [
        Reg("ID", 0x000, "r", "r", f"{ID_VALUE:#010x} ('EMBR')", ID_VALUE),
        Reg("VERSION", 0x004, "r", "r", "register-map version, major.minor in 16.16", VERSION),
        Reg("HW_PE", 0x008, "r", "r", "PE array: rows [7:0], cols [15:8], lanes [31:16]",
            None),
        Reg("HW_MEM", 0x00C, "r", "r",
            "bus bytes [7:0], log2 banks [15:8], log2 bank depth [23:16]", None),
        Reg("CTRL", 0x010, "rw", "r",
            "bit 0 CPU_RESET: hold the control core in reset (1 after reset); "
            "bit 1 SOFT_RESET: write 1 to reset the engines, queues, semaphores and errors "
            "(reads 0)", 1),
        Reg("STATUS", 0x014, "r", "r",
            "bit 0 BUSY (a queue holds commands), bit 1 ERROR (sticky error held), "
            "bit 2 CPU_RESET", 0x4),
        Reg("DOORBELL", 0x018, "w", "r",
            "host: any write rings (adds 1); firmware: the number of rings so far"),
        Reg("MAILBOX", 0x01C, "rw", "r", "host → firmware word, e.g. a job pointer in DRAM"),
        Reg("FW_STATUS", 0x020, "r", "rw", "firmware → host word, e.g. jobs finished"),
        Reg("IRQ_STATUS", 0x024, "w1c", "r",
            "bit 0 ERROR (an error was captured), bit 1 FW (firmware raised FW_IRQ), "
            "bits 2-5 DONE0-3 (queue 0-3 completed a command), bit 6 IDLE (STATUS.BUSY fell: "
            "every queue drained); each latches until written 1 (an event in the cycle of the "
            "write wins)"),
        Reg("IRQ_ENABLE", 0x028, "rw", "r", "bits as IRQ_STATUS; irq = |(STATUS & ENABLE)"),
        Reg("FW_IRQ", 0x02C, "-", "w", "firmware: write 1 to set IRQ_STATUS.FW"),
        Reg("ERR_CODE", 0x030, "r", "r",
            "sticky error code (0 none): command processor codes, 0x10+engine code"),
        Reg("ERR_ID", 0x034, "r", "r", "id of the command that faulted"),
        Reg("ERR_QUEUE", 0x038, "r", "r",
            "queue of that command (0 load, 1 store, 2 gemm, 3 embag)"),
    ]
    regs += [Reg(f"CMD{i}", 0x040 + 4 * i, "rw", "rw", f"command word {i} (staging)")
             for i in range(8)]
    regs.append(Reg("CMD_PUSH", 0x060, "w", "w",
                    "any write pushes CMD0..CMD7 as one command"))
    regs += [Reg(f"SEM{i}", 0x080 + 4 * i, "rw", "rw",
                 f"semaphore {i}: count (read), set count (write)") for i in range(16)]
    regs += [Reg(f"Q_COMPLETED{q}", 0x0C0 + 4 * q, "r", "r",
                 f"commands completed by queue {q} ({name})")
             for q, name in enumerate(QUEUE_NAMES)]
    regs += [Reg(f"Q_PENDING{q}", 0x0D0 + 4 * q, "r", "r",
                 f"commands queued or in flight in queue {q} ({name})")
             for q, name in enumerate(QUEUE_NAMES)]
    regs += [Reg(f"ARG{i}", 0x180 + 4 * i, "rw", "r",
                 f"job argument {i}: host → firmware (the core cannot read DRAM)")
             for i in range(16)]
    regs += [
        Reg("PERF_CYCLES", 0x100, "r", "r", "cycles since reset or PERF_CLEAR, bits 31:0"),
        Reg("PERF_CYCLES_HI", 0x104, "r", "r", "bits 63:32 of the cycle counter"),
        Reg("PERF_CLEAR", 0x108, "w", "w", "write 1 to zero every performance counter"),
        Reg("PERF_GEMM_STEPS", 0x10C, "r", "r", "PE-array steps (each R·C·L MACs)"),
    ]
    regs += [Reg(f"PERF_BUSY{q}", 0x110 + 4 * q, "r", "r",
                 f"cycles in which queue {q}'s engine ({name}) held a command")
             for q, name in enumerate(QUEUE_NAMES)]
    regs += [Reg(f"PERF_WAIT{q}", 0x120 + 4 * q, "r", "r",
                 f"cycles in which queue {q}'s head waited on a semaphore")
             for q, name in enumerate(QUEUE_NAMES)]
    regs += [
        Reg("PERF_DMA_RD_BEATS", 0x130, "r", "r", "AXI read data beats taken by the DMA"),
        Reg("PERF_DMA_WR_BEATS", 0x134, "r", "r", "AXI write data beats sent by the DMA"),
        Reg("PERF_GEMM_STALL", 0x138, "r", "r",
            "cycles with a GEMM command in the engine but no array step"),
        Reg("EMBAG_ERR_BAG", 0x140, "r", "r",
            "embedding-bag engine: bag (within its command) of the last failing command"),
        Reg("EMBAG_ERR_POS", 0x144, "r", "r",
            "embedding-bag engine: position in that bag of the failing index"),
        Reg("WATCHDOG", 0x150, "rw", "r",
            "watchdog limit in cycles (0 off): an engine holding a command that makes no "
            "progress for this long is an error (ERR_CODE 0x04, that command's id)"),
        Reg("DRAM_RD_BASE", 0x154, "rw", "r",
            "DRAM read window (DMA loads, gathers): lowest byte allowed; bits below the bus "
            "width read 0"),
        Reg("DRAM_RD_LIMIT", 0x158, "rw", "r",
            "DRAM read window: highest byte allowed (inclusive); bits below the bus width "
            "read 1", 0xFFFF_FFFF),
        Reg("DRAM_WR_BASE", 0x15C, "rw", "r",
            "DRAM write window (DMA stores): lowest byte allowed; bits below the bus width "
            "read 0"),
        Reg("DRAM_WR_LIMIT", 0x160, "rw", "r",
            "DRAM write window: highest byte allowed (inclusive); bits below the bus width "
            "read 1", 0xFFFF_FFFF),
    ]
    return regs


REGS = _regs()
BY_NAME = {r.name: r for r in REGS}
assert len(BY_NAME) == len(REGS)
assert len({r.offset for r in REGS}) == len(REGS)
assert all(r.offset % 4 == 0 and r.offset < IMEM_WINDOW for r in REGS)


def c_header():
    """Text of ``ember_regs.h``: offsets, the MMIO base, queue opcodes."""
    lines = [
        "/* Generated from hw/regmap.py by `python -m sim regmap --c`. Do not edit. */",
        "#ifndef EMBER_REGS_H",
        "#define EMBER_REGS_H",
        "",
        "#define EMBER_MMIO_BASE 0x80000000u",
        f"#define EMBER_ID_VALUE {ID_VALUE:#010x}u",
        "",
    ]
    for r in REGS:
        lines.append(f"#define EMBER_{r.name} {r.offset:#05x}u")
    lines.append("")
    for name in QUEUE_NAMES:
        lines.append(f"#define EMBER_OP_{name.upper()} {OPCODES[name]}u")
    lines += [
        "",
        "#define EMBER_REG(off) (*(volatile unsigned int *)(EMBER_MMIO_BASE + (off)))",
        "",
        "#endif",
        "",
    ]
    return "\n".join(lines)


def markdown():
    """The register table in Markdown, for the README."""
    rows = ["| offset | name | host | firmware | reset | description |",
            "|---|---|---|---|---|---|"]
    for r in REGS:
        reset = "config" if r.reset is None else f"`{r.reset:#x}`"
        rows.append(f"| `{r.offset:#05x}` | `{r.name}` | {r.host} | {r.fw} | {reset} | "
                    f"{r.doc} |")
    rows.append(f"| `{IMEM_WINDOW:#06x}` | IMEM window | w | - | | firmware image, while "
                f"`CTRL.CPU_RESET` is 1 |")
    return "\n".join(rows)
