"""Command processor: dependencies, ordering, overlap, errors and soft reset."""

import pytest

from hw.cmdproc import CommandProcessor
from hw.config import get_preset
from sim.runner import build_rtl, generate_verilog, lint, run_cocotb


def _factory():
    return CommandProcessor(opcodes=(1, 2, 3), depth=8, inflight=4)


@pytest.mark.rtl
@pytest.mark.parametrize("testcase", ["pipeline_dependencies", "shared_semaphore_race",
                                      "errors_and_clear"])
def test_cmdproc(testcase):
    cfg = get_preset("tiny")
    name = "ember_cmdproc"
    build_dir = build_rtl(name, _factory)
    run_cocotb(build_dir, name, "sim.tb_cmdproc", config=cfg, testcase=testcase)


def test_cmdproc_lint(tmp_path):
    path = tmp_path / "cp.v"
    path.write_text(generate_verilog(_factory(), "ember_cmdproc"))
    lint(path, "ember_cmdproc")


@pytest.mark.parametrize("kwargs, match", [
    ({"opcodes": ()}, "opcodes must be a non-empty"),
    ({"opcodes": (1, 1)}, "opcodes must be distinct"),
    ({"opcodes": (1,), "depth": 0}, "depth must be a positive"),
])
def test_cmdproc_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CommandProcessor(**kwargs)
