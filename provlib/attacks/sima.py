"""SimA (Rao et al., TMLR 2025): the noise prediction at the clean image.

No noise is added: the UNet sees the clean image x0 with timestep t, and the
score is ||eps_theta(x0, t)||_4^4 (the public code's ``SimA.distance``: 4th
power summed over pixels).  A model predicts less "noise" in the images it was
trained on, so a smaller norm means "member".  One forward per timestep.
"""
from __future__ import annotations

import torch

from ._common import eps_at, prepare, shaped, timestep_list


@torch.no_grad()
def sima_norm(unet, scheduler, images: torch.Tensor, t, *, batch_size: int = 250, device=None) -> torch.Tensor:
    """``||eps_theta(x0, t)||_4^4`` per image (lower = member); (N,) or (N, len(t))."""
    ts, scalar = timestep_list(t, scheduler)
    device, dtype, batch_size = prepare(unet, images, batch_size, device)
    out = torch.empty(len(images), len(ts))
    for s in range(0, len(images), batch_size):
        x0 = images[s:s + batch_size].to(device=device, dtype=dtype)
        for j, tj in enumerate(ts):
            out[s:s + len(x0), j] = eps_at(unet, x0, tj).abs().pow(4).flatten(1).sum(1).float().cpu()
    return shaped(out, scalar)


def sima_score(unet, scheduler, images: torch.Tensor, t, *, batch_size: int = 250, device=None) -> torch.Tensor:
    """SimA score, higher = member: minus :func:`sima_norm`."""
    return -sima_norm(unet, scheduler, images, t, batch_size=batch_size, device=device)
