"""The Ember top level for a configuration.

So far Ember's top level is the PE array alone; the SRAM banks, DMA, command processor, control
core, embedding-bag engine and host port join it as they are built (see README, Architecture).
"""

from .config import EmberConfig
from .pe_array import PEArray

__all__ = ["build_top"]


def build_top(config):
    """Build a fresh top-level component for ``config`` (one per conversion or simulation)."""
    if not isinstance(config, EmberConfig):
        raise TypeError(f"config must be an EmberConfig, not {config!r}")
    return PEArray(rows=config.pe_rows, cols=config.pe_cols, lanes=config.pe_lanes)
