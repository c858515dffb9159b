"""cocotb test that runs one job of :class:`sim.device.Device` on the Verilator model of the top.

``EMBER_JOB_DIR`` holds ``job.json`` (the spec: kind, output-stage scalars, DRAM size, seed,
``driver``, optional ``prelude`` commands) and the operands as ``.npy`` files (``a``, ``b`` and,
when given, ``bias``, ``multiplier``, ``shift``). With ``driver`` ``"host"`` (the default) the
job runs through the top-level testbench's host path (:func:`sim.tb_top.gemm_job`: packed
operands in DRAM, the command plan pushed through the host registers); with ``"firmware"`` the
testbench loads ``fw/gemm.c`` into the control core and only writes the job's ARGs and rings
DOORBELL (:func:`sim.tb_top.fw_gemm_job`, which also checks that the firmware pushed exactly the
plan's commands). Either way the whole DRAM outside C is checked afterwards. It writes:

- ``c.npy``: the result read back from DRAM;
- ``result.json``: ``status`` (``ok``, ``hardware_error``, ``timeout`` or ``error``), and for
  ``ok`` the counters and plan summary; for ``hardware_error`` the code, command id and queue.

``result.json`` is written whatever happens. A hardware-reported error is a result, not a test
failure; a timeout or any other exception also fails the cocotb test.
"""

import json
import os
import time
import traceback
from pathlib import Path

import cocotb
import numpy as np

from sim import fwjob
from sim import host as H
from sim.tb_top import TB, boot_gemm_firmware, fw_gemm_job, gemm_job


class _JobFailed(Exception):
    def __init__(self, result):
        self.result = result
        super().__init__(result.get("message", ""))


async def _embedding_bag(dut, job_dir, spec):
    """An embedding-bag job (``Device.embedding_bag``): ``table{t}``, ``indices{t}``,
    ``lengths{t}`` and optionally ``weights{t}`` per table; writes ``out.npy``. Returns the
    result dict."""
    from sim.tb_top_embag import embag_job, new_tb
    n = spec["tables"]
    tables = [_load(job_dir, f"table{t}") for t in range(n)]
    indices = [_load(job_dir, f"indices{t}") for t in range(n)]
    lengths = [_load(job_dir, f"lengths{t}") for t in range(n)]
    weights = [_load(job_dir, f"weights{t}") for t in range(n)]
    if all(w is None for w in weights):
        weights = None
    tb = await new_tb(dut, latency=spec.get("dram_latency", 0), dram_size=spec["dram_size"],
                      seed=spec.get("seed", 0), host_irq=True)
    try:
        out = await embag_job(tb, tables, indices, lengths, weights=weights, mode=spec["mode"],
                              requant=spec.get("requant"), golden=False,
                              timeout=spec.get("timeout", 1_000_000))
    except H.EmberHardwareError as e:
        return {"status": "hardware_error", "code": e.code, "id": e.cmd_id, "queue": e.queue,
                "table": e.table, "bag": e.bag, "pos": e.pos, "message": str(e)}
    except H.EmberTimeout as e:
        raise _JobFailed({"status": "timeout", "message": str(e)}) from e
    np.save(job_dir / "out.npy", out["out"])
    plan = out["plan"]
    return {"status": "ok", "perf": out["perf"], "host_cycles": out["host_cycles"],
            "plan": {"segments": len(plan.segments),
                     "commands": [plan.count(q) for q in range(4)],
                     "bytes_gathered": plan.bytes_gathered, "list_bytes": plan.list_bytes,
                     "store_bytes": plan.store_bytes},
            "register_pushes": tb.driver.pushes}


def _load(job_dir, name):
    path = job_dir / f"{name}.npy"
    return np.load(path, allow_pickle=False) if path.exists() else None


@cocotb.test()
async def job(dut):
    """Run the job in ``EMBER_JOB_DIR``."""
    job_dir = Path(os.environ["EMBER_JOB_DIR"])
    result = {"status": "error", "message": "the job did not start"}
    t0 = time.monotonic()
    try:
        spec = json.loads((job_dir / "job.json").read_text())
        if spec.get("kind") == "embedding_bag":
            result = await _embedding_bag(dut, job_dir, spec)
            return
        if spec.get("kind") != "gemm":
            raise ValueError(f"unknown job kind {spec.get('kind')!r}")
        a, b = _load(job_dir, "a"), _load(job_dir, "b")
        driver = spec.get("driver", "host")
        if driver not in ("host", "firmware"):
            raise ValueError(f"unknown driver {driver!r}")
        # The host driver sleeps on the interrupt line instead of polling the registers.
        tb = TB(dut, dram_size=spec["dram_size"], seed=spec.get("seed", 0),
                dram_latency=spec.get("dram_latency"), host_irq=driver == "host")
        await tb.reset()
        tb.fill_dram_random()
        prelude = [H.Command(c["queue"], tuple(c["words"]), "prelude")
                   for c in spec.get("prelude", [])]
        kwargs = dict(bias=_load(job_dir, "bias"), multiplier=_load(job_dir, "multiplier"),
                      shift=_load(job_dir, "shift"), zero_point=spec["zero_point"],
                      act_min=spec["act_min"], act_max=spec["act_max"], golden=False,
                      prelude=prelude, timeout=spec.get("timeout", 1_000_000))
        try:
            if driver == "host":
                out = await gemm_job(tb, a, b, **kwargs)
            else:
                await boot_gemm_firmware(tb)
                out = await fw_gemm_job(tb, a, b, watchdog=kwargs["timeout"], expect=None,
                                        **kwargs)
                if out["status"] == fwjob.ST_HW_ERROR:
                    err = await tb.errors()
                    raise H.EmberHardwareError(err["code"], err["id"], err["queue"])
                if out["status"] == fwjob.ST_TIMEOUT:
                    raise H.EmberTimeout(f"firmware watchdog: no completion for "
                                         f"{kwargs['timeout']} cycles")
                if out["status"] != fwjob.ST_OK:
                    raise fwjob.FirmwareError(out["status"])
        except H.EmberHardwareError as e:
            result = {"status": "hardware_error", "code": e.code, "id": e.cmd_id,
                      "queue": e.queue, "message": str(e)}
            return
        except H.EmberTimeout as e:
            result = {"status": "timeout", "message": str(e)}
            raise
        np.save(job_dir / "c.npy", out["c"])
        plan = out["plan"]
        result = {
            "status": "ok",
            "driver": driver,
            "perf": out["perf"],
            "host_cycles": out["host_cycles"],
            "plan": {"m_tiles": plan.m_tiles, "n_tiles": plan.n_tiles, "steps": plan.steps,
                     "mb": plan.mb, "nb": plan.nb, "jobs": len(plan.jobs),
                     "inner": plan.inner, "array_steps": plan.array_steps,
                     "commands": [plan.count(q) for q in range(3)],
                     "dram_read_bytes": plan.dram_read_bytes,
                     "dram_write_bytes": plan.dram_write_bytes},
            "register_pushes": tb.driver.pushes,
        }
        if driver == "firmware":
            result["doorbell_cycles"] = out["fw_cycles"]
            result["first_push_cycles"] = out["first_push"]
            result["firmware_pushes"] = len(out["commands"])
    except BaseException as e:
        if isinstance(e, _JobFailed):
            result = e.result
        if result.get("status") not in ("timeout",):
            result = {"status": "error", "message": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc()}
        raise
    finally:
        result["wall_seconds"] = round(time.monotonic() - t0, 3)
        (job_dir / "result.json").write_text(json.dumps(result, indent=1))
