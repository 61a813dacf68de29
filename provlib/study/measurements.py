"""Every per-timestep signal the model gives, as feature columns with their cost in UNet passes.

A **family** is one per-image statistic over a grid of timesteps, read from a
measurement the study already makes and caches (:func:`provlib.study.membership.measure`,
computed by the existing kernels):

| family       | statistic at t                                   | measurement / kernel                 | t grid              |
|--------------|--------------------------------------------------|--------------------------------------|---------------------|
| loss         | L_t = ||eps_theta(x_t, t) - eps||^2 (seeded eps) | trajectory (kernels.trajectory)      | the trajectory grid |
| grad_x       | ||d L_t / d x0||^2                               | trajectory                           | the trajectory grid |
| grad_theta   | ||d L_t / d theta||^2                            | trajectory                           | the trajectory grid |
| sima_l2      | ||eps_theta(x0, t)||_2^2 at the clean image      | sima (attacks.sima_norms)            | SimA's t            |
| sima_l4      | ||eps_theta(x0, t)||_4^4 (SimA's score)          | sima                                 | SimA's t            |
| pia          | ||eps0 - eps_theta(x_t, t)||_4^4, x_t from eps0  | pia (attacks.pia_distance)           | PIA's t             |
| secmi        | SecMI's t-error of a DDIM round trip at t_sec    | secmi (kernels.ddim.t_errors)        | SecMI's t_sec       |

A **column** is ``(family, t)``; its values enter a probe on a log scale.  The
families, the cost of a set of columns in UNet passes (:func:`passes_of`: each
pass counted once) and the kernels that compute columns for new images are in
:mod:`provlib.detector.columns`; this module reads the same columns from the study's
cached measurements.  For each peer's own columns :func:`passes_of` equals
:func:`provlib.attacks.passes`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..probe import log_features
from ..detector.columns import BACKWARD, FAMILIES, describe, passes_of, total_passes  # noqa: F401 (re-exported)
from . import membership as M
from .artifacts import timestep_grid

# family -> (measurement, entry of it)
SOURCES = {"loss": ("trajectory", "loss"), "grad_x": ("trajectory", "grad_x"),
           "grad_theta": ("trajectory", "grad_theta"), "sima_l2": ("sima", "l2"), "sima_l4": ("sima", "values"),
           "pia": ("pia", "values"), "secmi": ("secmi", "values")}


def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown feature family {family!r}; choose from {FAMILIES}")
    return family


def family_timesteps(params: dict, family: str) -> list[int]:
    """The timesteps a family is measured at (for SecMI: its t_sec values)."""
    measurement = SOURCES[_check_family(family)][0]
    if measurement == "trajectory":
        return [int(t) for t in timestep_grid(params)]
    return [int(t) for t in M.BASELINE_TIMESTEPS[measurement]]


def columns(params: dict, families: Sequence[str] = FAMILIES) -> list[tuple[str, int]]:
    """Every ``(family, t)`` column of ``families``, family-major."""
    return [(f, t) for f in families for t in family_timesteps(params, f)]


def measurements(params: dict, split: str, *, target: str | None = None, families: Sequence[str] = FAMILIES,
                 progress: bool = True, read=None) -> dict:
    """``{family: (N, T) raw values}`` of one split (the cached measurements), each measurement read once;
    ``read(measurement)`` replaces :func:`provlib.study.membership.measure` (e.g. to read a split's subset)."""
    read = read or (lambda m: M.measure(params, m, split, target=target, progress=progress))
    needed = dict.fromkeys(SOURCES[_check_family(f)][0] for f in families)
    raw = {m: read(m) for m in needed}
    return {f: np.asarray(raw[SOURCES[f][0]][SOURCES[f][1]], dtype=np.float64) for f in families}


def matrix(values: dict, cols: Sequence[tuple[str, int]], params: dict) -> np.ndarray:
    """The log-feature matrix (N, len(cols)) of ``cols`` from :func:`measurements`' values."""
    index = {f: {t: j for j, t in enumerate(family_timesteps(params, f))} for f in dict.fromkeys(f for f, _ in cols)}
    return log_features(np.stack([values[f][:, index[f][int(t)]] for f, t in cols], axis=1))


def seconds_of(cols: Sequence[tuple[str, int]], per_pass: dict) -> float:
    """Seconds per image of ``cols`` from measured per-pass seconds (:func:`provlib.study.membership.per_pass_seconds`:
    one forward, and one forward + backward row): a backward comes with its forward."""
    p = passes_of(cols)
    return float((p["forward"] - p["backward"]) * per_pass["forward"] + p["backward"] * per_pass["forward+backward"])
