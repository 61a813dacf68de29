"""GSA (Pang et al., 2025): gradient-substitution attack.

Features are per-layer squared gradient norms of the denoising loss at 10
equidistant timesteps; a classifier trained on known members and non-members
separates them.
- GSA_1: the gradient of the loss averaged over the timesteps (one backward).
- GSA_2: the per-timestep gradients' norms, averaged over the timesteps
  (one backward per timestep): the trajectory kernel's per-layer norms.
The public code uses XGBoost (200 trees); here scikit-learn's histogram
gradient boosting (200 iterations) plays that role, fitted on training rows.
Trees do not care about monotone rescaling, so the squared norms enter as they are.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from ..kernels.trajectory import LAYERS, image_layer_grad_norms, trajectory_features

TIMESTEPS = tuple(range(0, 1000, 100))  # 10 equidistant timesteps over the whole range
VARIANTS = (1, 2)


def gsa_features(unet, scheduler, images: torch.Tensor, timesteps: Sequence[int] = TIMESTEPS, *, variant: int,
                 seed: int = 0, ids: Sequence[int] | None = None, batch_size: int | None = None,
                 device=None, cond=None) -> torch.Tensor:
    """(N, n_layers) per-layer squared gradient norms: GSA_1 (``variant=1``) or GSA_2 (``variant=2``); ``cond``
    conditions the model (one row per image)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be 1 or 2 (GSA_1, GSA_2), got {variant!r}")
    if variant == 1:
        return image_layer_grad_norms(unet, scheduler, images, timesteps, seed=seed, ids=ids, device=device, cond=cond)
    per_t = trajectory_features(unet, scheduler, images, timesteps, seed=seed, ids=ids, features=[LAYERS],
                                batch_size=batch_size or 64, device=device, cond=cond)[LAYERS]
    return per_t.mean(1)


def gsa_classifier(seed: int = 0) -> HistGradientBoostingClassifier:
    """The classifier on GSA features (in place of the public code's XGBoost with 200 trees)."""
    return HistGradientBoostingClassifier(max_iter=200, random_state=seed, early_stopping=False)


def gsa_scores(train_features, train_labels, eval_features, *, seed: int = 0) -> np.ndarray:
    """Fit :func:`gsa_classifier` on training rows; the evaluation rows' member probability (higher = member)."""
    clf = gsa_classifier(seed).fit(np.asarray(train_features), np.asarray(train_labels))
    return clf.predict_proba(np.asarray(eval_features))[:, list(clf.classes_).index(1)]
