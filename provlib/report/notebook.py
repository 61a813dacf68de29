"""What every notebook shares: its setup, how it writes a number with its interval, the papers it checks.

A notebook's parameters cell declares the parameters it reads (literal
defaults: the tiny profile's values); its next cell is

    run = report.setup(profile, seed=seed, targets=targets, ...)

which gives the notebook's :class:`~provlib.study.run.Run` (reading a parameter
the cell did not declare is an error naming it), and sets what every figure
and table shares: seaborn's paper theme, pandas' display precision, torch's
global seed.  A value that differs from the profile's is said (a warning here,
and beside every table: :func:`provlib.report.provenance`).
"""
from __future__ import annotations

import random
import warnings
from typing import Mapping

import numpy as np
import pandas as pd
import seaborn as sns
import torch

from ..study.run import Run
from . import verdicts

# the papers whose claims the notebooks test, as claims.md names them
TRACING_THE_ROOTS = "Tracing the Roots (Floros et al., 2025)"
SEDID = "SeDID (Ma et al., 2023)"
TRAINING_DATA_ATTRIBUTION = "Training data attribution (Zhang et al., 2024)"
OURS = "ours (provlib)"


def setup(profile: str, **parameters) -> Run:
    """The notebook's run: exactly the ``parameters`` it declares, labelled ``profile`` (see the module
    docstring); also sets the plotting theme, the display precision, and torch's, numpy's and Python's
    global seeds to ``seed`` (which every notebook declares): what a plotting library draws from them
    (seaborn's strip-plot jitter) is then a function of the run, like every other number."""
    warnings.filterwarnings("ignore", message="IProgress not found")  # plain-text progress bars are fine
    run = Run.declared(profile, **parameters)
    if run.overrides():
        warnings.warn(f"these values differ from profile {profile!r}'s: {run.overrides()} (the batch driver, "
                      f"python -m provlib.batch --profile {profile}, gives every parameter the profile's value)",
                      stacklevel=2)
    torch.manual_seed(run.seed)
    np.random.seed(run.seed)
    random.seed(run.seed)
    sns.set_theme(context="paper", style="whitegrid")
    pd.set_option("display.precision", 3)
    return run


def interval(values: Mapping, key: str, digits: int = 3) -> str:
    """``"0.512 [0.431, 0.590]"``: ``values[key]`` and its interval ``values[key + "_lo"]``, ``values[key + "_hi"]``.

    A TPR at an FPR that the negatives behind it cannot measure (``values`` of a binary report:
    ``fp_allowed@0.1%`` is 0) reads ``"not measurable (125 negatives)"`` instead of a number."""
    f = verdicts.max_fpr_of(key)
    if f is not None and "n_neg" in values and not verdicts.measurable(f, values["n_neg"]):
        return f"not measurable ({int(values['n_neg'])} negatives)"
    return f"{values[key]:.{digits}f} {bracket(values, key, digits)}"


def bracket(values: Mapping, key: str, digits: int = 3) -> str:
    """``"[0.431, 0.590]"``: the interval of ``values[key]`` alone."""
    return f"[{values[key + '_lo']:.{digits}f}, {values[key + '_hi']:.{digits}f}]"


def numbers_say(claims: list[dict], run: Run) -> "IPython.display.Markdown":
    """The notebook's closing "What the numbers say", written from its computed verdicts: the count of
    each outcome on this run, then every claim under its outcome with our number and the interval
    behind it."""
    from IPython.display import Markdown

    head = f"On this run (profile `{run.profile}`, seed {run.seed})"
    if not claims:
        return Markdown(f"{head} no claim was checked.")
    lines = [f"{head}, {len(claims)} claim checks: {verdicts.count_line(c['verdict'].outcome for c in claims)}.", ""]
    for outcome in verdicts.OUTCOMES:
        these = [c for c in claims if c["verdict"].outcome == outcome]
        if these:
            lines.append(f"**{outcome.capitalize()}** ({len(these)}):")
            lines += [f"- {c['claim']} ({c['scope']}): {c['our_value']}; {c['verdict'].interval}" for c in these]
            lines.append("")
    return Markdown("\n".join(lines))
