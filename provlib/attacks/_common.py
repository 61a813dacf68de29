"""What every attack shares: argument checks, the timestep list, batched UNet calls."""
from __future__ import annotations

from typing import Sequence

import torch

from ..checks import positive_int
from ..kernels.condition import check_condition, check_input, rows, unet_kwargs
from ..kernels.trajectory import check_timesteps
from ..runtime import default_device


def timestep_list(t, scheduler) -> tuple[list[int], bool]:
    """``(timesteps, scalar)``: one int or a sequence of distinct integer timesteps, checked."""
    scalar = not isinstance(t, (Sequence, torch.Tensor)) or isinstance(t, str)
    ts = check_timesteps([t] if scalar else t, scheduler.config.num_train_timesteps)
    return ts.tolist(), scalar


def prepare(unet, images: torch.Tensor, batch_size: int, device, cond=None):
    """Check the inputs (images, or a latent model's latents; the condition, one row per image), move the
    model; ``(device, dtype, batch_size, cond)``."""
    check_input(images, unet)
    cond = check_condition(cond, len(images))
    batch_size = positive_int(batch_size, "batch_size")
    device = torch.device(device) if device is not None else default_device()
    unet.to(device).eval()
    return device, next(unet.parameters()).dtype, batch_size, cond


def batch_condition(cond, start: int, n: int, device, dtype):
    """The condition of the images ``start .. start + n - 1`` (None for an unconditional model)."""
    return rows(cond, torch.arange(start, start + n), device, dtype)


def eps_at(unet, x: torch.Tensor, t: int, cond=None) -> torch.Tensor:
    """eps_theta(x, t[, cond]) for a batch, every image at the same timestep."""
    return unet(x, torch.full((len(x),), int(t), device=x.device, dtype=torch.long), **unet_kwargs(cond)).sample


def shaped(scores: torch.Tensor, scalar: bool) -> torch.Tensor:
    """(N, T) scores, or (N,) when a single timestep was asked for."""
    return scores[:, 0] if scalar else scores
