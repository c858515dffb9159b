"""The runtime (``sim.device.Device``) and ``python -m sim gemm``."""

import json
import subprocess
import sys

import numpy as np
import pytest

from hw.config import get_preset
from sim import host as H
from sim.device import Device, EmberHardwareError
from sim.golden import ref_matmul
from sim.golden_requant import ref_bias_add, ref_requant
from sim.runner import ROOT

I8 = np.int8


def _ab(m=3, k=5, n=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(-128, 128, (m, k), dtype=I8), rng.integers(-128, 128, (k, n), dtype=I8))


def _vec(n, value=0):
    return np.full(n, value, np.int32)


A, B = _ab()
N = B.shape[1]


@pytest.mark.parametrize("args, kwargs, exc, match", [
    ((A.tolist(), B), {}, TypeError, "a must be a numpy array"),
    ((A.astype(np.int16), B), {}, TypeError, "a must have dtype int8, not int16"),
    ((A, B.astype(np.uint8)), {}, TypeError, "b must have dtype int8, not uint8"),
    ((A[0], B), {}, ValueError, r"a must be 2-D"),
    ((A, B[None]), {}, ValueError, r"b must be 2-D"),
    ((A[:, :0], B[:0]), {}, ValueError, "a must not be empty"),
    ((A, B[:4]), {}, ValueError, "a has 5 columns but b has 4 rows"),
    ((A, B), {"bias": [1, 2, 3, 4]}, TypeError, "bias must be a numpy array of int32"),
    ((A, B), {"bias": np.zeros(N, np.int64)}, TypeError, "bias must have dtype int32, not int64"),
    ((A, B), {"bias": _vec(N + 1)}, ValueError, rf"bias must have shape \({N},\)"),
    ((A, B), {"multiplier": _vec(N, 1 << 30)}, ValueError,
     "multiplier is given but shift is not"),
    ((A, B), {"shift": _vec(N)}, ValueError, "shift is given but multiplier is not"),
    ((A, B), {"multiplier": _vec(N), "shift": _vec(N).astype(np.int8)}, TypeError,
     "shift must have dtype int32"),
    ((A, B), {"multiplier": _vec(N), "shift": _vec(N, 32)}, ValueError,
     r"shift must be in \[-31, 31\], not 32"),
    ((A, B), {"multiplier": _vec(N), "shift": _vec(N, -32)}, ValueError,
     r"shift must be in \[-31, 31\], not -32"),
    ((A, B), {"multiplier": _vec(N), "shift": _vec(N), "zero_point": 128}, ValueError,
     r"zero_point must be in \[-128, 127\], not 128"),
    ((A, B), {"multiplier": _vec(N), "shift": _vec(N), "act_min": -129}, ValueError,
     r"act_min must be in \[-128, 127\]"),
    ((A, B), {"multiplier": _vec(N), "shift": _vec(N), "act_max": 1.5}, TypeError,
     "act_max must be an integer"),
    ((A, B), {"multiplier": _vec(N), "shift": _vec(N), "zero_point": True}, TypeError,
     "zero_point must be an integer"),
    ((A, B), {"multiplier": _vec(N), "shift": _vec(N), "act_min": 5, "act_max": 4}, ValueError,
     "act_min must not exceed act_max"),
    ((A, B), {"zero_point": 3}, ValueError, "apply to requantised"),
])
def test_gemm_argument_errors(args, kwargs, exc, match):
    dev = Device("tiny")
    with pytest.raises(exc, match=match):
        dev.gemm(*args, **kwargs)
    assert dev.last_stats is None


def test_device_arguments():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        Device("huge")
    with pytest.raises(ValueError, match="elaboration-only"):
        Device("mtia")
    with pytest.raises(TypeError, match="config must be an EmberConfig or a preset name"):
        Device(3)
    assert Device(get_preset("default")).config.name == "default"
    with pytest.raises(ValueError, match="driver must be one of"):
        Device("tiny", driver="fw")
    # The largest K that fits passes the check.
    Device("tiny").check_gemm_args(np.zeros((1, 1024), I8), np.zeros((1024, 1), I8))


@pytest.mark.rtl
@pytest.mark.parametrize("driver", ["host", "firmware"])
def test_device_gemm(driver):
    """Real runs on tiny with each driver (host commands, or the GEMM firmware on the control
    core): INT32 with bias, INT8 requantised; then a hardware error surfaces as
    EmberHardwareError with its code and command id, and the device still works after it."""
    dev = Device("tiny", driver=driver)
    assert repr(dev) == ("Device('tiny')" if driver == "host"
                         else f"Device('tiny', driver={driver!r})")
    rng = np.random.default_rng(7)
    a, b = _ab(9, 13, 7, seed=3)
    bias = rng.integers(-2**31, 2**31, 7, dtype=np.int64).astype(np.int32)
    c = dev.gemm(a, b, bias=bias)
    assert c.dtype == np.int32 and c.shape == (9, 7)
    np.testing.assert_array_equal(c, ref_bias_add(ref_matmul(a, b), bias))
    s = dev.last_stats
    assert s["macs"] == 9 * 13 * 7 and s["peak_macs_per_cycle"] == 16
    assert s["array_steps"] == 5 * 4 * 4
    assert 0 < s["utilization"] == s["macs"] / (s["cycles"] * 16) < 1
    assert all(s["engines"][e]["busy"] > 0 for e in ("load", "store", "gemm"))
    assert s["driver"] == driver
    if driver == "firmware":
        assert s["doorbell_cycles"] > s["first_push_cycles"] > 0
    else:
        assert "doorbell_cycles" not in s

    mult = rng.integers(2**30, 2**31, 7, dtype=np.int64).astype(np.int32)
    shift = rng.integers(-12, 2, 7).astype(np.int32)
    q = dev.gemm(a, b, bias=bias // 4096, multiplier=mult, shift=shift, zero_point=-5,
                 act_min=-5, act_max=100)
    assert q.dtype == np.int8
    np.testing.assert_array_equal(
        q, ref_requant(ref_matmul(a, b), bias // 4096, mult, shift, -5, -5, 100))

    bad = H.dma_command("load", 0x77, dram_addr=0, sram_addr=get_preset("tiny").sram_bytes - 2,
                        rows=1, row_bytes=4)
    stats = dev.last_stats
    with pytest.raises(EmberHardwareError, match="0x13.*id 119") as info:
        dev._run({"kind": "gemm", "zero_point": 0, "act_min": -128, "act_max": 127},
                 {"a": a, "b": b}, 9, 13, 7, False, prelude=[bad])
    assert (info.value.code, info.value.cmd_id, info.value.queue) == (0x13, 0x77, 0)
    assert dev.last_stats is stats
    np.testing.assert_array_equal(dev.gemm(a, b), ref_matmul(a, b))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "sim", "gemm", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.rtl
def test_cli_gemm():
    r = _cli("--m", "100", "--k", "70", "--n", "50", "--seed", "1", "--config", "tiny")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["ok"] is True and report["mismatches"] == 0
    assert report["macs"] == 100 * 70 * 50 and report["peak_macs_per_cycle"] == 16
    assert report["array_steps"] == 50 * 25 * 18
    assert report["cycles"] >= report["array_steps"]
    assert report["utilization"] == pytest.approx(
        report["macs"] / (report["cycles"] * report["peak_macs_per_cycle"]), abs=1e-4)
    print(r.stdout.strip().splitlines()[-1])


@pytest.mark.rtl
def test_cli_files_and_requant(tmp_path):
    rng = np.random.default_rng(5)
    a, b = _ab(7, 9, 5, seed=11)
    files = {"a": a, "b": b, "bias": rng.integers(-5000, 5000, 5).astype(np.int32),
             "multiplier": np.full(5, 1 << 30, np.int32), "shift": np.full(5, -4, np.int32)}
    for name, value in files.items():
        np.save(tmp_path / f"{name}.npy", value)
    out = tmp_path / "c.npy"
    r = _cli(*(x for name in files for x in (f"--{name}", str(tmp_path / f"{name}.npy"))),
             "--zero-point", "3", "--act-min", "0", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["ok"] is True
    expected = ref_requant(ref_matmul(a, b), files["bias"], files["multiplier"],
                           files["shift"], 3, 0, 127)
    np.testing.assert_array_equal(np.load(out), expected)


@pytest.mark.parametrize("args, match", [
    (["--m", "4", "--k", "4"], "give --a and --b, or all of --m, --k and --n"),
    (["--m", "0", "--k", "4", "--n", "4"], "--m must be at least 1"),
    (["--m", "2", "--k", "2", "--n", "2", "--zero-point", "7"], "apply to requantised"),
    (["--a", "/nonexistent.npy", "--b", "/nonexistent.npy"], "--a /nonexistent.npy"),
    (["--m", "x"], "invalid int value"),
    (["--m", "2", "--k", "2", "--n", "2", "--config", "nope"], "unknown preset 'nope'"),
])
def test_cli_errors(args, match):
    """Bad arguments exit non-zero with a one-line message, before any simulation."""
    r = _cli(*args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in r.stderr, r.stderr


def _fake_gemm(result_fn):
    """A Device.gemm stand-in that returns result_fn(golden) and fills last_stats."""
    def gemm(self, a, b, **kwargs):
        c = ref_bias_add(ref_matmul(a, b), kwargs.get("bias", np.zeros(b.shape[1], np.int32)))
        self.last_stats = {"m": a.shape[0], "k": a.shape[1], "n": b.shape[1], "output": "int32",
                           "cycles": 100, "macs": a.size * b.shape[1], "peak_macs_per_cycle": 16,
                           "utilization": 0.5, "array_steps": 10, "array_utilization": 0.1,
                           "engines": {}, "plan": {"jobs": 1, "commands": [1, 1, 1]},
                           "sim_seconds": 0.0}
        return result_fn(c)
    return gemm


def test_cli_reports_golden_mismatch(monkeypatch, capsys):
    """A wrong result exits non-zero with one line naming the first mismatch (no simulation:
    Device.gemm is replaced by one that returns a corrupted result)."""
    from sim import __main__ as cli
    from sim.device import Device

    def corrupt(c):
        c = c.copy()
        c[1, 2] += 1
        return c
    monkeypatch.setattr(Device, "gemm", _fake_gemm(corrupt))
    with pytest.raises(SystemExit) as info:
        cli.main(["gemm", "--m", "3", "--k", "4", "--n", "5"])
    assert "differs from the golden model at 1 of 15 elements, first at [1, 2]" in \
        str(info.value.code)
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ok"] is False and report["mismatches"] == 1
    monkeypatch.setattr(Device, "gemm", _fake_gemm(lambda c: c))
    cli.main(["gemm", "--m", "3", "--k", "4", "--n", "5"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"] is True


def test_cli_reports_hardware_error(monkeypatch):
    from sim import __main__ as cli
    from sim.device import Device

    def fail(self, a, b, **kwargs):
        raise EmberHardwareError(0x13, 42, 0)
    monkeypatch.setattr(Device, "gemm", fail)
    with pytest.raises(SystemExit) as info:
        cli.main(["gemm", "--m", "3", "--k", "4", "--n", "5"])
    message = str(info.value.code)
    assert message.startswith("error: hardware error 0x13") and "id 42" in message
    assert "\n" not in message


@pytest.mark.rtl
def test_cli_firmware_driver():
    """``python -m sim gemm --driver firmware``: the golden result, ``"driver"`` in the JSON
    line, the same array steps and plan as ``--driver host``; a bad --driver is a one-line
    usage error."""
    args = ("--m", "21", "--k", "30", "--n", "11", "--seed", "3", "--config", "tiny")
    reports = {}
    for driver in ("host", "firmware"):
        r = _cli(*args, "--driver", driver)
        assert r.returncode == 0, r.stdout + r.stderr
        reports[driver] = json.loads(r.stdout.strip().splitlines()[-1])
        assert f"{driver} driver" in r.stdout.splitlines()[0]
    h, f = reports["host"], reports["firmware"]
    assert h["ok"] and f["ok"] and h["driver"] == "host" and f["driver"] == "firmware"
    assert f["array_steps"] == h["array_steps"] and f["commands"] == h["commands"]
    assert f["doorbell_cycles"] >= f["cycles"] > 0 and "doorbell_cycles" not in h
    r = _cli(*args, "--driver", "both")
    assert r.returncode == 2 and "invalid choice: 'both'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
