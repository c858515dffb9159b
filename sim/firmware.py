"""Build control-core firmware (``fw/``) with the ``ziglang`` wheel's clang, and load the image.

``build_firmware("selftest", ["selftest.c"], out_dir=...)`` compiles the program together with the
runtime (``fw/crt0.S``, ``fw/runtime.c``) for ``riscv32-freestanding-none``, links it with
``fw/link.ld``, and turns the ELF into a flat binary (``objcopy -O binary``): the IMEM image, to be
loaded at ``IMEM_BASE`` (0) by the host. Like :func:`sim.runner.build_rtl`, a build is redone only
when one of its inputs changed (a stamp holding a hash of the command and of every file under
``fw/`` and every source, guarded by a file lock, so pytest-xdist workers share one build).

zig keeps its caches (compiler-rt for the target, built once) under ``build/zig-cache`` unless
``ZIG_GLOBAL_CACHE_DIR``/``ZIG_LOCAL_CACHE_DIR`` are set.

Command line::

    python -m sim.firmware [--cpu generic_rv32+m] [--out-dir DIR]            # every program
    python -m sim.firmware [--cpu ...] [--out-dir DIR] [-D NAME=VALUE] NAME SOURCE...
"""

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

from sim.runner import locked

__all__ = [
    "FW_DIR", "LINKER_SCRIPT", "RUNTIME_SOURCES", "PROGRAMS", "FirmwareBuildError",
    "compile_command", "build_firmware", "build_programs", "load_words",
]

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
FW_DIR = ROOT / "fw"
LINKER_SCRIPT = FW_DIR / "link.ld"
RUNTIME_SOURCES = (FW_DIR / "crt0.S", FW_DIR / "runtime.c")

#: The project's firmware programs and their sources (besides the runtime).
PROGRAMS = {
    "selftest": ["selftest.c"],
    "buserror": ["buserror.c"],
    "gemm": ["gemm.c"],
}

#: Compiler flags, besides ``-mcpu``, the defines, the sources and the output.
CFLAGS = (
    "-target", "riscv32-freestanding-none",
    "-O2", "-g",
    # -nostdlib drops zig's compiler-rt too; -rtlib=compiler-rt brings it back (64-bit division,
    # and multiply/divide on cores without M).
    "-ffreestanding", "-nostdlib", "-rtlib=compiler-rt", "-fno-pic", "-fomit-frame-pointer",
    "-ffunction-sections", "-fdata-sections",
    "-std=gnu11", "-Wall", "-Wextra", "-Werror",
)


class FirmwareBuildError(RuntimeError):
    """The firmware failed to compile or link; the message holds the command and its output."""


def _zig():
    return [sys.executable, "-m", "ziglang"]


def _zig_env():
    env = dict(os.environ)
    cache = BUILD / "zig-cache"
    env.setdefault("ZIG_GLOBAL_CACHE_DIR", str(cache / "global"))
    env.setdefault("ZIG_LOCAL_CACHE_DIR", str(cache / "local"))
    return env


def _resolve(source):
    path = Path(source)
    if not path.is_absolute() and not path.exists() and (FW_DIR / path).exists():
        path = FW_DIR / path
    path = path.resolve()
    if not path.is_file():
        raise FileNotFoundError(f"firmware source {source!r} not found (looked in . and {FW_DIR})")
    return path


def _define_flags(defines):
    flags = []
    for key, value in (defines or {}).items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
            raise ValueError(f"bad macro name {key!r}")
        flags.append(f"-D{key}" if value is None else f"-D{key}={value}")
    return flags


def compile_command(sources, elf, *, cpu="generic_rv32+m", defines=None, runtime=True,
                    extra_flags=()):
    """The full compile-and-link command line (a list), as :func:`build_firmware` runs it."""
    srcs = [*(RUNTIME_SOURCES if runtime else ()), *map(_resolve, sources)]
    return [
        *_zig(), "cc", *CFLAGS, f"-mcpu={cpu}", f"-I{FW_DIR}", *_define_flags(defines),
        *extra_flags,
        "-T", str(LINKER_SCRIPT), "-Wl,--gc-sections",
        *map(str, srcs), "-o", str(elf),
    ]


def _run(cmd, what):
    result = subprocess.run(cmd, env=_zig_env(), capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise FirmwareBuildError(
            f"{what} failed (exit status {result.returncode}):\n$ {' '.join(cmd)}\n{output}")
    return result


def build_firmware(name, sources, *, out_dir=None, defines=None, cpu="generic_rv32+m",
                   runtime=True, extra_flags=()):
    """Compile, link and flatten firmware ``name``; return the path of ``<out_dir>/<name>.bin``.

    Parameters
    ----------
    name : str
        Output base name (``<name>.elf``, ``.map``, ``.bin``), letters, digits, ``_``, ``-``, ``.``.
    sources : list of path
        C and assembly sources of the program; relative names not found from the working directory
        are looked up in ``fw/``. The runtime (``crt0.S``, ``runtime.c``) is added unless
        ``runtime=False``.
    out_dir : path
        Output directory (default ``build/fw``).
    defines : dict
        Preprocessor macros, ``{"NAME": value}`` (``None`` for a bare ``-DNAME``).
    cpu : str
        ``-mcpu`` value: ``generic_rv32+m`` for a core with M, ``generic_rv32`` without (then
        compiler-rt supplies multiply and divide); see :func:`hw.cpu.firmware_cpu`.

    Raises
    ------
    FirmwareBuildError
        With the command and the compiler's or linker's output.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
        raise ValueError(f"bad firmware name {name!r}")
    out_dir = Path(out_dir) if out_dir is not None else BUILD / "fw"
    out_dir.mkdir(parents=True, exist_ok=True)
    elf, binary = out_dir / f"{name}.elf", out_dir / f"{name}.bin"
    cmd = compile_command(sources, elf, cpu=cpu, defines=defines, runtime=runtime,
                          extra_flags=extra_flags)

    digest = hashlib.sha256(repr(cmd).encode())
    inputs = sorted({*(p for p in FW_DIR.rglob("*") if p.is_file()),
                     *(Path(a) for a in cmd if a.endswith((".c", ".S", ".s", ".h")))})
    for path in inputs:
        digest.update(str(path).encode())
        digest.update(path.read_bytes())
    stamp = out_dir / f"{name}.stamp"
    with locked(out_dir / f".{name}.lock"):
        if stamp.exists() and stamp.read_text() == digest.hexdigest() and binary.exists():
            return binary
        stamp.unlink(missing_ok=True)
        _run(cmd, f"firmware {name!r}: compile and link")
        _run([*_zig(), "objcopy", "-O", "binary", str(elf), str(binary)],
             f"firmware {name!r}: objcopy")
        stamp.write_text(digest.hexdigest())
    return binary


def build_programs(cpu="generic_rv32+m", *, out_dir=None):
    """Build every program of :data:`PROGRAMS` for ``cpu`` into ``out_dir`` (default
    ``build/fw/<cpu>``, with ``+`` spelled ``_``); return ``{name: path of the .bin}``."""
    out_dir = Path(out_dir) if out_dir is not None else BUILD / "fw" / cpu.replace("+", "_")
    return {name: build_firmware(name, sources, out_dir=out_dir, cpu=cpu)
            for name, sources in PROGRAMS.items()}


def load_words(path):
    """The 32-bit little-endian words of a flat binary (zero-padded to a whole word)."""
    data = Path(path).read_bytes()
    data += bytes(-len(data) % 4)
    return [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m sim.firmware", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("name", nargs="?", help="program name (default: every program)")
    parser.add_argument("sources", nargs="*")
    parser.add_argument("--cpu", default="generic_rv32+m")
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("-D", dest="defines", action="append", default=[],
                        metavar="NAME[=VALUE]")
    args = parser.parse_args(argv)
    defines = dict((d.split("=", 1) + [None])[:2] for d in args.defines)
    try:
        if args.name is None:
            paths = list(build_programs(args.cpu, out_dir=args.out_dir).values())
        elif not args.sources:
            parser.error("give the sources of the program")
        else:
            paths = [build_firmware(args.name, args.sources, out_dir=args.out_dir,
                                    defines=defines, cpu=args.cpu)]
    except FirmwareBuildError as e:
        raise SystemExit(str(e))
    for path in paths:
        print(f"{path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
