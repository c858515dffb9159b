"""DMA engine regression: parameter checks, lint, and cocotb on Verilator against
``sim.golden_dma`` with a cocotbext-axi ``AxiRam`` as DRAM."""

import functools
import json
import re

import pytest
from amaranth.hdl import Module, Shape
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.axi import axi4_signature
from hw.config import get_preset
from hw.dma import DMA
from hw.sram import Scratchpad, sram_port_signature
from sim import golden_dma
from sim.runner import build_rtl, generate_verilog, lint, run_cocotb

TESTCASES = ["random_descriptors", "edge_cases", "rejects", "axi_errors", "performance"]


class DmaHarness(wiring.Component):
    """The DMA with a 3-port scratchpad: its two ports and a debug port for the testbench.

    Parameters
    ----------
    config : EmberConfig
        Supplies ``bus_bytes``, ``sram_banks``, ``sram_depth``, ``axi_id_width``,
        ``axi_addr_width``, ``dma_outstanding`` and ``dma_max_burst``.

    Members
    -------
    load, store : In(stream.Signature(descriptor layout))
    load_done, store_done : Out(stream.Signature(completion layout))
    axi : Out(axi4_signature(...))
        The DMA's AXI4 manager port (``axi__awaddr`` etc. in Verilog).
    dbg : In(sram_port_signature(...))
        The scratchpad's third client port.
    """

    def __init__(self, config):
        words = config.sram_banks * config.sram_depth
        self.dma_params = _dma_params(config)
        self.sram_params = dict(banks=config.sram_banks, depth=config.sram_depth,
                                data_bytes=config.bus_bytes, ports=3)
        desc = DMA.make_descriptor_layout(
            addr_width=config.axi_addr_width, sram_addr_width=words.bit_length() - 1,
            data_bytes=config.bus_bytes, tag_width=golden_dma.TAG_WIDTH)
        done = DMA.make_done_layout(tag_width=golden_dma.TAG_WIDTH)
        super().__init__({
            "load": In(stream.Signature(desc)),
            "store": In(stream.Signature(desc)),
            "load_done": Out(stream.Signature(done)),
            "store_done": Out(stream.Signature(done)),
            "axi": Out(axi4_signature(addr_width=config.axi_addr_width,
                                      data_bytes=config.bus_bytes,
                                      id_width=config.axi_id_width)),
            "dbg": In(sram_port_signature(addr_width=words.bit_length() - 1,
                                          data_bytes=config.bus_bytes)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma = dma = DMA(**self.dma_params)
        m.submodules.sram = sram = Scratchpad(**self.sram_params)
        wiring.connect(m, dma.sram_wr, sram.ports[0])
        wiring.connect(m, dma.sram_rd, sram.ports[1])
        wiring.connect(m, wiring.flipped(self.dbg), sram.ports[2])
        wiring.connect(m, wiring.flipped(self.load), dma.load)
        wiring.connect(m, wiring.flipped(self.store), dma.store)
        wiring.connect(m, dma.load_done, wiring.flipped(self.load_done))
        wiring.connect(m, dma.store_done, wiring.flipped(self.store_done))
        wiring.connect(m, dma.axi, wiring.flipped(self.axi))
        return m


def _dma_params(config):
    """DMA parameters for a configuration (the scratchpad's port width and word count)."""
    words = config.sram_banks * config.sram_depth
    return dict(data_bytes=config.bus_bytes, addr_width=config.axi_addr_width,
                id_width=config.axi_id_width, outstanding=config.dma_outstanding,
                max_burst=config.dma_max_burst, sram_addr_width=words.bit_length() - 1,
                sram_words=words, tag_width=golden_dma.TAG_WIDTH)


def _name(cfg):
    return f"{cfg.top_name}_dma"


@functools.lru_cache(maxsize=None)
def _build(preset):
    cfg = get_preset(preset)
    return cfg, _name(cfg), build_rtl(_name(cfg), lambda: DmaHarness(cfg))


# ---------------------------------------------------------------------------------------------
# Python-level checks

GOOD = dict(data_bytes=8, addr_width=32, id_width=4, outstanding=8, max_burst=256,
            sram_addr_width=11, sram_words=2048, tag_width=16)


@pytest.mark.parametrize("changes, exc, match", [
    ({"data_bytes": 12}, ValueError, "data_bytes must be a power of two, not 12"),
    ({"data_bytes": 4}, ValueError, r"data_bytes must be in \[8, 64\], not 4"),
    ({"data_bytes": 128}, ValueError, r"data_bytes must be in \[8, 64\], not 128"),
    ({"data_bytes": 8.0}, TypeError, "data_bytes must be an integer, not 8.0"),
    ({"addr_width": 31}, ValueError, r"addr_width must be in \[32, 64\], not 31"),
    ({"addr_width": 65}, ValueError, r"addr_width must be in \[32, 64\], not 65"),
    ({"addr_width": "32"}, TypeError, "addr_width must be an integer, not '32'"),
    ({"id_width": 0}, ValueError, r"id_width must be in \[1, 16\], not 0"),
    ({"id_width": 17}, ValueError, r"id_width must be in \[1, 16\], not 17"),
    ({"outstanding": 0}, ValueError, r"outstanding must be in \[1, 256\], not 0"),
    ({"outstanding": True}, TypeError, "outstanding must be an integer, not True"),
    ({"max_burst": 3}, ValueError, "max_burst must be a power of two, not 3"),
    ({"max_burst": 512}, ValueError, r"max_burst must be in \[1, 256\], not 512"),
    ({"sram_addr_width": 0}, ValueError, r"sram_addr_width must be in \[1, 32\], not 0"),
    ({"sram_words": 2049}, ValueError, r"sram_words must be in \[1, 2048\], not 2049"),
    ({"sram_words": 0}, ValueError, r"sram_words must be in \[1, 2048\], not 0"),
    ({"sram_words": None}, TypeError, "sram_words must be an integer, not None"),
    ({"tag_width": 0}, ValueError, r"tag_width must be in \[1, 32\], not 0"),
])
def test_dma_parameters(changes, exc, match):
    with pytest.raises(exc, match=match):
        DMA(**{**GOOD, **changes})


def test_dma_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        DMA(*GOOD.values())


@pytest.mark.parametrize("preset", ["tiny", "default", "mtia"])
def test_layouts_match_golden(preset):
    """The host-side encoding of ``sim.golden_dma`` matches the hardware layouts."""
    cfg = get_preset(preset)
    words = cfg.sram_banks * cfg.sram_depth
    params = _dma_params(cfg)
    desc_layout = DMA.make_descriptor_layout(
        addr_width=params["addr_width"], sram_addr_width=params["sram_addr_width"],
        data_bytes=params["data_bytes"], tag_width=params["tag_width"])
    fields = golden_dma.descriptor_fields(addr_width=cfg.axi_addr_width,
                                          sram_addr_width=words.bit_length() - 1,
                                          data_bytes=cfg.bus_bytes)
    layout = [(name, Shape.cast(f.shape).width) for name, f in desc_layout]
    assert layout == fields
    offsets = [f.offset for _, f in desc_layout]
    assert offsets == [sum(w for _, w in fields[:i]) for i in range(len(fields))]
    done = [(name, Shape.cast(f.shape).width)
            for name, f in DMA.make_done_layout(tag_width=params["tag_width"])]
    assert done == golden_dma.done_fields()
    # A whole-scratchpad row is expressible, and at least 2**16 - 1 bytes.
    row_bytes = dict(fields)["row_bytes"]
    assert (1 << row_bytes) - 1 >= max(cfg.sram_bytes, (1 << 16) - 1)


def test_golden_bursts():
    """The golden split itself: 4 KB pages, max_burst, alignment, address wrap."""
    bursts = golden_dma.row_bursts
    assert bursts(4093, 10, data_bytes=8, max_burst=256, addr_width=32) == [(4088, 1), (4096, 1)]
    assert bursts(0, 8192, data_bytes=8, max_burst=256, addr_width=32) == \
        [(0, 256), (2048, 256), (4096, 256), (6144, 256)]
    assert bursts(64, 8192, data_bytes=64, max_burst=256, addr_width=32) == \
        [(64, 63), (4096, 64), (8192, 1)]
    assert bursts((1 << 32) - 8, 16, data_bytes=8, max_burst=16, addr_width=32) == \
        [((1 << 32) - 8, 1), (0, 1)]


def test_golden_error_outcomes():
    """Loads stop at the first failing beat; stores keep failing beats unchanged."""
    import numpy as np
    dram = np.arange(256, dtype=np.uint8)
    sram = np.zeros(64, np.uint8)
    desc = golden_dma.Descriptor(3, 0, 2, 10, 20, 16, tag=1)

    def fault(addr):
        return golden_dma.RESP_DECERR if addr == 24 else golden_dma.RESP_OKAY
    out = golden_dma.load(dram, sram, desc, data_bytes=8, addr_width=32, fault=fault)
    # Row 1 reads DRAM 23..32; beat 24 fails, so transfer bytes from index 10 + 1 on are cut.
    assert out.code == golden_dma.ERR_DECERR
    assert list(out.maybe_idx) == list(range(10)) + [16]
    assert not sram.any()
    dram2 = np.zeros(256, np.uint8)
    sram[:] = 7
    out = golden_dma.store(dram2, sram, desc, data_bytes=8, max_burst=4, addr_width=32,
                           fault=fault)
    assert out.code == golden_dma.ERR_DECERR
    assert sorted(out.maybe_idx) == list(range(3, 13)) + [23, 32]
    assert not dram2.any()


# ---------------------------------------------------------------------------------------------
# Verilog

@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_dma_lint_clean(preset, tmp_path):
    cfg = get_preset(preset)
    text = generate_verilog(DmaHarness(cfg), _name(cfg))
    modules = re.findall(r"^module (\S+?)\(", text, re.M)
    assert _name(cfg) in modules
    assert not [m for m in modules if "__" in m]
    # cocotbext-axi's AxiBus.from_prefix(dut, "axi_") looks for these port names.
    for port in ("axi__awaddr", "axi__wstrb", "axi__bresp", "axi__arlen", "axi__rlast",
                 "load__payload", "load_done__valid", "dbg__req__payload"):
        assert re.search(rf"\b(input|output)\b[^;]*\b{port}\b", text), port
    path = tmp_path / f"{_name(cfg)}.v"
    path.write_text(text)
    lint(path, _name(cfg))


@pytest.mark.parametrize("params", [
    dict(data_bytes=64, addr_width=64, id_width=8, outstanding=32, max_burst=16,
         sram_addr_width=15, sram_words=20000, tag_width=8),
    dict(data_bytes=8, addr_width=32, id_width=1, outstanding=1, max_burst=1,
         sram_addr_width=1, sram_words=1, tag_width=1),
    dict(data_bytes=16, addr_width=40, id_width=16, outstanding=3, max_burst=2,
         sram_addr_width=20, sram_words=1000, tag_width=32),
    dict(data_bytes=32, addr_width=48, id_width=5, outstanding=256, max_burst=256,
         sram_addr_width=8, sram_words=256, tag_width=16),
], ids=["wide", "smallest", "odd", "deep"])
def test_bare_dma_lint_clean(params, tmp_path):
    """The DMA on its own, at extreme parameters, is lint-clean."""
    path = tmp_path / "dma_bare.v"
    path.write_text(generate_verilog(DMA(**params), "dma_bare"))
    lint(path, "dma_bare")


# ---------------------------------------------------------------------------------------------
# cocotb on Verilator

@pytest.mark.rtl
@pytest.mark.parametrize("testcase", TESTCASES)
@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_dma(preset, testcase):
    cfg, name, build_dir = _build(preset)
    test_dir = run_cocotb(build_dir, name, "sim.tb_dma", config=cfg, testcase=testcase)
    if testcase == "performance":
        report = json.loads((test_dir / "dma_perf.json").read_text())
        for fig in report["figures"]:
            print(f"{preset}: {fig['name']} ({fig['rows']}x{fig['row_bytes']} B), latency "
                  f"{fig['latency']}: {fig['bytes_per_cycle']:.2f} B/cycle = "
                  f"{fig['fraction_of_bus']:.3f} of the bus")
        big_read = next(f for f in report["figures"]
                        if f["name"] == "contiguous read" and f["latency"] == 100)
        assert big_read["fraction_of_bus"] >= 0.90


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 22, 33])
@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_dma_soak(preset, seed):
    """More seeds of the random-descriptor and fault-injection tests."""
    cfg, name, build_dir = _build(preset)
    for testcase in ("random_descriptors", "axi_errors"):
        run_cocotb(build_dir, name, "sim.tb_dma", config=cfg, testcase=testcase,
                   extra_env={"EMBER_SEED": str(seed)})
