"""Samplers that produce a model's "generated" image sets.

DDPM ancestral sampling and DDIM, driven by diffusers' schedulers.  Every
sample owns a generator seeded from (run seed, sample id), for its initial
noise and every ancestral step, so a sample does not depend on the batch it
was drawn in.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from .checks import positive_int
from .progress import progress_bar
from .runtime import default_device
from .seeds import noise_seed
from .kernels.condition import check_condition, rows, unet_kwargs
from .models.ddpm import check_labels

SAMPLERS = ("ddpm", "ddim")


def _scheduler_for(method: str, scheduler, num_inference_steps: int):
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose from {SAMPLERS}")
    cls = DDPMScheduler if method == "ddpm" else DDIMScheduler
    sched = cls.from_config(scheduler.config)
    positive_int(num_inference_steps, "num_inference_steps")
    if not 1 <= num_inference_steps <= sched.config.num_train_timesteps:
        raise ValueError(f"num_inference_steps must lie in [1, {sched.config.num_train_timesteps}], "
                         f"got {num_inference_steps}")
    sched.set_timesteps(num_inference_steps)
    return sched


@torch.inference_mode()
def _sample_batch(unet, sched, method: str, ids: Sequence[int], seed: int, shape, device, bar,
                  cond: torch.Tensor | None = None) -> torch.Tensor:
    gens = [torch.Generator().manual_seed(noise_seed(seed, i, -1)) for i in ids]
    x = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)
    kwargs = unet_kwargs(None if cond is None else cond.to(device))
    for t in sched.timesteps:
        bar.update(len(ids))
        eps = unet(x, t.to(device), **kwargs).sample
        if method == "ddpm":  # a list of CPU generators: diffusers draws each sample's noise from its own
            x = sched.step(eps, t, x, generator=gens).prev_sample
        else:
            x = sched.step(eps, t, x, eta=0.0).prev_sample
    return x.cpu() if cond is not None and cond.is_floating_point() else x.clamp(-1, 1).cpu()


def sample_args(n: int, ids, batch_size: int, device):
    """Checked ``(n, ids, batch_size, device)`` of a sampler: ids default to 0..n-1, one per sample;
    the device defaults to CUDA when present."""
    n = positive_int(n, "number of samples n")
    batch_size = positive_int(batch_size, "batch_size")
    ids = np.arange(n) if ids is None else np.asarray(ids)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} samples")
    return n, ids, batch_size, torch.device(device) if device is not None else default_device()


def sample(unet, scheduler, n: int, *, method: str = "ddpm", num_inference_steps: int = 1000, seed: int = 0,
           ids: Sequence[int] | None = None, batch_size: int = 250, device=None, class_labels=None, cond=None,
           progress: bool = False) -> torch.Tensor:
    """Draw ``n`` images in [-1, 1] (N, C, H, W) from ``unet`` with DDPM (ancestral) or DDIM (eta 0).

    Sample ``i`` starts from the noise of its id; a class-conditional model
    takes ``class_labels`` (one per sample, the "prompt"); a text-to-image
    UNet takes ``cond``, the text encoder's hidden states of each sample's
    prompt (:meth:`provlib.models.interface.DiffusionModel.condition`), and
    returns latents (unclamped; :meth:`~provlib.models.interface.DiffusionModel.generate`
    decodes them).  The progress bar counts sample-steps (images x denoising steps).
    """
    n, ids, batch_size, device = sample_args(n, ids, batch_size, device)
    if cond is not None and class_labels is not None:
        raise ValueError("give class_labels or cond, not both")
    if getattr(unet.config, "cross_attention_dim", None) and cond is None:
        raise ValueError("a text-to-image UNet samples under a condition: pass cond (the empty prompt's for "
                         "unconditional samples)")
    labels = check_condition(cond, n) if cond is not None else \
        check_labels(class_labels, n, getattr(unet.config, "num_class_embeds", None) or 0)
    unet.to(device).eval()
    sched = _scheduler_for(method, scheduler, num_inference_steps)
    cfg = unet.config
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    with progress_bar(desc=f"{method} sampling ({num_inference_steps} steps)", total=n * len(sched.timesteps),
                      enabled=progress, unit="img-step") as bar:
        out = [_sample_batch(unet, sched, method, ids[s:s + batch_size], seed, shape, device, bar,
                             rows(labels, torch.arange(s, min(s + batch_size, n))))
               for s in range(0, n, batch_size)]
    return torch.cat(out)
