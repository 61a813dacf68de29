"""What a denoiser takes: its input x0 (images, or latents) and its condition, passed the way a diffusers UNet
takes them.

A condition is one row per sample: the text encoder's hidden states of its
prompt (a float tensor (N, L, D), for a ``UNet2DConditionModel``'s
cross-attention), a class label (an integer tensor (N,), for a
class-conditional ``UNet2DModel``), or ``None`` (an unconditional model).
"""
from __future__ import annotations

import torch

from ..data import check_fits_model, check_images


def is_latent(unet) -> bool:
    """Whether ``unet`` denoises a latent under a text condition (a UNet that cross-attends)."""
    return bool(getattr(unet.config, "cross_attention_dim", None))


def check_input(x: torch.Tensor, unet, *, what: str = "images") -> None:
    """A kernel's x0: images in [-1, 1] for a pixel model, finite latents for a latent model; either with the
    channels and size the model takes (a ValueError naming the problem otherwise)."""
    if not is_latent(unet):
        check_images(x, what=what, stacklevel=4)   # the warning names the kernel's caller
    elif not isinstance(x, torch.Tensor) or x.ndim != 4 or len(x) == 0 or not x.is_floating_point() \
            or not torch.isfinite(x).all():
        raise ValueError(f"{what}: a latent model takes finite float latents (N, C, H, W) (its to_space of the "
                         f"images), got {type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    check_fits_model(x, unet, what=what)


def unet_kwargs(cond: torch.Tensor | None) -> dict:
    """The keyword argument of a UNet call for ``cond``: ``encoder_hidden_states``, ``class_labels`` or none."""
    if cond is None:
        return {}
    return {"encoder_hidden_states": cond} if cond.is_floating_point() else {"class_labels": cond}


def rows(cond: torch.Tensor | None, index: torch.Tensor, device=None, dtype=None) -> torch.Tensor | None:
    """The condition of the samples ``index`` (on ``device``; float conditions in ``dtype``)."""
    if cond is None:
        return None
    out = cond[index.to(cond.device)]
    return out.to(device=device, dtype=dtype if out.is_floating_point() else out.dtype)


def check_condition(cond, n: int) -> torch.Tensor | None:
    """``cond`` as a tensor with one row per sample of ``n``, or a ValueError naming the mismatch."""
    if cond is None:
        return None
    cond = torch.as_tensor(cond)
    if cond.ndim == 0 or cond.shape[0] != n:
        raise ValueError(f"need one condition per image: {n} images, a condition of shape {tuple(cond.shape)}")
    if cond.is_floating_point() and not torch.isfinite(cond).all():
        raise ValueError("the condition holds NaN or infinite values")
    return cond
