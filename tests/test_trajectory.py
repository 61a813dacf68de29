import copy

import numpy as np
import pytest
import torch

from provlib.models import TrainConfig, UNetConfig, build_unet, make_scheduler
from provlib.trajectory import FEATURES, noise_seed, reference_features, seeded_noise, trajectory_features

TIMESTEPS = [0, 7, 120, 500, 999]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    unet = build_unet(UNetConfig(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4)).eval()
    with torch.no_grad():  # move away from the zero-initialised output layer so all gradients are alive
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet, make_scheduler(TrainConfig())


@pytest.fixture(scope="module")
def images():
    return torch.rand(9, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_kernel_matches_float64_per_sample_loop(model, images):
    unet, sched = model
    noise = seeded_noise(range(len(images)), TIMESTEPS, images.shape[1:], seed=5)
    got = trajectory_features(unet, sched, images, TIMESTEPS, noise=noise, batch_size=16)
    ref = reference_features(copy.deepcopy(unet).double(), sched, images.double(), TIMESTEPS, noise.double())
    for f in FEATURES:
        assert got[f].shape == (len(images), len(TIMESTEPS))
        # float32 kernel against a float64 reference: relative error of float32 rounding
        torch.testing.assert_close(got[f].double(), ref[f], rtol=1e-4, atol=1e-6)


def test_features_do_not_depend_on_batch_size(model, images):
    unet, sched = model
    runs = [trajectory_features(unet, sched, images, TIMESTEPS, seed=3, batch_size=b) for b in (1, 7, 64)]
    for f in FEATURES:
        for other in runs[1:]:
            # identical up to float32 rounding of differently blocked convolutions
            torch.testing.assert_close(other[f], runs[0][f], rtol=1e-5, atol=0)


def test_features_follow_image_ids_not_positions(model, images):
    unet, sched = model
    ids = np.arange(100, 100 + len(images))
    whole = trajectory_features(unet, sched, images, TIMESTEPS, ids=ids, features=("loss",))
    order = np.array([4, 0, 8])
    part = trajectory_features(unet, sched, images[order], TIMESTEPS, ids=ids[order], features=("loss",))
    torch.testing.assert_close(part["loss"], whole["loss"][order], rtol=1e-5, atol=0)


def test_noise_seeds_differ_across_ids_timesteps_and_runs():
    seeds = {noise_seed(s, i, t) for s in range(3) for i in range(20) for t in range(20)}
    assert len(seeds) == 3 * 20 * 20
    a = seeded_noise([1, 2], [5], (1, 4, 4), seed=0)
    b = seeded_noise([2], [5], (1, 4, 4), seed=0)
    assert torch.equal(a[1], b[0])


def test_feature_subsets_agree_with_all_three(model, images):
    unet, sched = model
    full = trajectory_features(unet, sched, images, TIMESTEPS, seed=2)
    lx = trajectory_features(unet, sched, images, TIMESTEPS, seed=2, features=("loss", "grad_x"))
    lo = trajectory_features(unet, sched, images, TIMESTEPS, seed=2, features=("loss",))
    torch.testing.assert_close(lx["grad_x"], full["grad_x"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(lo["loss"], full["loss"], rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_named(model, images):
    unet, sched = model
    with pytest.raises(ValueError, match="timesteps must lie"):
        trajectory_features(unet, sched, images, [1000])
    with pytest.raises(ValueError, match="unknown feature"):
        trajectory_features(unet, sched, images, [1], features=("loss", "hessian"))
    with pytest.raises(ValueError, match="noise must have shape"):
        trajectory_features(unet, sched, images, [1, 2], noise=torch.zeros(len(images), 1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        trajectory_features(unet, sched, images * 255, [1])
