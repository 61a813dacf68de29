"""PIA (Kong et al., 2023): proximal initialisation.  PIAN: PIA with a normalised initial noise.

The model's own noise prediction at the clean image, eps0 = eps_theta(x0, 0),
replaces the random noise: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps0, and
the score is the l4 distance ||eps0 - eps_theta(x_t, t)||_4^4 (as in the
public code: the 4th power, summed over pixels).  A member's prediction is
more consistent, so the distance is smaller.  PIAN rescales eps0 to the
mean absolute value of a standard normal, sqrt(2 / pi), per image.
"""
from __future__ import annotations

import math

import torch

from ._common import batch_condition, eps_at, prepare, shaped, timestep_list


@torch.no_grad()
def pia_distance(unet, scheduler, images: torch.Tensor, t=200, *, normalized: bool = False,
                 batch_size: int = 250, device=None, cond=None) -> torch.Tensor:
    """``||eps0 - eps_theta(x_t, t)||_4^4`` per image (lower = member); (N,) or (N, len(t)); ``cond`` conditions
    the model (one row per image: text embeddings or class labels)."""
    ts, scalar = timestep_list(t, scheduler)
    device, dtype, batch_size, cond = prepare(unet, images, batch_size, device, cond)
    abar = scheduler.alphas_cumprod.double()
    out = torch.empty(len(images), len(ts))
    for s in range(0, len(images), batch_size):
        x0 = images[s:s + batch_size].to(device=device, dtype=dtype)
        c = batch_condition(cond, s, len(x0), device, dtype)
        eps0 = eps_at(unet, x0, 0, c)
        if normalized:
            eps0 = eps0 / eps0.abs().mean(dim=(1, 2, 3), keepdim=True) * math.sqrt(2 / math.pi)
        for j, tj in enumerate(ts):
            a = float(abar[tj])
            xt = a ** 0.5 * x0 + (1 - a) ** 0.5 * eps0
            out[s:s + len(x0), j] = (eps0 - eps_at(unet, xt, tj, c)).abs().pow(4).flatten(1).sum(1).float().cpu()
    return shaped(out, scalar)


def pia_score(unet, scheduler, images: torch.Tensor, t=200, *, normalized: bool = False,
              batch_size: int = 250, device=None) -> torch.Tensor:
    """PIA (``normalized=True``: PIAN) score, higher = member: minus :func:`pia_distance`.

    One forward for eps0 plus one per timestep.
    """
    return -pia_distance(unet, scheduler, images, t, normalized=normalized, batch_size=batch_size, device=device)
