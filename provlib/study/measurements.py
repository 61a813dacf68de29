"""Every method's raw measurements on a split of a target, cached, and the signal columns read from them.

**Measurements** (:func:`measure`, cached per chunk like the features, with
their compute time): the trajectory features, and the raw peer measurements of
:mod:`provlib.attacks` at every timestep each method is evaluated at
(:data:`BASELINE_TIMESTEPS`).  :func:`measured` reads a seeded subset of a
split from the whole split's measurements, and :func:`measured_once` reads
each measurement once per process.

**Columns.** A family is one per-image statistic over a grid of timesteps,
read from one of these measurements:

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
cost of a set of columns in UNet passes is :func:`provlib.attacks.passes.passes_of`
(each pass counted once); :mod:`provlib.detector.columns` computes the same
columns for new images.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from .. import paths
from ..attacks import gsa, pia, secmi, sima
from ..attacks.passes import FAMILIES, SECMI_K, passes_of
from ..io import code_version
from ..kernels import ddim, persample, trajectory
from ..kernels.trajectory import LAYERS
from ..probe import log_features
from .artifacts import chunked, features
from .run import Run, Target, parse_split, subset_positions

# Each single-timestep peer is scanned where it is strong: small t (10, 20) and its published default, the t
# chosen on training rows (membership.single_score).
BASELINE_TIMESTEPS = {
    "pia": (10, 20, 50, 100, 200, 300, 500),        # PIA's default is 200
    "pian": (10, 20, 50, 100, 200, 300, 500),
    "sima": (0, 10, 20, 40, 60, 80, 100, 150, 200),  # SimA scans small t (0, 20, 40, ...)
    "secmi": (10, 20, 50, 100, 200),                # SecMI's default t_sec is 100, k = 10
    "loss": (10, 20),   # the loss attack's small t beside the trajectory grid (its default, ~350, is on the grid)
}
GSA_POINTS = 10  # GSA's timesteps: 10 points of the trajectory grid, evenly spread (gsa_timesteps)
MEASURES = ("trajectory", "loss", "pia", "pian", "sima", "secmi", "gsa1", "gsa2")
# family -> (measurement, entry of it)
SOURCES = {"loss": ("trajectory", "loss"), "grad_x": ("trajectory", "grad_x"),
           "grad_theta": ("trajectory", "grad_theta"), "sima_l2": ("sima", "l2"), "sima_l4": ("sima", "values"),
           "pia": ("pia", "values"), "secmi": ("secmi", "values")}


# ----------------------------------------------------------------------------- measurements

def gsa_columns(run: Run) -> np.ndarray:
    """The grid columns GSA reads: :data:`GSA_POINTS` evenly spread points of the trajectory grid.

    GSA uses 10 equidistant timesteps; taking them on the trajectory grid lets
    GSA_2 read the per-layer norms of the features' own backward (same noise,
    no second run).  On a grid of 10 points (every 100th step) they are exactly
    0, 100, ..., 900.
    """
    n = len(run.grid)
    return np.unique(np.linspace(0, n - 1, min(GSA_POINTS, n)).round().astype(int))


def gsa_timesteps(run: Run) -> list[int]:
    return [int(t) for t in run.grid[gsa_columns(run)]]


def measure(target: Target, method: str, split: str, *, progress: bool = True) -> dict:
    """Raw measurements of ``method`` on one split: ``{"values": (N, ...), ..., "seconds_per_image": s}``.

    ``values`` is (N, T) over :data:`BASELINE_TIMESTEPS` for loss, pia, pian, sima and
    secmi (lower = member; sima adds ``l2``, the squared l2 norm of the same
    prediction; secmi adds ``residuals`` (N, T, C, H, W)), (N, layers)
    for gsa1 / gsa2 (at :func:`gsa_timesteps`; gsa2 from the features' own
    backward), and the trajectory features ``loss``, ``grad_x``, ``grad_theta``
    (N, grid) for ``trajectory``.
    """
    if method not in MEASURES:
        raise ValueError(f"unknown measurement {method!r}; choose from {MEASURES}")
    if method == "trajectory":
        return features(target, split, progress=progress, seconds=True)
    if method == "gsa2":  # the features' per-layer norms at GSA's timesteps, averaged over them
        f = features(target, split, progress=progress, seconds=True, layers=True)
        cols = gsa_columns(target.run)
        return {"values": f[LAYERS][:, cols].mean(1),
                "seconds_per_image": f["seconds_per_image"] * len(cols) / len(target.run.grid)}
    ts, compute, shapes, code = _peer_measurement(target, method, split)
    return chunked(target, split, f"attack-{method}", {"timesteps": list(ts), "k": SECMI_K}, code, compute, shapes,
                   progress=progress)


def _peer_measurement(target: Target, method: str, split: str):
    """``(timesteps, compute, shapes, code version)`` of a peer's measurement, for :func:`chunked`."""
    if method == "loss":   # the trajectory kernel's loss, same per-sample noise (seed, id, t), forward passes only
        ts, seed = BASELINE_TIMESTEPS["loss"], target.noise_seed(split)
        compute = lambda model, part, cb: {"values": trajectory.trajectory_features(  # noqa: E731
            *model, part.images, list(ts), seed=seed, ids=part.ids, features=["loss"], cond=part.cond)["loss"]}
        return ts, compute, {"values": (len(ts),)}, code_version(trajectory, persample)
    if method in ("pia", "pian"):
        ts = BASELINE_TIMESTEPS[method]
        compute = lambda model, part, cb: {"values": pia.pia_distance(*model, part.images, list(ts),  # noqa: E731
                                                                      normalized=method == "pian", cond=part.cond)}
        return ts, compute, {"values": (len(ts),)}, code_version(pia)
    if method == "sima":
        ts = BASELINE_TIMESTEPS["sima"]

        def compute(model, part, cb):   # l4 (SimA's score) and l2 from the same forward passes
            norms = sima.sima_norms(*model, part.images, list(ts), powers=(4, 2), cond=part.cond)
            return {"values": norms[4], "l2": norms[2]}
        return ts, compute, {"values": (len(ts),), "l2": (len(ts),)}, code_version(sima)
    if method == "secmi":
        ts = BASELINE_TIMESTEPS["secmi"]

        def compute(model, part, cb):
            errors, maps = secmi.secmi_t_error(*model, part.images, list(ts), SECMI_K, return_residuals=True,
                                               cond=part.cond)
            return {"values": errors, "residuals": maps}
        return ts, compute, {"values": (len(ts),), "residuals": (len(ts), *target.config.space_shape)}, \
            code_version(secmi, ddim)
    ts, seed = gsa_timesteps(target.run), target.noise_seed(split)   # gsa1
    compute = lambda model, part, cb: {"values": gsa.gsa_features(*model, part.images, ts, variant=1,  # noqa: E731
                                                                  seed=seed, ids=part.ids, cond=part.cond)}
    return ts, compute, {"values": (None,)}, code_version(gsa, trajectory, persample)


def measured(target: Target, method: str, split: str, *, progress: bool = True) -> dict:
    """:func:`measure` of a split; a codec-free subset (``heldout#150``) is read from the whole split's
    measurements instead of being computed again.  What is computed (not read from the cache) shows a
    progress bar unless ``progress`` is False (under the batch driver, on its terminal)."""
    base, count, codec = parse_split(split)
    if count is None or codec != "none":
        return measure(target, method, split, progress=progress)
    full = measure(target, method, base, progress=progress)
    n = len(next(v for v in full.values() if hasattr(v, "shape")))
    pos = subset_positions(target.run.seed, base, n, count)
    return {k: (v[pos] if hasattr(v, "shape") else v) for k, v in full.items()}


def measured_once(target: Target, method: str, split: str) -> dict:
    """:func:`measured`, read once per process: every probe of a comparison reads its columns from the same
    measurements (keyed by the run, the target, the split and the cache folder, which tests change).
    Callers copy what they take."""
    return _measured_once(target.run, target.name, split, method, str(paths.cache_dir()))


@lru_cache(maxsize=64)
def _measured_once(run: Run, target: str, split: str, method: str, cache: str) -> dict:
    return measured(run.target(target), method, split)


# ----------------------------------------------------------------------------- columns

def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown feature family {family!r}; choose from {FAMILIES}")
    return family


def family_timesteps(run: Run, family: str) -> list[int]:
    """The timesteps a family is measured at (for SecMI: its t_sec values)."""
    measurement = SOURCES[_check_family(family)][0]
    if measurement == "trajectory":
        return [int(t) for t in run.grid]
    return [int(t) for t in BASELINE_TIMESTEPS[measurement]]


def columns(run: Run, families: Sequence[str] = FAMILIES) -> list[tuple[str, int]]:
    """Every ``(family, t)`` column of ``families``, family-major."""
    return [(f, t) for f in families for t in family_timesteps(run, f)]


def values(target: Target, split: str, *, families: Sequence[str] = FAMILIES, progress: bool = True,
           read=None) -> dict:
    """``{family: (N, T) raw values}`` of one split (the cached measurements), each measurement read once;
    ``read(measurement)`` replaces :func:`measure` (e.g. :func:`measured_once`, which reads a split's subset)."""
    read = read or (lambda m: measure(target, m, split, progress=progress))
    needed = dict.fromkeys(SOURCES[_check_family(f)][0] for f in families)
    raw = {m: read(m) for m in needed}
    return {f: np.asarray(raw[SOURCES[f][0]][SOURCES[f][1]], dtype=np.float64) for f in families}


def matrix(values: dict, cols: Sequence[tuple[str, int]], run: Run) -> np.ndarray:
    """The log-feature matrix (N, len(cols)) of ``cols`` from :func:`values`' output."""
    index = {f: {t: j for j, t in enumerate(family_timesteps(run, f))} for f in dict.fromkeys(f for f, _ in cols)}
    return log_features(np.stack([values[f][:, index[f][int(t)]] for f, t in cols], axis=1))


def seconds_of(cols: Sequence[tuple[str, int]], per_pass: dict) -> float:
    """Seconds per image of ``cols`` from measured per-pass seconds (:func:`provlib.study.membership.per_pass_seconds`:
    one forward, and one forward + backward row): a backward comes with its forward."""
    p = passes_of(cols)
    return float((p["forward"] - p["backward"]) * per_pass["forward"] + p["backward"] * per_pass["forward+backward"])
