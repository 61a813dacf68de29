"""UNet passes per image: the one place that counts them, for a set of signal columns and for each method.

A **column** is ``(family, t)``: one per-image statistic of the model at
timestep t, computed by one of the kernels (:mod:`provlib.detector.columns`
lists them).  Computing columns together shares passes: the loss and both
gradient norms at one t share one forward (the gradients one backward),
SimA's two norms at one t one forward, PIA's columns one
eps0 = eps_theta(x0, 0) forward (its own) and one forward per t, and SecMI's
t_sec values one DDIM inversion (:func:`provlib.kernels.ddim.t_error_calls`).
:func:`passes_of` counts each pass once.

Every method of :data:`provlib.attacks.ATTACKS` reads some of these columns
(:func:`method_columns`), so :func:`passes` is the cost of its columns.  A
backward through r rows of one image counts r passes.
"""
from __future__ import annotations

from typing import Sequence

from ..kernels.ddim import t_error_calls

FAMILIES = ("loss", "grad_x", "grad_theta", "sima_l2", "sima_l4", "pia", "secmi")
TRAJECTORY = ("loss", "grad_x", "grad_theta")
BACKWARD = ("grad_x", "grad_theta")
SECMI_K = 10   # SecMI's DDIM step (t_sec - k -> t_sec)


def check_columns(cols) -> list[tuple[str, int]]:
    """``[(family, t), ...]`` with known families and integer timesteps, none repeated."""
    out = []
    for c in cols:
        try:
            family, t = c
        except (TypeError, ValueError):
            raise ValueError(f"a column is (family, timestep), got {c!r}") from None
        if family not in FAMILIES:
            raise ValueError(f"unknown feature family {family!r}; choose from {FAMILIES}")
        if isinstance(t, bool) or int(t) != t:
            raise ValueError(f"column {c!r}: the timestep must be an integer")
        out.append((str(family), int(t)))
    if len(set(out)) != len(out):
        raise ValueError(f"repeated columns in {out}")
    if not out:
        raise ValueError("no columns")
    return out


def passes_of(cols: Sequence[tuple[str, int]], *, k: int = SECMI_K) -> dict:
    """UNet passes per image of computing the columns ``cols`` together: ``{"forward", "backward"}``,
    each pass counted once however many columns read it."""
    forward, backward, secmi = set(), set(), set()
    for family, t in check_columns(cols):
        if family in TRAJECTORY:
            forward.add(("noised", t))
            if family in BACKWARD:
                backward.add(t)
        elif family in ("sima_l2", "sima_l4"):
            forward.add(("clean", t))
        elif family == "pia":
            forward |= {("pia", "eps0"), ("pia", t)}
        else:
            secmi.add(t - k)
    calls = t_error_calls(sorted(secmi), k) if secmi else 0
    return {"forward": len(forward) + calls, "backward": len(backward)}


def total_passes(cols: Sequence[tuple[str, int]]) -> int:
    """Forward plus backward passes per image of ``cols`` (the budget's unit)."""
    p = passes_of(cols)
    return p["forward"] + p["backward"]


# the columns each method reads at its timesteps (for secmi_* and sedid_*: SecMI's t_sec, SeDID's T_SE)
METHOD_FAMILIES = {"loss": ("loss",), "sima": ("sima_l4",), "pia": ("pia",), "pian": ("pia",),
                   "secmi_stat": ("secmi",), "secmi_nn": ("secmi",), "sedid_stat": ("secmi",),
                   "sedid_nn": ("secmi",), "gsa1": ("grad_theta",), "gsa2": ("grad_theta",), "blind": ()}


def method_columns(method: str, timesteps: Sequence[int] = (), *, features: Sequence[str] = ()) -> list:
    """The ``(family, t)`` columns ``method`` computes on ``timesteps``; for ``trajectory``, those of ``features``
    (the feature families it uses)."""
    if method == "trajectory":
        families = tuple(features)
    elif method in METHOD_FAMILIES:
        families = METHOD_FAMILIES[method]
    else:
        raise ValueError(f"unknown method {method!r}; choose from {sorted([*METHOD_FAMILIES, 'trajectory'])}")
    return [(f, int(t)) for f in families for t in timesteps]


def passes(method: str, timesteps: Sequence[int] = (), *, k: int = SECMI_K, features: Sequence[str] = ()) -> dict:
    """UNet passes per image of ``method`` on ``timesteps``: ``{"forward": f, "backward": b}``
    (the passes of :func:`method_columns`; ``k`` is the DDIM step of SecMI and SeDID)."""
    cols = method_columns(method, timesteps, features=features)
    return passes_of(cols, k=k) if cols else {"forward": 0, "backward": 0}


__all__ = ["FAMILIES", "TRAJECTORY", "BACKWARD", "SECMI_K", "METHOD_FAMILIES", "check_columns", "passes_of",
           "total_passes", "method_columns", "passes"]
