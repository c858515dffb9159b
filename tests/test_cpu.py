"""Control core (``hw/cpu.py``) and firmware toolchain (``sim/firmware.py``, ``fw/``).

The cocotb runs (``sim/tb_cpu.py``) boot the core from firmware loaded through the host port and
check every value it reports. The DUT is the ControlCore itself, converted with the top name
``ember_tiny_cpu`` (``ember_tiny_cpu_<variant>`` for the other variants, which are ``slow``).
``pytest -s`` prints the cycle counts and simulation speed of each run (numbers for every variant
are in ``hw/cpu.py``'s docstring).
"""

import gc
import json
import re

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw import cpu, wishbone
from hw.config import get_preset
from hw.cpu import ControlCore, firmware_cpu, vexriscv_source
from sim.firmware import FW_DIR, FirmwareBuildError, build_firmware, build_programs, load_words
from sim.runner import ROOT, build_rtl, generate_verilog, lint, run_cocotb

VLT = ROOT / "hw" / "vexriscv.vlt"


def _top_name(cfg, variant):
    suffix = "" if variant == cpu.DEFAULT_VARIANT else "_" + variant.lower()
    return f"{cfg.top_name}_cpu{suffix}"


def _run(variant, testcase):
    cfg = get_preset("tiny")
    name = _top_name(cfg, variant)
    firmware = {name: str(path) for name, path in build_programs(firmware_cpu(variant)).items()}
    build_dir = build_rtl(name, lambda: ControlCore(variant=variant),
                          extra_sources=[VLT, vexriscv_source(variant)])
    env = {
        "EMBER_CPU": json.dumps({"variant": variant, "imem_size": cpu.DEFAULT_IMEM_SIZE,
                                 "dmem_size": cpu.DEFAULT_DMEM_SIZE}),
        "EMBER_FIRMWARE": json.dumps(firmware),
    }
    test_dir = run_cocotb(build_dir, name, "sim.tb_cpu", config=cfg, testcase=testcase,
                          extra_env=env)
    report = json.loads((test_dir / "cpu_report.json").read_text())
    for run in report["runs"]:
        print(f"{variant} {testcase}: {run['program']} {run['cycles']} cycles, boot "
              f"{run['boot_cycles']} ({run['cycles_per_s']:.0f} cycles/s)"
              + (f", fib({run['n']}) {run['fib_cycles']} cycles" if run.get("fib_cycles") else ""))
    return report


@pytest.mark.rtl
@pytest.mark.parametrize("testcase", ["selftest", "bus_errors", "reload"])
def test_control_core(testcase):
    _run(cpu.DEFAULT_VARIANT, testcase)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("variant", [v for v in cpu.VARIANTS if v != cpu.DEFAULT_VARIANT])
def test_other_variants(variant):
    _run(variant, "selftest")


# ---------------------------------------------------------------------------------------------
# Lint and structure of the generated Verilog.

def test_verilog_lint_clean(tmp_path):
    """Our Verilog is lint-clean against the real VexRiscv module; VexRiscv's own warnings are
    waived by hw/vexriscv.vlt (its file only)."""
    top = "ember_tiny_cpu"
    text = generate_verilog(ControlCore(), top)
    modules = re.findall(r"^module\s+\\?(\S+?)\s*\(", text, re.M)
    assert top in modules and not [m for m in modules if "__" in m], modules
    assert re.search(r"^\s*VexRiscv\s+cpu\s*\(", text, re.M), "VexRiscv instance missing"
    path = tmp_path / f"{top}.v"
    path.write_text(text)
    lint(path, top, extra_sources=[VLT, vexriscv_source()])


def test_lint_still_sees_our_warnings(tmp_path):
    """The waiver file silences VexRiscv only: a warning in our file still fails lint."""
    path = tmp_path / "bad_top.v"
    path.write_text("module bad_top(input clk, output [1:0] o);\n"
                    "  VexRiscv cpu(.clk(clk));\n  assign o = 3'd5;\nendmodule\n")
    with pytest.raises(RuntimeError, match="lint of"):
        lint(path, "bad_top", extra_sources=[VLT, vexriscv_source()])


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_parameters():
    with pytest.raises(ValueError, match="unknown VexRiscv variant 'VexRiscv_Nope'"):
        ControlCore(variant="VexRiscv_Nope")
    with pytest.raises(ValueError, match="imem_size must be a power of two"):
        ControlCore(imem_size=3000)
    assert firmware_cpu("VexRiscv") == "generic_rv32+m"
    assert firmware_cpu("VexRiscv_Min") == "generic_rv32"
    for variant in cpu.VARIANTS:
        assert vexriscv_source(variant).exists()
    gc.collect()  # the half-built components warn as they go; let them do it here


# ---------------------------------------------------------------------------------------------
# The memory map is written down in four places; they must agree.

def _c_defines(path):
    defines = {}
    for name, value in re.findall(r"^#define\s+(EMBER_\w+)\s+(0x[0-9A-Fa-f]+)u?\b",
                                  path.read_text(), re.M):
        defines[name] = int(value, 16)
    return defines


def test_memory_map_agrees():
    from sim import tb_cpu
    ld = (FW_DIR / "link.ld").read_text()
    regions = {name: (int(origin, 16), int(length[:-1]) * 1024)
               for name, origin, length in re.findall(
                   r"^\s*(\w+)\s*\([rwx]+\)\s*:\s*ORIGIN\s*=\s*(0x[0-9A-Fa-f]+),\s*"
                   r"LENGTH\s*=\s*(\d+K)", ld, re.M)}
    assert regions == {"IMEM": (cpu.IMEM_BASE, cpu.DEFAULT_IMEM_SIZE),
                       "DMEM": (cpu.DMEM_BASE, cpu.DEFAULT_DMEM_SIZE)}
    h = _c_defines(FW_DIR / "ember.h")
    assert h["EMBER_IMEM_BASE"] == cpu.IMEM_BASE == tb_cpu.IMEM_BASE
    assert h["EMBER_DMEM_BASE"] == cpu.DMEM_BASE == tb_cpu.DMEM_BASE
    assert h["EMBER_SYS_BASE"] == cpu.SYS_BASE == tb_cpu.SYS_BASE
    assert h["EMBER_MMIO_BASE"] == cpu.MMIO_BASE == tb_cpu.MMIO_BASE
    assert h["EMBER_MMIO_SIZE"] == cpu.MMIO_SIZE
    assert h["EMBER_SYS_BERR_STATUS"] == cpu.SYS_BERR_STATUS
    assert h["EMBER_SYS_BERR_ADDR"] == cpu.SYS_BERR_ADDR
    assert h["EMBER_SYS_CYCLE_LO"] == cpu.SYS_CYCLE_LO
    assert h["EMBER_SYS_CYCLE_HI"] == cpu.SYS_CYCLE_HI
    assert h["EMBER_MBOX_DATA"] == tb_cpu.MBOX_DATA and h["EMBER_MBOX_TRAP"] == tb_cpu.MBOX_TRAP
    assert h["EMBER_MBOX_DONE"] == tb_cpu.MBOX_DONE and h["EMBER_MBOX_PUTC"] == tb_cpu.MBOX_PUTC
    assert h["EMBER_EXIT_TRAP"] == tb_cpu.EXIT_TRAP
    assert re.search(r"EMBER_MBOX_BASE \(EMBER_MMIO_BASE \+ 0x0FFFF000u\)",
                     (FW_DIR / "ember.h").read_text())
    assert tb_cpu.MBOX_OFFSET == 0x0FFF_F000
    assert tb_cpu.MBOX_ERR == 0x0FFF_FFFC and "0x0FFFFFFCu" in (FW_DIR / "buserror.c").read_text()
    # VexRiscv never caches addresses with bit 31 set: MMIO and the core-local registers must be
    # there; IMEM and DMEM are cacheable.
    for base in (cpu.MMIO_BASE, cpu.MMIO_BASE + cpu.MMIO_SIZE - 1, cpu.SYS_BASE):
        assert base >> 31
    assert not any(base >> 31 for base in (cpu.IMEM_BASE, cpu.DMEM_BASE))


# ---------------------------------------------------------------------------------------------
# Firmware builder.

def test_firmware_builds_and_is_cached(tmp_path):
    path = build_firmware("selftest", ["selftest.c"], out_dir=tmp_path)
    words = load_words(path)
    assert path.suffix == ".bin" and 16 < len(words) * 4 <= 16 * 1024
    mtime = path.stat().st_mtime_ns
    assert build_firmware("selftest", ["selftest.c"], out_dir=tmp_path) == path
    assert path.stat().st_mtime_ns == mtime, "an unchanged build was redone"
    build_firmware("selftest", ["selftest.c"], out_dir=tmp_path, defines={"UNUSED_FLAG": 1})
    assert path.stat().st_mtime_ns != mtime, "a changed build was not redone"


def test_firmware_without_m_links_compiler_rt(tmp_path):
    path = build_firmware("selftest", ["selftest.c"], out_dir=tmp_path, cpu="generic_rv32")
    assert len(load_words(path)) > 16


def test_firmware_compile_error_is_reported(tmp_path):
    broken = tmp_path / "broken.c"
    broken.write_text('#include "ember.h"\nint main(void) { return undeclared_thing; }\n')
    with pytest.raises(FirmwareBuildError) as info:
        build_firmware("broken", [broken], out_dir=tmp_path)
    message = str(info.value)
    assert "firmware 'broken'" in message and "broken.c:2" in message
    assert "undeclared_thing" in message
    assert not (tmp_path / "broken.bin").exists()


def test_firmware_link_errors_are_reported(tmp_path):
    missing = tmp_path / "missing.c"
    missing.write_text("void nowhere(void);\nint main(void) { nowhere(); return 0; }\n")
    with pytest.raises(FirmwareBuildError, match="undefined symbol: nowhere"):
        build_firmware("missing", [missing], out_dir=tmp_path)
    big = tmp_path / "big.c"
    big.write_text("const volatile char big[20000] = {1};\n"
                   "int main(void) { return big[0]; }\n")
    with pytest.raises(FirmwareBuildError, match="IMEM"):
        build_firmware("big", [big], out_dir=tmp_path)


def test_load_words(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(bytes([1, 2, 3, 4, 5]))
    assert load_words(path) == [0x04030201, 0x05]


# ---------------------------------------------------------------------------------------------
# The Wishbone pieces on their own, in Amaranth's simulator (no Verilator).

class _Fabric(wiring.Component):
    """Decoder → {rw: SRAM port 0 (rw, burst), ro: SRAM port 1 (r)} behind an ErrorCatcher."""

    def __init__(self):
        self.sig = wishbone.Signature(addr_width=30, burst=True)
        super().__init__({
            "bus": In(self.sig),
            "host": In(wishbone.host_write_signature(4)),
            "error": Out(wiring.Signature({"valid": Out(1), "adr": Out(30), "we": Out(1)})),
            "raw_err": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.catch = catch = wishbone.ErrorCatcher(self.sig)
        m.submodules.dec = dec = wishbone.Decoder(addr_width=30, burst=True, windows={
            "rw": (0x1000, 64), "ro": (0x2000, 64)})
        m.submodules.ram = ram = wishbone.SRAM(size=64, ports=("rw", "r"), burst=True,
                                               init=[0x100 + i for i in range(16)])
        wiring.connect(m, wiring.flipped(self.bus), catch.bus)
        wiring.connect(m, catch.sub, dec.bus)
        wiring.connect(m, dec.subs.rw, ram.buses[0])
        wiring.connect(m, dec.subs.ro, ram.buses[1])
        wiring.connect(m, wiring.flipped(self.host), ram.host)
        wiring.connect(m, catch.error, wiring.flipped(self.error))
        m.d.comb += self.raw_err.eq(dec.bus.err)
        return m


def test_wishbone_fabric():
    from amaranth.sim import Simulator
    dut = _Fabric()
    bus = dut.bus
    log = {}

    async def access(ctx, byte_addr, *, we=0, data=0, sel=0xF):
        """One classic cycle; returns (dat_r, raw err, cycles until answered)."""
        ctx.set(bus.cyc, 1)
        ctx.set(bus.stb, 1)
        ctx.set(bus.adr, byte_addr >> 2)
        ctx.set(bus.we, we)
        ctx.set(bus.dat_w, data)
        ctx.set(bus.sel, sel)
        ctx.set(bus.cti, wishbone.CTI_CLASSIC)
        cycles = 1  # the request's cycle
        while True:
            await ctx.tick()
            cycles += 1
            if ctx.get(bus.ack):
                break
            assert cycles < 10, "no answer"
        answer = (ctx.get(bus.dat_r), ctx.get(dut.raw_err), ctx.get(dut.error.valid), cycles)
        await ctx.tick()  # the initiator takes the answer here
        ctx.set(bus.cyc, 0)
        ctx.set(bus.stb, 0)
        return answer

    async def testbench(ctx):
        # Classic reads and byte-masked writes: two cycles each (registered ack).
        assert await access(ctx, 0x1008) == (0x102, 0, 0, 2)
        assert (await access(ctx, 0x1008, we=1, data=0xAABBCCDD, sel=0b0101))[1:] == (0, 0, 2)
        assert (await access(ctx, 0x2008))[0] == 0x00BB00DD | (0x102 & 0xFF00FF00)
        # A write on the read-only port, and an unmapped access: err (as ack + report).
        assert (await access(ctx, 0x2000, we=1, data=1))[1:] == (1, 1, 2)
        assert await access(ctx, 0x3000) == (0, 1, 1, 2)
        # An incrementing read burst of 8 beats takes 9 cycles.
        ctx.set(bus.cyc, 1)
        ctx.set(bus.stb, 1)
        ctx.set(bus.we, 0)
        ctx.set(bus.adr, 0x1020 >> 2)
        ctx.set(bus.cti, wishbone.CTI_INCR)
        await ctx.tick()
        beats = []
        for i in range(8):
            assert ctx.get(bus.ack), f"beat {i} not acknowledged"
            beats.append(ctx.get(bus.dat_r))
            await ctx.tick()
            ctx.set(bus.adr, (0x1020 >> 2) + i + 1)
            ctx.set(bus.cti, wishbone.CTI_END if i + 1 == 7 else wishbone.CTI_INCR)
        ctx.set(bus.cyc, 0)
        ctx.set(bus.stb, 0)
        assert beats == [0x108 + i for i in range(8)]
        assert not ctx.get(bus.ack)
        # A host write in the same cycle as a bus write: the host wins, the bus write lands a cycle
        # later; both are there.
        ctx.set(dut.host.en, 1)
        ctx.set(dut.host.addr, 3)
        ctx.set(dut.host.data, 0x12345678)
        ctx.set(dut.host.sel, 0xF)
        ctx.set(bus.cyc, 1)
        ctx.set(bus.stb, 1)
        ctx.set(bus.we, 1)
        ctx.set(bus.adr, 0x1010 >> 2)
        ctx.set(bus.dat_w, 0x9ABCDEF0)
        ctx.set(bus.cti, wishbone.CTI_CLASSIC)
        await ctx.tick()
        ctx.set(dut.host.en, 0)
        assert not ctx.get(bus.ack)
        await ctx.tick()
        assert ctx.get(bus.ack)
        await ctx.tick()
        ctx.set(bus.cyc, 0)
        ctx.set(bus.stb, 0)
        assert (await access(ctx, 0x100C))[0] == 0x12345678
        assert (await access(ctx, 0x1010))[0] == 0x9ABCDEF0
        log["done"] = True

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert log.get("done")


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_wishbone_parameters():
    with pytest.raises(ValueError, match="overlap"):
        wishbone.Decoder(windows={"a": (0x0, 0x100), "b": (0x80, 0x80)})
    with pytest.raises(ValueError, match="not aligned"):
        wishbone.Decoder(windows={"a": (0x40, 0x100)})
    with pytest.raises(ValueError, match="power of two"):
        wishbone.Decoder(windows={"a": (0x0, 0x30)})
    with pytest.raises(ValueError, match="at most one port"):
        wishbone.SRAM(size=64, ports=("rw", "rw"))
    gc.collect()  # the half-built components warn as they go; let them do it here
