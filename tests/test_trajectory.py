import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from provlib.kernels.trajectory import FEATURES, reference_features, seeded_noise, trajectory_features
from provlib.seeds import noise_seed

TIMESTEPS = [0, 7, 120, 500, 999]


@pytest.fixture(scope="module")
def images():
    return torch.rand(9, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_kernel_matches_float64_per_sample_loop(model, images):
    unet, sched = model
    noise = seeded_noise(range(len(images)), TIMESTEPS, images.shape[1:], seed=5)
    got = trajectory_features(unet, sched, images, TIMESTEPS, noise=noise, batch_size=16)
    double = copy.deepcopy(unet).double().requires_grad_(False)
    ref = reference_features(double, sched, images.double(), TIMESTEPS, noise.double())
    assert not any(p.requires_grad for p in double.parameters())  # the loop leaves the model as it came
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


@pytest.mark.parametrize("requires_grad", [False, True])
def test_hook_and_func_kernels_agree(model, images, requires_grad):
    unet, sched = model
    unet.requires_grad_(requires_grad)
    try:
        h = trajectory_features(unet, sched, images, TIMESTEPS, seed=1, method="hooks")
        f = trajectory_features(unet, sched, images, TIMESTEPS, seed=1, method="func")
    finally:
        unet.requires_grad_(False)
    for k in FEATURES:
        torch.testing.assert_close(h[k], f[k], rtol=1e-4, atol=1e-6)


def test_unsupported_layers_are_refused_by_the_hook_kernel():
    from provlib.kernels.persample import PerSampleGradNorms
    with pytest.raises(NotImplementedError, match="BatchNorm"):
        PerSampleGradNorms(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)))


CONV_CASES = [
    (3, 5, 8, 3, 1, "grouped", False),
    (64, 64, 4, 3, 1, "ghost", False),
    (6, 1, 8, 3, 1, "shifted", False),    # very few output channels
    (40, 8, 8, 3, 1, "shifted", False),   # wider than GROUPED_MAX_CHANNELS
    (40, 6, 15, 5, 1, "shifted", False),  # 5x5 kernel, odd map size
    (40, 6, 7, 5, 1, "ghost", False),
    (1, 1, 2, 3, 1, "shifted", False),    # maps smaller than the kernel
    (40, 2, 2, 3, 1, "ghost", False),
    (5, 2, 1, 3, 1, "ghost", False),
    (1, 1, 1, 3, 1, "shifted", False),
    (4, 6, 8, 1, 1, "1x1", False),
    (4, 6, 9, 3, 2, "grouped", False),   # strided
    (40, 8, 8, 3, 1, "upsampled", True),  # input a nearest 2x upsampling
    (3, 5, 6, 5, 1, "upsampled", True),
    (6, 1, 2, 3, 1, "upsampled", True),
    (64, 64, 4, 3, 1, "ghost", True),    # upsampled, but the ghost norm is cheaper still
    (40, 8, 8, 1, 1, "1x1", True),
    (40, 8, 8, 3, 2, "grouped", True),   # strided: not the upsampled route
    (40, 8, 8, 3, 1, "shifted", "all but sample 0")]


def _conv_input(c_in, size, upsampled, n):
    x = torch.randn(n, c_in, size, size, dtype=torch.double)
    if upsampled:
        coarse = F.interpolate(torch.randn(n, c_in, size // 2, size // 2, dtype=torch.double), scale_factor=2)
        x = torch.cat([x[:1], coarse[1:]]) if upsampled == "all but sample 0" else coarse
    return x.requires_grad_(True)


@pytest.mark.parametrize("c_in, c_out, size, kernel, stride, route, upsampled", CONV_CASES)
def test_per_sample_conv_norms_match_autograd(c_in, c_out, size, kernel, stride, route, upsampled):
    """Every route of the conv rule against per-sample autograd in float64."""
    from provlib.kernels.persample import PerSampleGradNorms, conv_route
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2).double()
    x = _conv_input(c_in, size, upsampled, 3)
    assert conv_route(conv, x, conv(x)) == route
    with PerSampleGradNorms(conv) as norms:
        loss = conv(x).pow(2).flatten(1).sum(1)
        torch.autograd.grad(loss.sum(), [x, *norms.leaves])
    for i in range(3):
        grads = torch.autograd.grad(conv(x[i:i + 1]).pow(2).sum(), list(conv.parameters()))
        expected = sum(g.pow(2).sum() for g in grads)
        torch.testing.assert_close(norms.total[i], expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("c_in, c_out, size, kernel, stride, route, upsampled", CONV_CASES)
def test_per_sample_conv_norms_of_samples_of_several_rows_match_autograd(c_in, c_out, size, kernel, stride, route,
                                                                          upsampled):
    """With 3 rows per sample (GSA_1: an image's timestep rows), a sample's norm is that of the gradient of its
    rows' summed loss, by every route but the ghost norm (which the route choice then avoids)."""
    from provlib.kernels.persample import PerSampleGradNorms, conv_route
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2).double()
    x = _conv_input(c_in, size, upsampled, 6)
    if route != "ghost":
        assert conv_route(conv, x, conv(x), 3) == route
    assert conv_route(conv, x, conv(x), 3) != "ghost"
    with PerSampleGradNorms(conv, rows_per_sample=3) as norms:
        loss = conv(x).pow(2).flatten(1).sum(1)
        torch.autograd.grad(loss.sum(), [x, *norms.leaves])
    assert norms.total.shape == (2,)
    for i in range(2):
        grads = torch.autograd.grad(conv(x[3 * i:3 * i + 3]).pow(2).sum(), list(conv.parameters()))
        torch.testing.assert_close(norms.total[i], sum(g.pow(2).sum() for g in grads), rtol=1e-10, atol=0)


def _per_module_sq(model, grads):
    """{module name: sum of squared gradients of its own parameters}, from named parameter gradients."""
    out = {}
    for (name, _), g in zip(model.named_parameters(), grads):
        key = name.rsplit(".", 1)[0]
        out[key] = out.get(key, 0.0) + float(g.pow(2).sum())
    return out


def test_per_layer_norms_sum_to_the_total_and_match_a_float64_loop(model, images):
    from provlib.kernels.persample import layer_names
    from provlib.kernels.trajectory import LAYERS

    unet, sched = model
    ts = [7, 500]
    noise = seeded_noise(range(4), ts, images.shape[1:], seed=3)
    got = trajectory_features(unet, sched, images[:4], ts, noise=noise, features=["grad_theta", LAYERS],
                              batch_size=3)
    names = layer_names(unet)
    assert got[LAYERS].shape == (4, 2, len(names))
    torch.testing.assert_close(got[LAYERS].sum(-1), got["grad_theta"], rtol=1e-5, atol=0)
    double = copy.deepcopy(unet).double().requires_grad_(True)
    params = list(double.parameters())
    acp = sched.alphas_cumprod.double()
    for i in range(4):
        for j, t in enumerate(ts):
            x0, eps = images[i:i + 1].double(), noise[i, j][None].double()
            xt = acp[t].sqrt() * x0 + (1 - acp[t]).sqrt() * eps
            loss = (double(xt, torch.tensor([t])).sample - eps).pow(2).sum()
            ref = _per_module_sq(double, torch.autograd.grad(loss, params))
            torch.testing.assert_close(got[LAYERS][i, j].double(), torch.tensor([ref[n] for n in names],
                                       dtype=torch.float64), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("method, batch_size", [("hooks", 8), ("hooks", 4), ("hooks", 96), ("autograd", 96)])
def test_image_gradient_of_the_mean_loss_matches_a_float64_loop(model, images, method, batch_size):
    """GSA_1's feature, by either method (hooks: 2 images, 1 image, all 3 per backward) against float64."""
    from provlib.kernels.persample import layer_names
    from provlib.kernels.trajectory import image_layer_grad_norms

    unet, sched = model
    ts = [0, 120, 500, 999]
    got = image_layer_grad_norms(unet, sched, images[:3], ts, seed=4, ids=[10, 11, 12], method=method,
                                 batch_size=batch_size)
    names = layer_names(unet)
    double = copy.deepcopy(unet).double().requires_grad_(True)
    params = list(double.parameters())
    acp = sched.alphas_cumprod.double()
    noise = seeded_noise([10, 11, 12], ts, images.shape[1:], seed=4).double()
    for i in range(3):
        losses = []
        for j, t in enumerate(ts):
            x0, eps = images[i:i + 1].double(), noise[i, j][None]
            xt = acp[t].sqrt() * x0 + (1 - acp[t]).sqrt() * eps
            losses.append((double(xt, torch.tensor([t])).sample - eps).pow(2).sum())
        ref = _per_module_sq(double, torch.autograd.grad(torch.stack(losses).mean(), params))
        torch.testing.assert_close(got[i].double(), torch.tensor([ref[n] for n in names], dtype=torch.float64),
                                   rtol=1e-4, atol=1e-9)
