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


@pytest.fixture(scope="module")
def model():
    """A small random 8x8 UNet, away from its zero-initialised output layer (so all gradients are alive),
    and the DDPM scheduler."""
    import torch
    from provlib.models import TrainConfig, UNetConfig, build_unet, make_scheduler

    torch.manual_seed(0)
    unet = build_unet(UNetConfig(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4)).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet, make_scheduler(TrainConfig())
