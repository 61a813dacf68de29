"""Signal columns of any images under any model: every per-timestep statistic the probes read.

A **family** is one per-image statistic of the model at a timestep t, computed
by an existing kernel; a **column** is ``(family, t)``:

| family       | statistic at t                                   | kernel                                  |
|--------------|--------------------------------------------------|-----------------------------------------|
| loss         | L_t = ||eps_theta(x_t, t) - eps||^2 (seeded eps) | kernels.trajectory.trajectory_features  |
| grad_x       | ||d L_t / d x0||^2                               | trajectory_features                     |
| grad_theta   | ||d L_t / d theta||^2                            | trajectory_features                     |
| sima_l2      | ||eps_theta(x0, t)||_2^2 at the clean image      | attacks.sima_norms                      |
| sima_l4      | ||eps_theta(x0, t)||_4^4 (SimA's score)          | attacks.sima_norms                      |
| pia          | ||eps0 - eps_theta(x_t, t)||_4^4, x_t from eps0  | attacks.pia_distance                    |
| secmi        | SecMI's t-error of a DDIM round trip at t_sec = t| attacks.secmi_t_error (kernels.ddim)    |

:func:`passes_of` (:mod:`provlib.attacks.passes`, the one place that counts passes) gives the UNet
passes per image of a set of columns, each pass once: the loss and both gradient norms at one t share one forward (the
gradients one backward), SimA's two norms at one t one forward, PIA's columns
one eps0 = eps_theta(x0, 0) forward (its own: the SimA and PIA kernels run
apart) and one forward per t, SecMI's t_sec values share one DDIM inversion.
:func:`values` computes the columns with exactly those passes (tested by
counting the UNet's forwards).  Only the trajectory families draw noise: seeded per
image by ``(seed, id, t)`` (:func:`provlib.kernels.trajectory.noise_seed`), so
an image's columns do not depend on its batch.

The study reads the same columns from its cached measurements
(:mod:`provlib.study.measurements`); the command line computes them for new images
(:mod:`provlib.detector.origin_probe`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..attacks.passes import BACKWARD, FAMILIES, SECMI_K, TRAJECTORY, check_columns, passes_of, total_passes


def describe(cols: Sequence[tuple[str, int]]) -> str:
    """``loss@0,50; sima_l4@20`` (timesteps per family, in the families' order)."""
    by: dict[str, list[int]] = {}
    for f, t in cols:
        by.setdefault(f, []).append(int(t))
    return "; ".join(f"{f}@" + ",".join(map(str, sorted(by[f]))) for f in FAMILIES if f in by)


def family_blocks(cols: Sequence[tuple[str, int]]) -> list[list[int]]:
    """Indices into ``cols`` of each family's columns, and of the three trajectory families together: the
    peers' own probes, which greedy selection may take as one first step (:func:`provlib.detector.selection.greedy_select`)."""
    cols = list(cols)
    blocks = [[j for j, (f, _) in enumerate(cols) if f == family] for family in FAMILIES]
    blocks.append([j for j, (f, _) in enumerate(cols) if f in TRAJECTORY])
    return [b for b in blocks if b]


def values(unet, scheduler, images: torch.Tensor, cols: Sequence[tuple[str, int]], *, seed: int = 0,
           ids: Sequence[int] | None = None, k: int = SECMI_K, device=None, progress: bool = False,
           cond: torch.Tensor | None = None) -> np.ndarray:
    """Raw values (N, len(cols)) of the columns ``cols`` for ``images`` (float64; a probe takes their log).

    The trajectory families are computed per group of timesteps that need the same families, so a
    backward runs only where a gradient column asks for it and the work done is :func:`passes_of`.
    For a latent model, ``images`` are the latents x0 and ``cond`` the text condition of each
    (:class:`provlib.models.interface.DiffusionModel`)."""
    from ..attacks import pia_distance, secmi_t_error, sima_norms
    from ..kernels.trajectory import trajectory_features

    cols = check_columns(cols)
    out = np.empty((len(images), len(cols)))
    where = {c: j for j, c in enumerate(cols)}
    by_t: dict[int, list[str]] = {}
    for f, t in cols:
        if f in TRAJECTORY:
            by_t.setdefault(t, []).append(f)
    groups: dict[tuple[str, ...], list[int]] = {}
    for t, fams in by_t.items():
        groups.setdefault(tuple(f for f in TRAJECTORY if f in fams), []).append(t)
    for fams, ts in groups.items():
        got = trajectory_features(unet, scheduler, images, sorted(ts), seed=seed, ids=ids, features=fams,
                                  device=device, progress=progress, cond=cond)
        for f in fams:
            for j, t in enumerate(sorted(ts)):
                out[:, where[(f, t)]] = got[f][:, j].double().numpy()
    sima_ts = sorted({t for f, t in cols if f in ("sima_l2", "sima_l4")})
    if sima_ts:
        norms = sima_norms(unet, scheduler, images, sima_ts, powers=(2, 4), device=device, cond=cond)
        for f, p in (("sima_l2", 2), ("sima_l4", 4)):
            for j, t in enumerate(sima_ts):
                if (f, t) in where:
                    out[:, where[(f, t)]] = norms[p][:, j].double().numpy()
    for f, kernel in (("pia", lambda ts: pia_distance(unet, scheduler, images, ts, device=device, cond=cond)),
                      ("secmi", lambda ts: secmi_t_error(unet, scheduler, images, ts, k, device=device, cond=cond))):
        ts = sorted(t for g, t in cols if g == f)
        if ts:
            got = kernel(ts)
            for j, t in enumerate(ts):
                out[:, where[(f, t)]] = got[:, j].double().numpy()
    return out


__all__ = ["FAMILIES", "TRAJECTORY", "BACKWARD", "SECMI_K", "check_columns", "passes_of", "total_passes",
           "describe", "family_blocks", "values"]
