"""The one configuration object of Ember, and its named presets.

Every consumer (the hardware generators in ``hw/``, the cocotb testbenches and runner in ``sim/``,
the CLI, and later the firmware build) takes an :class:`EmberConfig`. Testbenches receive it as
JSON through the environment (:meth:`EmberConfig.to_json` / :meth:`EmberConfig.from_json`).

This module is deliberately free of Amaranth imports so that ``sim/`` can use it without touching
the hardware description.
"""

import dataclasses
import json
from dataclasses import dataclass

__all__ = ["EmberConfig", "PRESETS", "get_preset"]


def _check_int(name, value, *, minimum, maximum=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bound}, not {value!r}")


@dataclass(frozen=True)
class EmberConfig:
    """Parameters of one Ember instance.

    Parameters
    ----------
    name : str
        Preset name; it becomes part of the Verilog top-module name (``ember_<name>``), so it must
        be a lower-case identifier without ``__``.
    pe_rows : int
        Rows R of the PE array: output-tile height (rows of A per tile).
    pe_cols : int
        Columns C of the PE array: output-tile width (columns of B per tile).
    pe_lanes : int
        Lanes L of each PE's INT8 dot-product unit: reduction elements consumed per step.
    simulate : bool
        Whether the preset may be simulated. ``mtia`` is elaboration-only.

    Members
    -------
    macs_per_cycle : int
        Peak INT8 multiply-accumulates per cycle, R·C·L.
    top_name : str
        Verilog top-module name of this preset.
    """

    name: str
    pe_rows: int
    pe_cols: int
    pe_lanes: int
    simulate: bool = True

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier() \
                or self.name != self.name.lower() or "__" in self.name \
                or self.name.startswith("_") or self.name.endswith("_"):
            raise ValueError(f"name must be a lower-case identifier without '__', "
                             f"not {self.name!r}")
        _check_int("pe_rows", self.pe_rows, minimum=1, maximum=256)
        _check_int("pe_cols", self.pe_cols, minimum=1, maximum=256)
        _check_int("pe_lanes", self.pe_lanes, minimum=1, maximum=4096)
        if not isinstance(self.simulate, bool):
            raise TypeError(f"simulate must be a bool, not {self.simulate!r}")

    @property
    def macs_per_cycle(self):
        return self.pe_rows * self.pe_cols * self.pe_lanes

    @property
    def top_name(self):
        return f"ember_{self.name}"

    def replace(self, **changes):
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        fields = json.loads(text)
        if not isinstance(fields, dict):
            raise ValueError(f"configuration JSON must be an object, not {fields!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown configuration fields {unknown!r}")
        return cls(**fields)


PRESETS = {
    # CI-sized: 2×2 PEs of 4 lanes, 16 MACs/cycle. Small enough for fast Verilator builds.
    "tiny": EmberConfig(name="tiny", pe_rows=2, pe_cols=2, pe_lanes=4),
    # MTIA's 8×8 PE grid, 8 lanes per PE: 512 MACs/cycle.
    "default": EmberConfig(name="default", pe_rows=8, pe_cols=8, pe_lanes=8),
    # MTIA v1 scale: 8×8 PEs of 1024 INT8 lanes each, 65,536 MACs/cycle. Elaboration only.
    "mtia": EmberConfig(name="mtia", pe_rows=8, pe_cols=8, pe_lanes=1024, simulate=False),
}


def get_preset(name):
    """Look up a preset by name, with an error that lists the choices."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)!r}") from None
