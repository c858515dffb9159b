"""The Ember runtime on the simulated accelerator: ``Device(config).gemm(a, b, ...)``.

A :class:`Device` runs jobs on the Verilator model of the whole top level (``hw/top.py``),
built once per preset by :func:`sim.runner.build_rtl` (the same build as ``tests/test_top.py``).
cocotb must own the simulator process, so each call writes its job (``.npy`` operands and a JSON
spec) to a temporary directory and runs ``sim/tb_job.py`` through :func:`sim.runner.run_cocotb`;
the job writes back the result and the performance counters. Two drivers issue the command plan
of :func:`sim.host.plan_gemm` (packed operands in DRAM either way):

- ``driver="host"`` (the default): the testbench pushes the commands through the host
  registers (``sim/tb_top.py``, :class:`sim.host.HostDriver`);
- ``driver="firmware"``: the testbench loads ``fw/gemm.c`` into the control core, writes the
  job into ``ARG0..ARG15`` (:mod:`sim.fwjob`) and rings ``DOORBELL``; the firmware pushes the
  same commands and reports in ``FW_STATUS``. Slower than the host driver on the presets
  measured (each store command costs the core four MMIO writes), so not the default.

Example::

    dev = Device("tiny")
    c = dev.gemm(a, b)                                   # INT32: A·B
    q = dev.gemm(a, b, bias=bias, multiplier=qm, shift=s, zero_point=-3)   # INT8
    print(dev.last_stats["utilization"])
"""

import contextlib
import io
import json
import numbers
import tempfile
import time
from pathlib import Path

import numpy as np

from hw.config import EmberConfig, get_preset
from sim.host import EmberHardwareError, EmberTimeout, block_sizes, dram_layout, utilization

__all__ = ["Device", "EmberHardwareError", "EmberSimulationError", "EmberTimeout"]

ENGINES = ("load", "store", "gemm")
DRIVERS = ("host", "firmware")


class EmberSimulationError(RuntimeError):
    """The simulation of a job failed for a reason other than a hardware-reported error
    (a timeout, a stray DRAM write, a testbench failure). ``log`` is the simulator log."""

    def __init__(self, message, log=None):
        self.log = log
        super().__init__(message)


def _check_matrix(name, x):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, not {type(x).__name__}")
    if x.dtype != np.int8:
        raise TypeError(f"{name} must have dtype int8, not {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, not of shape {x.shape!r}")
    if 0 in x.shape:
        raise ValueError(f"{name} must not be empty, not of shape {x.shape!r}")


def _check_vector(name, x, n):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of int32, not {type(x).__name__}")
    if x.dtype != np.int32:
        raise TypeError(f"{name} must have dtype int32, not {x.dtype}")
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one value per column of b, "
                         f"not {x.shape!r}")


def _check_int8_scalar(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not -128 <= int(value) <= 127:
        raise ValueError(f"{name} must be in [-128, 127], not {value!r}")
    return int(value)


class Device:
    """An Ember accelerator of one configuration, simulated on Verilator.

    Parameters
    ----------
    config : EmberConfig or str
        The configuration, or a preset name (``"tiny"``, ``"default"``).
    driver : str
        Who pushes the commands: ``"host"`` (the testbench, through the host registers; the
        default) or ``"firmware"`` (``fw/gemm.c`` on the control core, started by DOORBELL).
    timeout : int
        Cycle budget of every wait in a job (no progress for that long is an error; with the
        firmware driver also its watchdog).

    Members
    -------
    config : EmberConfig
    driver : str
    last_stats : dict or None
        Statistics of the last successful run: ``cycles`` (``PERF_CYCLES`` from the first
        command to the queues seen idle), ``macs`` (M·K·N), ``peak_macs_per_cycle`` (R·C·L),
        ``utilization`` (macs / (cycles · peak)), ``array_steps``, ``engines`` (per engine
        ``busy`` and ``wait`` cycles from ``PERF_BUSY*``/``PERF_WAIT*``), ``dma_rd_beats``,
        ``dma_wr_beats``, ``gemm_stall``, the plan (``plan``), ``sim_seconds``, ``driver``; with
        the firmware driver also ``doorbell_cycles`` (exact cycles from the DOORBELL write to the
        firmware's FW_STATUS write) and ``first_push_cycles`` (from DOORBELL to its first
        command). With the firmware driver ``cycles`` counts from the firmware's PERF_CLEAR at
        the start of the job, with the host driver from the host's; both until the host has seen
        the job finished.
    """

    def __init__(self, config="tiny", *, driver="host", timeout=1_000_000):
        if isinstance(config, str):
            config = get_preset(config)
        if not isinstance(config, EmberConfig):
            raise TypeError(f"config must be an EmberConfig or a preset name, not {config!r}")
        if not config.simulate:
            raise ValueError(f"config {config.name!r} is elaboration-only and cannot be "
                             f"simulated")
        if driver not in DRIVERS:
            raise ValueError(f"driver must be one of {DRIVERS!r}, not {driver!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1000:
            raise ValueError(f"timeout must be an integer of at least 1000 cycles, "
                             f"not {timeout!r}")
        self.config = config
        self.driver = driver
        self.timeout = timeout
        self.last_stats = None
        self._build_dir = None

    def __repr__(self):
        if self.driver == "host":
            return f"Device({self.config.name!r})"
        return f"Device({self.config.name!r}, driver={self.driver!r})"

    def build(self):
        """Build (or reuse) the Verilator model; return its directory."""
        if self._build_dir is None:
            from hw.cpu import vexriscv_source
            from hw.top import build_top
            from sim.runner import VEXRISCV_VLT, build_rtl
            cfg = self.config
            with contextlib.redirect_stdout(io.StringIO()):
                self._build_dir = build_rtl(cfg.top_name, lambda: build_top(cfg),
                                            extra_sources=[VEXRISCV_VLT, vexriscv_source()])
        return self._build_dir

    # -- GEMM ---------------------------------------------------------------------------------

    def check_gemm_args(self, a, b, *, bias=None, multiplier=None, shift=None, zero_point=0,
                        act_min=-128, act_max=127):
        """Validate the arguments of :meth:`gemm` (raises ``TypeError``/``ValueError`` naming
        the argument); return ``(M, K, N, requantise)``."""
        _check_matrix("a", a)
        _check_matrix("b", b)
        M, K = a.shape
        if b.shape[0] != K:
            raise ValueError(f"a has {K} columns but b has {b.shape[0]} rows: a is M×K and b "
                             f"must be K×N")
        N = b.shape[1]
        for name, v in (("bias", bias), ("multiplier", multiplier), ("shift", shift)):
            if v is not None:
                _check_vector(name, v, N)
        if (multiplier is None) != (shift is None):
            given, missing = ("multiplier", "shift") if shift is None else ("shift", "multiplier")
            raise ValueError(f"{given} is given but {missing} is not: requantisation needs both")
        requant = multiplier is not None
        if requant and (shift.min() < -31 or shift.max() > 31):
            bad = shift[(shift < -31) | (shift > 31)][0]
            raise ValueError(f"shift must be in [-31, 31], not {int(bad)}")
        zero_point = _check_int8_scalar("zero_point", zero_point)
        act_min = _check_int8_scalar("act_min", act_min)
        act_max = _check_int8_scalar("act_max", act_max)
        if act_min > act_max:
            raise ValueError(f"act_min must not exceed act_max, not {act_min} > {act_max}")
        if not requant and (zero_point, act_min, act_max) != (0, -128, 127):
            raise ValueError("zero_point, act_min and act_max apply to requantised (INT8) "
                             "output only: give multiplier and shift too")
        block_sizes(self.config, M, K, N)            # ValueError naming K if it does not fit
        return M, K, N, requant

    def gemm(self, a, b, *, bias=None, multiplier=None, shift=None, zero_point=0, act_min=-128,
             act_max=127):
        """``C = A·B`` on the accelerator, with the output stage.

        Parameters
        ----------
        a : numpy.ndarray of int8, shape (M, K)
        b : numpy.ndarray of int8, shape (K, N)
            K must fit one scratchpad bank (``K ≤ sram_depth · pe_lanes``).
        bias : numpy.ndarray of int32, shape (N,), optional
            Per-column bias, added to the INT32 accumulators (wrapping).
        multiplier, shift : numpy.ndarray of int32, shape (N,), optional
            Per-column TFLite requantisation (``shift`` in [-31, 31], positive left). Give both
            for INT8 output; give neither for INT32 ``A·B + bias``.
        zero_point, act_min, act_max : int
            INT8 output zero point and clamp (requantised output only).

        Returns
        -------
        numpy.ndarray of int8 (requantised) or int32, shape (M, N)

        Raises
        ------
        TypeError, ValueError
            Bad arguments (the message names the argument).
        EmberHardwareError
            The accelerator reported an error (``code``, ``cmd_id``, ``queue``).
        EmberSimulationError
            The simulation failed otherwise (e.g. timeout).
        """
        M, K, N, requant = self.check_gemm_args(
            a, b, bias=bias, multiplier=multiplier, shift=shift, zero_point=zero_point,
            act_min=act_min, act_max=act_max)
        arrays = {"a": a, "b": b, "bias": bias, "multiplier": multiplier, "shift": shift}
        spec = {"kind": "gemm", "zero_point": int(zero_point), "act_min": int(act_min),
                "act_max": int(act_max)}
        return self._run(spec, arrays, M, K, N, requant)

    def _run(self, spec, arrays, M, K, N, requant, prelude=()):
        """Run a job; ``prelude`` (commands pushed before the plan) is a test hook."""
        cfg = self.config
        lay = dram_layout(cfg, M, K, N, raw=not requant)
        spec = {**spec, "dram_size": lay.size, "seed": 1, "timeout": self.timeout,
                "driver": self.driver,
                "prelude": [{"queue": c.queue, "words": list(c.words)} for c in prelude]}
        build_dir = self.build()
        from sim.runner import run_cocotb
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ember_job_") as tmp:
            job_dir = Path(tmp)
            for name, value in arrays.items():
                if value is not None:
                    np.save(job_dir / f"{name}.npy", value)
            (job_dir / "job.json").write_text(json.dumps(spec))
            failure = None
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    run_cocotb(build_dir, cfg.top_name, "sim.tb_job", config=cfg,
                               extra_env={"EMBER_JOB_DIR": str(job_dir)})
            except AssertionError as e:
                failure = str(e)
            result_path = job_dir / "result.json"
            result = json.loads(result_path.read_text()) if result_path.exists() else None
            if result is None:
                raise EmberSimulationError(f"the simulation wrote no result: {failure}", failure)
            if result["status"] == "hardware_error":
                raise EmberHardwareError(result["code"], result["id"], result["queue"])
            if result["status"] == "timeout":
                raise EmberTimeout(result["message"])
            if result["status"] != "ok" or failure is not None:
                raise EmberSimulationError(
                    f"job failed: {result.get('message', failure)}", failure)
            c = np.load(job_dir / "c.npy", allow_pickle=False)
        perf = result["perf"]
        macs = M * K * N
        peak = cfg.macs_per_cycle
        self.last_stats = {
            "config": cfg.name,
            "m": M, "k": K, "n": N,
            "output": "int8" if requant else "int32",
            "cycles": perf["cycles"],
            "macs": macs,
            "peak_macs_per_cycle": peak,
            "utilization": utilization(macs, perf["cycles"], peak),
            "array_steps": perf["gemm_steps"],
            "array_utilization": utilization(perf["gemm_steps"], perf["cycles"], 1),
            "gemm_stall": perf["gemm_stall"],
            "dma_rd_beats": perf["dma_rd_beats"],
            "dma_wr_beats": perf["dma_wr_beats"],
            "engines": {name: {"busy": perf[f"busy{q}"], "wait": perf[f"wait{q}"]}
                        for q, name in enumerate(ENGINES)},
            "plan": result["plan"],
            "register_pushes": result["register_pushes"],
            "sim_seconds": round(time.monotonic() - t0, 3),
            "driver": self.driver,
        }
        if self.driver == "firmware":
            self.last_stats["doorbell_cycles"] = result["doorbell_cycles"]
            self.last_stats["first_push_cycles"] = result["first_push_cycles"]
        expected = np.int8 if requant else np.int32
        assert c.dtype == expected and c.shape == (M, N), (c.dtype, c.shape)
        return c
