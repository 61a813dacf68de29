"""SimA (Rao et al., TMLR 2025): the noise prediction at the clean image.

No noise is added: the UNet sees the clean image x0 with timestep t, and the
score is ||eps_theta(x0, t)||_4^4 (the public code's ``SimA.distance``: 4th
power summed over pixels).  A model predicts less "noise" in the images it was
trained on, so a smaller norm means "member".  One forward per timestep.
"""
from __future__ import annotations

import torch

from ._common import batch_condition, eps_at, prepare, shaped, timestep_list


@torch.no_grad()
def sima_norms(unet, scheduler, images: torch.Tensor, t, *, powers=(2, 4), batch_size: int = 250,
               device=None, cond=None) -> dict[int, torch.Tensor]:
    """``{p: ||eps_theta(x0, t)||_p^p}`` per image for each power ``p`` (lower = member), all from one
    forward per timestep; each (N,) or (N, len(t)).  SimA's score is ``p = 4``; ``p = 2`` is the same
    prediction's energy (a feature family of the combined probe)."""
    ts, scalar = timestep_list(t, scheduler)
    powers = tuple(int(p) for p in powers)
    if not powers or min(powers) < 1 or len(set(powers)) != len(powers):
        raise ValueError(f"powers must be distinct positive integers, got {powers!r}")
    device, dtype, batch_size, cond = prepare(unet, images, batch_size, device, cond)
    out = torch.empty(len(powers), len(images), len(ts))
    for s in range(0, len(images), batch_size):
        x0 = images[s:s + batch_size].to(device=device, dtype=dtype)
        c = batch_condition(cond, s, len(x0), device, dtype)
        for j, tj in enumerate(ts):
            a = eps_at(unet, x0, tj, c).abs().flatten(1)
            for i, p in enumerate(powers):
                out[i, s:s + len(x0), j] = a.pow(p).sum(1).float().cpu()
    return {p: shaped(out[i], scalar) for i, p in enumerate(powers)}


def sima_norm(unet, scheduler, images: torch.Tensor, t, *, batch_size: int = 250, device=None) -> torch.Tensor:
    """``||eps_theta(x0, t)||_4^4`` per image (lower = member); (N,) or (N, len(t))."""
    return sima_norms(unet, scheduler, images, t, powers=(4,), batch_size=batch_size, device=device)[4]


def sima_score(unet, scheduler, images: torch.Tensor, t, *, batch_size: int = 250, device=None) -> torch.Tensor:
    """SimA score, higher = member: minus :func:`sima_norm`."""
    return -sima_norm(unet, scheduler, images, t, batch_size=batch_size, device=device)
