import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest


@pytest.fixture(scope="session")
def tiny_fsc_run(tmp_path_factory):
    """One tiny synthetic FSC flywheel run, shared by the recipe and benchmark tests."""
    from recipes.fsc import run as fsc_run
    out = tmp_path_factory.mktemp("fsc") / "run"
    results, table = fsc_run.run(str(out), synthetic=True, scale="tiny")
    return out, results, table
