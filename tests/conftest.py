"""Test-wide settings: caches and outputs go to a temporary folder, one thread per process."""
import os
import tempfile

import pytest

_TMP = tempfile.mkdtemp(prefix="provlib-tests-")
# set before any notebook kernel starts (nbval kernels inherit the environment)
os.environ.setdefault("PROVLIB_CACHE_DIR", os.path.join(_TMP, "cache"))
os.environ.setdefault("PROVLIB_OUTPUT_DIR", os.path.join(_TMP, "out"))
os.environ.setdefault("MPLBACKEND", "Agg")
# one thread everywhere, notebook kernels included: the same float rounding as the committed outputs
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    import torch
    torch.set_num_threads(1)
