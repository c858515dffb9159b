"""The Ember runtime on the simulated accelerator: ``Device(config).gemm(a, b, ...)`` and
``Device(config).embedding_bag(table, indices, offsets, ...)``.

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
    y = dev.embedding_bag(table, indices, offsets, mode="mean")    # INT32 [bags, dim]

Embedding bags (:meth:`Device.embedding_bag`) always run with the host driver, on the pipelined
DRAM model, with the plan of :func:`sim.embag_plan.plan_embag` (``sim/tb_top_embag.py``).
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

ENGINES = ("load", "store", "gemm", "embag")
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
    dram_latency : int or None
        DRAM model. None: GEMMs run on cocotbext-axi's ``AxiRam`` and embedding bags on the
        pipelined model of ``sim/tb_dma.py`` with no added latency. An integer: every job runs
        on the pipelined model, which answers each burst that many cycles after accepting it,
        with many bursts in flight.

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
        the job finished. After :meth:`embedding_bag`: ``cycles``, ``engine_cycles``
        (``PERF_BUSY3``), ``bytes_gathered`` (table bytes read), ``list_bytes`` (index, length
        and weight lists loaded, padded to words), ``bytes_per_cycle``, ``bus_bytes_per_cycle``,
        ``bandwidth_utilization`` (DRAM read bandwidth: ``(bytes_gathered + list_bytes) / (cycles
        · bus_bytes)``, the bytes FBGEMM's TBE benchmark counts as read), ``gather_utilization``
        (table rows only: ``bytes_gathered / (cycles · bus_bytes)``),
        ``engine_bandwidth_utilization`` (table rows over ``engine_cycles``), the
        job's shape, ``dram_latency``, the per-engine counters and the plan's summary.
    """

    def __init__(self, config="tiny", *, driver="host", timeout=1_000_000, dram_latency=None):
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
        if dram_latency is not None and (isinstance(dram_latency, bool)
                                         or not isinstance(dram_latency, int)
                                         or not 0 <= dram_latency <= 10_000):
            raise ValueError(f"dram_latency must be None or an integer in [0, 10000], "
                             f"not {dram_latency!r}")
        self.dram_latency = dram_latency
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

    # -- embedding bags -------------------------------------------------------------------------

    def check_embedding_bag_args(self, table, indices, offsets=None, lengths=None,
                                 per_sample_weights=None, mode="sum", include_last_offset=False,
                                 *, multiplier=None, shift=None, zero_point=0, act_min=-128,
                                 act_max=127):
        """Validate the arguments of :meth:`embedding_bag` (``TypeError``/``ValueError`` naming
        the argument). Returns the normalised job: a dict with ``tables``, ``indices``,
        ``lengths`` (int64, per table), ``weights`` (list or None), ``mode``, ``requant`` (list
        of per-table tuples or None) and ``tbe`` (a list of tables was given).

        Indices are *not* range-checked here: the engine checks them, and an index outside
        ``[0, rows)`` is a hardware error."""
        from sim import golden_embag as GE
        from sim.embag_plan import MAX_DIM
        tbe = isinstance(table, (list, tuple))
        tables = list(table) if tbe else [table]
        if tbe and not tables:
            raise ValueError("table must hold at least one table")
        n = len(tables)

        def per_table(name, value, allow_none=False):
            if not tbe:
                return [value]
            if value is None and allow_none:
                return [None] * n
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{name} must be a list with one entry per table when table is "
                                f"a list, not {type(value).__name__}")
            if len(value) != n:
                raise ValueError(f"{name} must have one entry per table ({n}), not "
                                 f"{len(value)}")
            return list(value)

        for t, tab in enumerate(tables):
            name = f"table[{t}]" if tbe else "table"
            if not isinstance(tab, np.ndarray):
                raise TypeError(f"{name} must be a numpy array, not {type(tab).__name__}")
            if tab.dtype != np.int8:
                raise TypeError(f"{name} must have dtype int8, not {tab.dtype}")
            if tab.ndim != 2:
                raise ValueError(f"{name} must be 2-D [rows, dim], not of shape {tab.shape!r}")
            if not 1 <= tab.shape[1] <= MAX_DIM:
                raise ValueError(f"{name} must have dim in [1, {MAX_DIM}], not {tab.shape[1]}")
            if tab.shape[0] >= 2**31:
                raise ValueError(f"{name} must have fewer than 2^31 rows")
        if not isinstance(mode, str):
            raise TypeError(f"mode must be a str, not {type(mode).__name__}")
        if mode not in ("sum", "mean"):
            raise ValueError(f"mode must be 'sum' or 'mean', not {mode!r}")
        if not isinstance(include_last_offset, bool):
            raise TypeError(f"include_last_offset must be a bool, not {include_last_offset!r}")
        idx_l = per_table("indices", indices)
        if (offsets is None) == (lengths is None):
            raise ValueError("give exactly one of offsets and lengths")
        off_l = per_table("offsets", offsets, allow_none=True)
        len_l = per_table("lengths", lengths, allow_none=True)
        w_l = per_table("per_sample_weights", per_sample_weights, allow_none=True)
        out_idx, out_len, out_w = [], [], []
        for t in range(n):
            sfx = f"[{t}]" if tbe else ""
            try:
                idx = GE._int_array("indices", idx_l[t])
                lens = GE._bag_lengths(idx, off_l[t], len_l[t], include_last_offset)
            except (TypeError, ValueError) as e:
                raise type(e)(str(e).replace("indices", f"indices{sfx}", 1)
                              if sfx else str(e)) from None
            w = w_l[t]
            if w is not None:
                if mode != "sum":
                    raise ValueError(f"per_sample_weights needs mode 'sum', not {mode!r}")
                if not isinstance(w, np.ndarray):
                    raise TypeError(f"per_sample_weights{sfx} must be a numpy array, not "
                                    f"{type(w).__name__}")
                if w.dtype != np.int8:
                    raise TypeError(f"per_sample_weights{sfx} must have dtype int8 (the "
                                    f"engine's weights are INT8), not {w.dtype}")
                if w.shape != idx.shape:
                    raise ValueError(f"per_sample_weights{sfx} must have the shape of "
                                     f"indices{sfx} {idx.shape!r}, not {w.shape!r}")
            out_idx.append(idx)
            out_len.append(lens)
            out_w.append(w)
        bags = {len(x) for x in out_len}
        if len(bags) > 1:
            raise ValueError(f"every table needs the same number of bags, not {sorted(bags)}")
        if (multiplier is None) != (shift is None):
            given, missing = ("multiplier", "shift") if shift is None else ("shift", "multiplier")
            raise ValueError(f"{given} is given but {missing} is not: requantisation needs both")
        requant = None
        if multiplier is not None:
            scalars = {}
            for name, value, lo, hi in (("multiplier", multiplier, -2**31, 2**31 - 1),
                                        ("shift", shift, -31, 31),
                                        ("zero_point", zero_point, -128, 127),
                                        ("act_min", act_min, -128, 127),
                                        ("act_max", act_max, -128, 127)):
                vals = value if isinstance(value, (list, tuple)) else [value] * n
                if len(vals) != n:
                    raise ValueError(f"{name} must be a scalar or have one entry per table "
                                     f"({n}), not {len(vals)}")
                for v in vals:
                    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
                        raise TypeError(f"{name} must be an integer, not {v!r}")
                    if not lo <= int(v) <= hi:
                        raise ValueError(f"{name} must be in [{lo}, {hi}], not {v!r}")
                scalars[name] = [int(v) for v in vals]
            for t in range(n):
                if scalars["act_min"][t] > scalars["act_max"][t]:
                    raise ValueError(f"act_min must not exceed act_max, not "
                                     f"{scalars['act_min'][t]} > {scalars['act_max'][t]}")
            requant = [tuple(scalars[k][t] for k in ("multiplier", "shift", "zero_point",
                                                     "act_min", "act_max")) for t in range(n)]
        elif (zero_point, act_min, act_max) != (0, -128, 127):
            raise ValueError("zero_point, act_min and act_max apply to requantised (INT8) "
                             "output only: give multiplier and shift too")
        return {"tables": tables, "indices": out_idx, "lengths": out_len,
                "weights": out_w if any(w is not None for w in out_w) else None,
                "mode": mode, "requant": requant, "tbe": tbe}

    def embedding_bag(self, table, indices, offsets=None, lengths=None, per_sample_weights=None,
                      mode="sum", include_last_offset=False, *, multiplier=None, shift=None,
                      zero_point=0, act_min=-128, act_max=127):
        """``nn.EmbeddingBag`` / SparseLengthsSum on the accelerator; a list of tables is one
        table-batched (TBE) job.

        Parameters
        ----------
        table : numpy.ndarray of int8, shape (rows, dim), or a list of them
            ``dim`` in ``[1, 1024]``. With a list, ``indices``, ``offsets``/``lengths`` and
            ``per_sample_weights`` are lists with one entry per table, every table has the same
            number of bags, and the output rows concatenate the tables' pooled vectors.
        indices : 1-D integer numpy array (int32 values)
        offsets : 1-D integer numpy array, optional
            PyTorch's bag starts (``B`` entries, or ``B + 1`` with ``include_last_offset``).
        lengths : 1-D integer numpy array, optional
            Caffe2's bag lengths. Give exactly one of ``offsets`` and ``lengths``.
        per_sample_weights : 1-D numpy array of int8, optional
            One INT8 weight per index (weighted sum; ``mode="sum"``). INT8, like the tables:
            every product is exact and the engine's multipliers stay 8×8 bits.
        mode : ``"sum"`` or ``"mean"``
            ``mean`` divides each bag's INT32 sum by its length, rounded half away from zero.
        include_last_offset : bool
        multiplier, shift, zero_point, act_min, act_max : optional
            INT8 output through the GEMM's output stage (TFLite requantisation with no bias);
            each is a scalar or a per-table list. Give ``multiplier`` and ``shift`` for INT8
            output.

        Returns
        -------
        numpy.ndarray of int32 (or int8), shape (B, Σ dim). An empty bag gives zeros.

        Raises
        ------
        TypeError, ValueError
            Bad arguments (the message names the argument).
        EmberHardwareError
            E.g. an index outside ``[0, rows)``: ``code`` 0x11, ``cmd_id``, and ``table``,
            ``bag`` and ``pos`` (position in the bag) of the first such index.
        EmberSimulationError
            The simulation failed otherwise.
        """
        job = self.check_embedding_bag_args(
            table, indices, offsets, lengths, per_sample_weights, mode, include_last_offset,
            multiplier=multiplier, shift=shift, zero_point=zero_point, act_min=act_min,
            act_max=act_max)
        return self._run_embag(job)

    def _run_embag(self, job):
        from sim.embag_plan import EmbagTable, embag_dram_layout, plan_embag
        from sim.runner import run_cocotb
        cfg = self.config
        tables, n = job["tables"], len(job["tables"])
        bags = len(job["lengths"][0])
        requant = job["requant"]
        dims = [t.shape[1] for t in tables]
        if bags == 0:                   # nothing to run (last_stats is left as it was)
            return np.zeros((0, sum(dims)), np.int8 if requant else np.int32)
        weights = job["weights"] or [None] * n
        specs = [EmbagTable(rows=tables[t].shape[0], dim=dims[t], lengths=job["lengths"][t],
                            indices=job["indices"][t], weights=weights[t],
                            requant=requant[t] if requant else None) for t in range(n)]
        dry = plan_embag(cfg, specs, mode=job["mode"], list_addr=0, out_addr=0)
        lay = embag_dram_layout(cfg, [t.shape for t in tables], bags=bags,
                                list_bytes=sum(len(b) for _, b in dry.blocks),
                                requant=requant is not None)
        latency = 0 if self.dram_latency is None else self.dram_latency
        spec = {"kind": "embedding_bag", "tables": n, "mode": job["mode"],
                "requant": requant, "dram_size": lay.size, "dram_latency": latency, "seed": 1,
                "timeout": self.timeout}
        arrays = {}
        for t in range(n):
            arrays[f"table{t}"] = tables[t]
            arrays[f"indices{t}"] = job["indices"][t]
            arrays[f"lengths{t}"] = job["lengths"][t]
            if job["weights"] is not None and job["weights"][t] is not None:
                arrays[f"weights{t}"] = job["weights"][t]
        build_dir = self.build()
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ember_job_") as tmp:
            job_dir = Path(tmp)
            for name, value in arrays.items():
                np.save(job_dir / f"{name}.npy", value)
            (job_dir / "job.json").write_text(json.dumps(spec))
            failure = None
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    run_cocotb(build_dir, cfg.top_name, "sim.tb_job", config=cfg,
                               extra_env={"EMBER_JOB_DIR": str(job_dir)})
            except AssertionError as err:
                failure = str(err)
            result_path = job_dir / "result.json"
            result = json.loads(result_path.read_text()) if result_path.exists() else None
            if result is None:
                raise EmberSimulationError(f"the simulation wrote no result: {failure}", failure)
            if result["status"] == "hardware_error":
                raise EmberHardwareError(result["code"], result["id"], result["queue"],
                                         table=result.get("table") if job["tbe"] else None,
                                         bag=result.get("bag"), pos=result.get("pos"))
            if result["status"] == "timeout":
                raise EmberTimeout(result["message"])
            if result["status"] != "ok" or failure is not None:
                raise EmberSimulationError(
                    f"job failed: {result.get('message', failure)}", failure)
            out = np.load(job_dir / "out.npy", allow_pickle=False)
        perf, plan = result["perf"], result["plan"]
        W = cfg.bus_bytes
        cycles, busy = perf["cycles"], perf["busy3"]
        gathered, lists = plan["bytes_gathered"], plan["list_bytes"]
        self.last_stats = {
            "config": cfg.name, "tables": n, "bags": bags, "dims": dims,
            "rows": [t.shape[0] for t in tables], "indices": [len(i) for i in job["indices"]],
            "mode": job["mode"], "weighted": job["weights"] is not None,
            "output": "int8" if requant else "int32",
            "cycles": cycles, "engine_cycles": busy,
            "bytes_gathered": gathered, "list_bytes": lists,
            "bytes_per_cycle": gathered / cycles if cycles else 0.0,
            "bus_bytes_per_cycle": W,
            "bandwidth_utilization": (gathered + lists) / (cycles * W) if cycles else 0.0,
            "gather_utilization": gathered / (cycles * W) if cycles else 0.0,
            "engine_bandwidth_utilization": gathered / (busy * W) if busy else 0.0,
            "dram_latency": latency,
            "dma_rd_beats": perf["dma_rd_beats"], "dma_wr_beats": perf["dma_wr_beats"],
            "engines": {name: {"busy": perf[f"busy{q}"], "wait": perf[f"wait{q}"]}
                        for q, name in enumerate(ENGINES)},
            "plan": plan, "register_pushes": result["register_pushes"],
            "sim_seconds": round(time.monotonic() - t0, 3),
        }
        expected = np.int8 if requant else np.int32
        assert out.dtype == expected and out.shape == (bags, sum(dims)), (out.dtype, out.shape)
        return out

    def _run(self, spec, arrays, M, K, N, requant, prelude=()):
        """Run a job; ``prelude`` (commands pushed before the plan) is a test hook."""
        cfg = self.config
        lay = dram_layout(cfg, M, K, N, raw=not requant)
        spec = {**spec, "dram_size": lay.size, "seed": 1, "timeout": self.timeout,
                "driver": self.driver, "dram_latency": self.dram_latency,
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
