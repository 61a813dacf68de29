"""Deterministic DDIM steps (eta = 0) in both directions, batched, and the stepwise t-error.

With ``abar`` the scheduler's cumulative alphas and ``eps = eps_theta(x_t, t)``,
one step from timestep ``t`` to ``t2`` (either direction) is

    x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
    x_t2   = sqrt(abar_t2) x0_hat + sqrt(1 - abar_t2) eps

``t2 > t`` inverts (adds noise deterministically), ``t2 < t`` denoises.  A clean
image enters as the state at ``t = 0`` (as in SecMI's and SeDID's code).

The t-error (SecMI's, and SeDID's "stepwise error") of an image at timestep
``t`` with step ``k``: invert the image along ``0, k, 2k, ..., t``, take one
more step up to ``t + k``, one step back down to ``t``, and measure
``||x_t - x_hat_t||^2``.  It needs ``t / k + 2`` UNet calls (``ceil`` when
``k`` does not divide ``t``); images the model has seen (or made) come back
closer.  :func:`t_errors` evaluates several ``t`` along one shared inversion.

Coefficients are computed in float64 and applied in the model's dtype.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch

from ..checks import positive_int
from ..progress import progress_bar
from ..runtime import default_device
from .condition import check_condition, check_input, rows, unet_kwargs


def _abar(scheduler, t: int) -> float:
    return float(scheduler.alphas_cumprod.double()[t])


def ddim_step(unet, scheduler, x: torch.Tensor, t: int, t_next: int, *, eps: torch.Tensor | None = None,
              cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One deterministic DDIM step of the batch ``x`` from timestep ``t`` to ``t_next``.

    Returns ``(x_next, eps)`` with ``eps = eps_theta(x, t)`` (computed unless given;
    ``cond`` conditions the model, one row per image: class labels or text embeddings,
    :mod:`provlib.kernels.condition`).
    """
    n_train = scheduler.config.num_train_timesteps
    for name, value in (("t", t), ("t_next", t_next)):
        if not 0 <= int(value) < n_train:
            raise ValueError(f"{name} must lie in [0, {n_train}), got {value}")
    if eps is None:
        with torch.no_grad():
            eps = unet(x, torch.full((len(x),), int(t), device=x.device, dtype=torch.long), **unet_kwargs(cond)).sample
    a, a_next = _abar(scheduler, int(t)), _abar(scheduler, int(t_next))
    x0_hat = (x - (1 - a) ** 0.5 * eps) / a ** 0.5
    return a_next ** 0.5 * x0_hat + (1 - a_next) ** 0.5 * eps, eps


def ddim_path(unet, scheduler, x: torch.Tensor, timesteps: Sequence[int], *, record: bool = False,
              cond: torch.Tensor | None = None) -> torch.Tensor | list[torch.Tensor]:
    """Walk ``x`` (the state at ``timesteps[0]``) through consecutive DDIM steps to ``timesteps[-1]``.

    With ``record``, returns every state ``[x_(t0), x_(t1), ...]``; else the last one.
    """
    ts = [int(t) for t in timesteps]
    if len(ts) < 1:
        raise ValueError("ddim_path needs at least one timestep")
    states = [x]
    for t, t_next in zip(ts[:-1], ts[1:]):
        x, _ = ddim_step(unet, scheduler, x, t, t_next, cond=cond)
        if record:
            states.append(x)
    return states if record else x


def inversion_steps(t: int, k: int) -> list[int]:
    """The inversion path ``0, k, 2k, ..., t`` (ending exactly at ``t``)."""
    return sorted(set(range(0, int(t), int(k))) | {int(t)})


def ddim_invert(unet, scheduler, x0: torch.Tensor, t: int, k: int, *, record: bool = False):
    """Invert clean images ``x0`` deterministically to timestep ``t`` in steps of ``k``."""
    return ddim_path(unet, scheduler, x0, inversion_steps(t, k), record=record)


def _check_t_grid(scheduler, ts: Sequence[int], k: int) -> list[int]:
    n_train = scheduler.config.num_train_timesteps
    out = sorted({int(t) for t in ts})
    if not out:
        raise ValueError("no timestep given for the t-error")
    if out[0] < 0 or out[-1] + k >= n_train:
        raise ValueError(f"t-error timesteps need 0 <= t and t + k < {n_train}; got t in [{out[0]}, {out[-1]}], "
                         f"k = {k}")
    return out


@torch.no_grad()
def t_errors(unet, scheduler, images: torch.Tensor, ts: Sequence[int], k: int = 10, *, batch_size: int = 250,
             device=None, return_residuals: bool = False, return_states: bool = False, progress: bool = False,
             cond: torch.Tensor | None = None):
    """The t-error ``||x_t - x_hat_t||^2`` of each image at each ``t`` of ``ts`` (one shared inversion).

    Returns a float32 CPU tensor (N, len(ts)) in the order of ``sorted(set(ts))``; with
    ``return_residuals`` also the maps ``|x_t - x_hat_t|`` (N, len(ts), C, H, W) that
    SecMI_NNs classifies; with ``return_states`` also the two intermediate states
    themselves, ``x_t`` and ``x_hat_t`` side by side as channels (N, len(ts), 2C, H, W),
    which SeDID_NNs classifies.  Lower error = more likely seen (or made) by the model.
    The extra outputs follow the errors in this order.  ``cond`` conditions the model (one row per image).
    """
    check_input(images, unet)
    cond = check_condition(cond, len(images))
    k, batch_size = positive_int(k, "k"), positive_int(batch_size, "batch_size")
    grid = _check_t_grid(scheduler, ts, k)
    device = torch.device(device) if device is not None else default_device()
    unet.to(device).eval()
    dtype = next(unet.parameters()).dtype
    path = sorted(set(range(0, grid[-1], k)) | set(grid))
    errors = torch.empty(len(images), len(grid))
    residuals = torch.empty(len(images), len(grid), *images.shape[1:]) if return_residuals else None
    pairs = torch.empty(len(images), len(grid), 2 * images.shape[1], *images.shape[2:]) if return_states else None
    with progress_bar(desc=f"t-error (k={k}, t up to {grid[-1]})", total=len(images), enabled=progress,
                      unit="img") as bar:
        for s in range(0, len(images), batch_size):
            x = images[s:s + batch_size].to(device=device, dtype=dtype)
            c = rows(cond, torch.arange(s, s + len(x)), device, dtype)
            states = dict(zip(path, ddim_path(unet, scheduler, x, path, record=True, cond=c)))
            for j, t in enumerate(grid):
                up, _ = ddim_step(unet, scheduler, states[t], t, t + k, cond=c)
                back, _ = ddim_step(unet, scheduler, up, t + k, t, cond=c)
                diff = (states[t] - back).float().cpu()
                errors[s:s + len(x), j] = diff.pow(2).flatten(1).sum(1)
                if return_residuals:
                    residuals[s:s + len(x), j] = diff.abs()
                if return_states:
                    pairs[s:s + len(x), j] = torch.cat([states[t], back], 1).float().cpu()
            bar.update(len(x))
    extra = [a for a, wanted in ((residuals, return_residuals), (pairs, return_states)) if wanted]
    return (errors, *extra) if extra else errors


def t_error_calls(ts: Sequence[int], k: int) -> int:
    """UNet forward calls per image of :func:`t_errors` on ``ts``: the shared path plus 2 per t."""
    grid = sorted({int(t) for t in ts})
    return len(set(range(0, grid[-1], k)) | set(grid)) - 1 + 2 * len(grid)


def t_error_reference(unet, scheduler, image: torch.Tensor, t: int, k: int) -> float:
    """One image's t-error by a plain float64 loop (the test reference for :func:`t_errors`)."""
    abar = scheduler.alphas_cumprod.double()
    x = image[None].double()
    model = copy.deepcopy(unet).double()

    def step(x, a, b):
        eps = model(x, torch.tensor([a])).sample
        x0 = (x - (1 - abar[a]).sqrt() * eps) / abar[a].sqrt()
        return abar[b].sqrt() * x0 + (1 - abar[b]).sqrt() * eps

    cur = 0
    while cur < t:
        nxt = min(cur + k, t)
        x = step(x, cur, nxt)
        cur = nxt
    back = step(step(x, t, t + k), t + k, t)
    return float((x - back).pow(2).sum())

