"""The host side of the GEMM firmware (``fw/gemm.c``): its job ABI, its status word, and a driver.

The firmware runs exactly the plan of :func:`sim.host.plan_gemm` on the control core. The host
only loads it once, writes a job into ``ARG0..ARG15`` and rings ``DOORBELL``; the firmware
answers in ``FW_STATUS`` (and raises ``IRQ_STATUS.FW``). The ABI is documented at the top of
``fw/gemm.c``; this module is its one Python mirror:

=====  =======================================================================================
ARG    meaning
=====  =======================================================================================
0      job kind: :data:`KIND_GEMM` (1)
1-3    M, K, N
4-7    DRAM byte addresses of packed A, packed B, the packed parameters, C
8      GEMM argument word 3: ``raw | zero_point << 8 | act_min << 16 | act_max << 24``
9      id of the first command (ids count up in push order, as ``plan_gemm(first_id=...)``)
10     flags: :data:`FLAG_PERF_CLEAR` (bit 0) clears the performance counters at job start
11     watchdog: cycles without a completion before ``TIMEOUT`` (0: 2^24)
12-15  reserved, 0
=====  =======================================================================================

``FW_STATUS = jobs << 8 | status`` (:func:`decode_status`, :data:`STATUS_NAMES`).

Nothing here imports cocotb: :class:`FirmwareDriver` works on any :class:`sim.host.RegisterBus`.
"""

from hw import regmap
from hw.cpu import firmware_cpu
from sim import host as H

__all__ = [
    "KIND_GEMM", "FLAG_PERF_CLEAR", "ARG_NAMES", "ST_OK", "ST_BAD_JOB", "ST_K_TOO_LARGE",
    "ST_HW_ERROR", "ST_BAD_ARGS", "ST_UNSUPPORTED", "ST_TIMEOUT", "ST_TRAP", "ST_READY", "ST_BUSY",
    "STATUS_NAMES", "FirmwareError", "out_word", "gemm_args", "decode_status", "firmware_path",
    "firmware_words", "FirmwareDriver",
]

KIND_GEMM = 1
FLAG_PERF_CLEAR = 1

ARG_NAMES = ("kind", "m", "k", "n", "a_addr", "b_addr", "p_addr", "c_addr", "out", "first_id",
             "flags", "watchdog")

ST_OK = 0x00
ST_BAD_JOB = 0x01
ST_K_TOO_LARGE = 0x02
ST_HW_ERROR = 0x03
ST_BAD_ARGS = 0x04
ST_UNSUPPORTED = 0x05
ST_TIMEOUT = 0x06
ST_TRAP = 0x07
ST_READY = 0x80
ST_BUSY = 0x81

STATUS_NAMES = {
    ST_OK: "ok", ST_BAD_JOB: "bad job kind", ST_K_TOO_LARGE: "K needs more than 65535 K chunks",
    ST_HW_ERROR: "hardware error", ST_BAD_ARGS: "bad arguments (M, K or N is 0)",
    ST_UNSUPPORTED: "configuration not supported by the plan",
    ST_TIMEOUT: "firmware watchdog: no completion", ST_TRAP: "firmware trapped",
    ST_READY: "ready", ST_BUSY: "busy",
}

_MASK32 = (1 << 32) - 1


class FirmwareError(RuntimeError):
    """The firmware finished a job with a status other than ``OK`` (and not a hardware error,
    which is raised as :class:`sim.host.EmberHardwareError`)."""

    def __init__(self, status, message=None):
        self.status = status
        super().__init__(message or f"firmware status {status:#04x} "
                                    f"({STATUS_NAMES.get(status, 'unknown')})")


def out_word(*, raw, zero_point=0, act_min=-128, act_max=127):
    """ARG8: the GEMM command's output-stage word (as :func:`sim.host.gemm_command` builds it)."""
    return (int(bool(raw)) | (zero_point & 0xFF) << 8 | (act_min & 0xFF) << 16
            | (act_max & 0xFF) << 24)


def gemm_args(M, K, N, *, a_addr, b_addr, p_addr, c_addr, raw, zero_point=0, act_min=-128,
              act_max=127, first_id=1, perf_clear=True, watchdog=0):
    """The 16 ARG words of a GEMM job; the firmware then pushes the commands of
    ``plan_gemm(config, M, K, N, a_addr=..., ..., first_id=first_id)``."""
    words = [KIND_GEMM, M, K, N, a_addr, b_addr, p_addr, c_addr,
             out_word(raw=raw, zero_point=zero_point, act_min=act_min, act_max=act_max),
             first_id & 0xFFFF, FLAG_PERF_CLEAR if perf_clear else 0, watchdog]
    words += [0] * (16 - len(words))
    return [int(w) & _MASK32 for w in words]


def decode_status(word):
    """``(jobs, status)`` of a ``FW_STATUS`` value."""
    return word >> 8, word & 0xFF


def firmware_path(variant=None):
    """Build (or reuse) ``fw/gemm.c`` for the control core; return the flat binary's path. The
    output directory is the one of :func:`sim.firmware.build_programs`, so the builds are
    shared."""
    from hw.cpu import DEFAULT_VARIANT
    from sim.firmware import BUILD, PROGRAMS, build_firmware
    cpu = firmware_cpu(variant or DEFAULT_VARIANT)
    return build_firmware("gemm", PROGRAMS["gemm"], cpu=cpu,
                          out_dir=BUILD / "fw" / cpu.replace("+", "_"))


def firmware_words(variant=None):
    """The IMEM image of the GEMM firmware, as 32-bit words."""
    from sim.firmware import load_words
    return load_words(firmware_path(variant))


def _off(name):
    return regmap.BY_NAME[name].offset


class FirmwareDriver:
    """Loads the GEMM firmware and runs jobs through it, over a :class:`sim.host.RegisterBus`.

    Parameters
    ----------
    bus : RegisterBus
    timeout : int
        Cycle budget of each wait (boot, job).

    Members
    -------
    jobs : int
        Jobs the firmware has finished since it booted (as it reports them).
    last_status : int or None
        Status of the last job.
    """

    def __init__(self, bus, *, timeout=1_000_000, log=None):
        self.bus = bus
        self.timeout = timeout
        self.log = log
        self.jobs = 0
        self.last_status = None

    async def read(self, name):
        return await self.bus.read(_off(name))

    async def write(self, name, value):
        self.bus.post(_off(name), value & _MASK32)
        await self.bus.flush()

    async def load(self, words):
        """Hold the core in reset (``CTRL.CPU_RESET``), write ``words`` into IMEM through the
        window, and leave the core in reset."""
        await self.write("CTRL", 1)
        for i, w in enumerate(words):
            self.bus.post(regmap.IMEM_WINDOW + 4 * i, w)
        await self.bus.flush()

    async def boot(self, timeout=20_000):
        """Release the core and wait until the firmware reports ``READY``; returns the cycles."""
        start = self.bus.cycle()
        await self.write("CTRL", 0)
        while True:
            value = await self.read("FW_STATUS")
            if value == ST_READY:
                self.jobs = 0
                return self.bus.cycle() - start
            if self.bus.cycle() - start > timeout:
                raise H.EmberTimeout(f"firmware did not report READY within {timeout} cycles "
                                     f"(FW_STATUS {value:#x})")

    async def start(self, args):
        """Write the job's ARG words and ring DOORBELL; returns the cycle of the doorbell."""
        assert len(args) == 16
        for i, w in enumerate(args):
            self.bus.post(_off(f"ARG{i}"), w)
        self.bus.post(_off("DOORBELL"), 1)
        await self.bus.flush()
        return self.bus.cycle()

    async def wait(self, timeout=None):
        """Wait until the firmware reports the job finished; return its status (no checks).

        ``timeout`` (default ``self.timeout``) bounds the cycles without progress: the budget
        starts again whenever a queue's ``Q_COMPLETED`` has moved (read every 16 polls), as
        :meth:`sim.host.HostDriver.wait_idle` measures it."""
        timeout = self.timeout if timeout is None else timeout
        deadline = self.bus.cycle() + timeout
        progress, polls = None, 0
        while True:
            jobs, status = decode_status(await self.read("FW_STATUS"))
            if jobs == (self.jobs + 1) & 0xFFFFFF and status not in (ST_BUSY, ST_READY):
                self.jobs = jobs
                self.last_status = status
                return status
            polls += 1
            if polls % 16 == 0:
                now = [await self.read(f"Q_COMPLETED{q}") for q in range(regmap.N_QUEUES)]
                if now != progress:
                    progress = now
                    deadline = self.bus.cycle() + timeout
            if self.bus.cycle() > deadline:
                raise H.EmberTimeout(f"the firmware did not finish the job: no progress for "
                                     f"{timeout} cycles (FW_STATUS jobs {jobs}, status "
                                     f"{status:#x})")

    async def run(self, args, timeout=None):
        """Run one job and raise unless it finished ``OK``: :class:`sim.host.EmberHardwareError`
        for ``HW_ERROR`` (with ``ERR_*``), :class:`FirmwareError` for anything else."""
        await self.start(args)
        status = await self.wait(timeout)
        if status == ST_HW_ERROR:
            err = [await self.read(n) for n in ("ERR_CODE", "ERR_ID", "ERR_QUEUE")]
            raise H.EmberHardwareError(*err)
        if status != ST_OK:
            raise FirmwareError(status)
        return status
