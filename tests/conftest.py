import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest


def pytest_collection_modifyitems(items):
    """Constructor-validation tests build components whose __init__ raises (or that are never
    elaborated); Amaranth then warns that they were never used. That is the point of those tests,
    so the warning is silenced there, and only there."""
    for item in items:
        if "parameters" in item.name:
            item.add_marker(pytest.mark.filterwarnings(
                "ignore::amaranth.hdl._ir.UnusedElaboratable"))
