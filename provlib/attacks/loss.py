"""Loss attack (Matsumoto et al., 2023): a low denoising loss at one timestep means "member"."""
from __future__ import annotations

from typing import Sequence

import torch

from ..kernels.trajectory import trajectory_features
from ._common import shaped, timestep_list


def loss_score(unet, scheduler, images: torch.Tensor, t, *, seed: int = 0, ids: Sequence[int] | None = None,
               batch_size: int = 64, device=None) -> torch.Tensor:
    """``-L_t`` per image (higher = member), with the trajectory kernel's seeded noise of (seed, id, t).

    ``t`` an int gives (N,); a sequence of timesteps gives (N, len(t)).  One
    UNet forward per image and timestep.
    """
    ts, scalar = timestep_list(t, scheduler)
    loss = trajectory_features(unet, scheduler, images, ts, seed=seed, ids=ids, features=["loss"],
                               batch_size=batch_size, device=device)["loss"]
    return shaped(-loss, scalar)
