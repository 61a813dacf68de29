"""The model-blind baseline: a ResNet-18-design classifier on the images alone.

It never touches the diffusion model: what it achieves is what the images'
distributions give away (a shift between members and non-members), the floor
every attack on the model has to beat (the naive baseline of Tracing the Roots).
"""
from __future__ import annotations

import numpy as np
import torch

from ..classifiers import classifier_scores, train_classifier

RECIPE = {"epochs": 30, "lr": 1e-2, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128, "loss": "bce"}


def blind_scores(train_images: torch.Tensor, train_labels, eval_images: torch.Tensor, *, seed: int = 0,
                 progress: bool = False, **recipe) -> np.ndarray:
    """Train on (images, label 1 = member) of the training rows; the evaluation rows' scores, higher = member."""
    net = train_classifier(train_images, np.asarray(train_labels), seed=seed, progress=progress,
                           desc="model-blind CNN", **{**RECIPE, **recipe})
    return classifier_scores(net, eval_images)
