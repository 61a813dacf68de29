"""provlib.kernels.ddim: deterministic DDIM steps and the t-error, against diffusers, a float64
loop and models whose noise prediction is known in closed form."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from provlib.kernels.ddim import (ddim_invert, ddim_path, ddim_step, inversion_steps, t_error_calls,
                                  t_error_reference, t_errors)
from provlib.models import TrainConfig, UNetConfig, build_unet, make_scheduler


class LinearEps(torch.nn.Module):
    """A stand-in UNet whose noise prediction is eps_theta(x, t) = c * x, so DDIM steps have a closed form."""

    def __init__(self, c: float, size: int = 4):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(float(c)), requires_grad=False)
        self.config = SimpleNamespace(in_channels=1, sample_size=size)

    def forward(self, x, t):
        return SimpleNamespace(sample=self.c * x)


def _multiplier(abar, c, a, b):
    """x_b = m * x_a for one DDIM step a -> b under eps = c x."""
    return np.sqrt(abar[b]) * (1 - c * np.sqrt(1 - abar[a])) / np.sqrt(abar[a]) + c * np.sqrt(1 - abar[b])


@pytest.fixture(scope="module")
def sched():
    return make_scheduler(TrainConfig())


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    net = build_unet(UNetConfig(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.requires_grad_(False)


@pytest.fixture(scope="module")
def images():
    return torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1


def test_a_step_down_equals_diffusers_ddim_scheduler(unet, sched, images):
    ddim = DDIMScheduler.from_config({**sched.config, "clip_sample": False})
    ddim.set_timesteps(100)  # steps of 10: 990, 980, ..., 0
    x = images * 0.7
    for t in (990, 500, 10):
        mine, eps = ddim_step(unet, sched, x, t, t - 10)
        theirs = ddim.step(eps, t, x, eta=0.0).prev_sample
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_a_step_up_equals_diffusers_ddim_inverse_scheduler(unet, sched, images):
    inverse = DDIMInverseScheduler.from_config({**sched.config, "clip_sample": False})
    inverse.set_timesteps(100)
    x = images * 0.7
    for t in (0, 200, 980):
        eps = unet(x, torch.full((len(x),), t)).sample  # the noise prediction at the current state
        mine, _ = ddim_step(unet, sched, x, t, t + 10, eps=eps)
        theirs = inverse.step(eps, t + 10, x).prev_sample  # diffusers' step from t + 10 - 10 to t + 10
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_steps_follow_the_closed_form_of_a_linear_noise_prediction(sched):
    abar = sched.alphas_cumprod.double().numpy()
    model = LinearEps(0.3).double()
    c = float(model.c)  # 0.3 as stored
    x0 = torch.rand(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    got = ddim_invert(model, sched, x0, 95, 10)
    path = inversion_steps(95, 10)
    assert path == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    m = np.prod([_multiplier(abar, c, a, b) for a, b in zip(path[:-1], path[1:])])
    torch.testing.assert_close(got, x0 * m, rtol=1e-12, atol=0)
    # t-error: (1 - r)^2 ||x_t||^2 with r the up-and-down multiplier
    errors = t_errors(model, sched, x0.float(), [95], k=10, batch_size=2, device="cpu")
    r = _multiplier(abar, c, 95, 105) * _multiplier(abar, c, 105, 95)
    expected = (1 - r) ** 2 * m ** 2 * x0.pow(2).flatten(1).sum(1)
    torch.testing.assert_close(errors[:, 0].double(), expected, rtol=1e-4, atol=0)


def test_inverting_then_denoising_reconstructs_up_to_the_discretisation_error(sched, images):
    """With a noise prediction that does not depend on the state, DDIM steps are exact inverses; with one
    that does, the round trip errs by a discretisation error that shrinks with the step size."""
    const = LinearEps(0.0)
    path = inversion_steps(300, 20)
    x0 = images[:, :, :4, :4]
    there = ddim_path(const, sched, x0, path)
    back = ddim_path(const, sched, there, path[::-1])
    torch.testing.assert_close(back, x0, rtol=1e-5, atol=1e-5)
    errs = []
    for k in (50, 10, 2):
        model = LinearEps(0.5)
        p = inversion_steps(300, k)
        back = ddim_path(model, sched, ddim_path(model, sched, x0, p), p[::-1])
        errs.append(float((back - x0).abs().max()))
    assert errs[0] > errs[1] > errs[2] > 0
    assert errs[2] < 0.05 * errs[0]


def test_batched_t_errors_equal_a_per_image_float64_loop(unet, sched, images):
    ts = [30, 95]
    got = t_errors(unet, sched, images, ts, k=10, batch_size=2, device="cpu")
    double = copy.deepcopy(unet).double()
    for i in range(len(images)):
        for j, t in enumerate(ts):
            ref = t_error_reference(double, sched, images[i].double(), t, 10)
            assert got[i, j].item() == pytest.approx(ref, rel=2e-3, abs=1e-6)
    again, residuals = t_errors(unet, sched, images, ts, k=10, batch_size=5, device="cpu", return_residuals=True)
    torch.testing.assert_close(again, got)  # batch-size invariant
    assert residuals.shape == (5, 2, 1, 8, 8)
    torch.testing.assert_close(residuals.pow(2).flatten(2).sum(2), got, rtol=1e-5, atol=1e-7)
    _, maps, states = t_errors(unet, sched, images, ts, k=10, device="cpu", return_residuals=True, return_states=True)
    assert states.shape == (5, 2, 2, 8, 8)            # x_t and its round trip x_hat_t, side by side as channels
    torch.testing.assert_close((states[:, :, :1] - states[:, :, 1:]).abs(), maps, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(t_errors(unet, sched, images[:1], [95], k=10, device="cpu", return_states=True)[1][0, 0, :1],
                               ddim_path(unet, sched, images[:1], inversion_steps(95, 10))[0], rtol=1e-5, atol=1e-6)


def test_t_error_calls_count_the_unet_passes():
    assert t_error_calls([90], 10) == 9 + 2          # SecMI at t_sec = 100 compares x_90 with its round trip
    assert t_error_calls([50, 90], 10) == 9 + 4      # a second t shares the inversion
    assert t_error_calls([95], 10) == 10 + 2


def test_t_error_arguments_are_checked(unet, sched, images):
    with pytest.raises(ValueError, match="t \\+ k < 1000"):
        t_errors(unet, sched, images, [995], k=10)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        t_errors(unet, sched, images, [100], k=0)
    with pytest.raises(ValueError, match="t_next must lie in"):
        ddim_step(unet, sched, images, 10, 1000)
