"""SecMI (Duan et al., 2023): the t-error of a deterministic DDIM round trip.

SecMI_stat thresholds the t-error; SecMI_NNs trains a ResNet on the residual
map |x_t - x_hat_t|.  In the public code, ``t_sec`` is the top of the round
trip: the image is inverted along 0, k, ..., t_sec - k, stepped up to t_sec and
back down, and x_(t_sec - k) is compared with its round trip.  So
``secmi_t_error(t_sec=100, k=10)`` is :func:`provlib.kernels.ddim.t_errors` at
``t = 90``: 9 + 2 = 11 UNet calls per image.
"""
from __future__ import annotations

import numpy as np
import torch

from ..classifiers import classifier_scores, train_classifier
from ..kernels.ddim import t_errors
from ._common import shaped, timestep_list

# SecMI's recipe is 15 epochs of SGD at lr 1e-3 on 20% of 50,000 CIFAR-10 maps (about 1,200 steps).  On the
# few hundred maps that 20% of a target's rows give here, that is a few dozen steps and the network stays at
# chance; 60 epochs at lr 1e-2 (the rest as SecMI: momentum 0.9, weight decay 5e-4, batch 128, squared error)
# let it learn.
NN_RECIPE = {"epochs": 60, "lr": 1e-2, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128, "loss": "mse"}


def secmi_t_error(unet, scheduler, images: torch.Tensor, t_sec=100, k: int = 10, *, batch_size: int = 250,
                  device=None, return_residuals: bool = False, progress: bool = False, cond=None):
    """SecMI's t-error per image (lower = member); (N,) for one ``t_sec``, (N, len(t_sec)) for several.

    With ``return_residuals`` also the maps |x_t - x_hat_t| (N, C, H, W) or (N, T, C, H, W); ``cond``
    conditions the model (one row per image).
    """
    ts, scalar = timestep_list(t_sec, scheduler)
    if min(ts) < k:
        raise ValueError(f"t_sec must be at least k = {k}, got {min(ts)}")
    out = t_errors(unet, scheduler, images, [t - k for t in ts], k, batch_size=batch_size, device=device,
                   return_residuals=return_residuals, progress=progress, cond=cond)
    if not return_residuals:
        return shaped(out, scalar)
    errors, maps = out
    return shaped(errors, scalar), (maps[:, 0] if scalar else maps)


def secmi_score(unet, scheduler, images: torch.Tensor, t_sec=100, k: int = 10, **kw) -> torch.Tensor:
    """SecMI_stat score, higher = member: minus :func:`secmi_t_error`."""
    return -secmi_t_error(unet, scheduler, images, t_sec, k, **kw)


def secmi_nn(train_maps: torch.Tensor, train_labels, eval_maps: torch.Tensor, *, seed: int = 0,
             progress: bool = False, **recipe) -> np.ndarray:
    """SecMI_NNs: a ResNet-18-design network on residual maps, trained on ``train_maps`` (label 1 = member).

    The public recipe (SGD, momentum 0.9, weight decay 5e-4, batch 128, squared
    error on the output) with more steps for our smaller data (:data:`NN_RECIPE`),
    and without its choice of the checkpoint with the best accuracy on the
    evaluation rows: the last epoch is used.  Returns the evaluation rows'
    scores (higher = member).
    """
    net = train_classifier(train_maps, np.asarray(train_labels), seed=seed, progress=progress, desc="SecMI_NNs",
                           **{**NN_RECIPE, **recipe})
    return classifier_scores(net, eval_maps)
