import os
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def seed():
    """A random test's seed: ``EMBER_SEED`` if set (to replay a run), else a fresh one. It is
    printed, so a failing run shows how to replay it."""
    value = int(os.environ["EMBER_SEED"]) if "EMBER_SEED" in os.environ else \
        random.randrange(1 << 32)
    print(f"seed {value} (replay with EMBER_SEED={value})")
    return value
