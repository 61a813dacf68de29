"""Claims judged as a statistician would: four outcomes, each with the interval behind it.

Every claim a notebook checks ends in one :class:`Verdict`:

``holds``
    the 95% interval of what the claim is about lies on the claimed side
    (of 0 for a comparison, of the bar for a threshold claim);
``does not hold``
    it lies on the other side;
``inconclusive``
    it contains the bar: the rows cannot tell;
``at ceiling``
    both methods sit at the metric's ceiling (or floor): the setting cannot
    separate them.

How the interval is made depends on the claim:

* :func:`paired` compares two methods' scores **on the same evaluation
  rows**: a stratified bootstrap resamples the rows once per replicate and
  computes both methods' metric on that resample (AUC, TPR at a low FPR,
  macro AUC of a 3-way probe...), so the interval is the difference's, not
  two overlapping intervals side by side;
* :func:`paired_values` does the same for per-unit values of two methods on
  the same units (TPR per random split, conf per suspect model);
* :func:`unpaired` compares a statistic of two independent samples;
* :func:`against` judges one value's interval against a bar or a range
  ("conf > 0.6", "AUC in 0.60-0.85");
* :func:`every` combines the rows of a claim about several rows ("at every
  budget", "on every target") and counts how many hold, fail, are
  inconclusive or at ceiling.

A TPR at an FPR below one over the number of negatives cannot be measured
(:func:`measurable`): a claim about it is ``inconclusive`` and says why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from .. import metrics

HOLDS, FAILS, INCONCLUSIVE, CEILING = "holds", "does not hold", "inconclusive", "at ceiling"
OUTCOMES = (HOLDS, FAILS, INCONCLUSIVE, CEILING)
ALPHA = 0.05


@dataclass(frozen=True)
class Verdict:
    """The outcome of one claim and the interval behind it.

    ``quantity`` names what ``estimate`` [``lo``, ``hi``] is ("difference", "value", "rows");
    ``counts`` (rows claims) holds the number of rows with each outcome; ``note`` says why a claim
    could not be measured, or anything else the reader needs beside the interval."""

    outcome: str
    estimate: float
    lo: float
    hi: float
    quantity: str = "difference"
    counts: dict = field(default_factory=dict)
    note: str = ""

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}; choose from {OUTCOMES}")

    @property
    def interval(self) -> str:
        """``"difference +0.012 [+0.003, +0.020]"``, the rows' counts, or the note alone."""
        if self.quantity == "rows":
            text = count_line([o for o, n in self.counts.items() for _ in range(n)]).replace("no claims", "no rows")
        elif np.isnan(self.estimate):
            text = ""
        else:
            sign = "+" if self.quantity == "difference" else ""
            text = f"{self.quantity} {_num(self.estimate, sign)} [{_num(self.lo, sign)}, {_num(self.hi, sign)}]"
        return "; ".join(t for t in (text, self.note) if t)

    def __str__(self) -> str:
        return f"{self.outcome}: {self.interval}"


def _num(x: float, sign: str) -> str:
    """Three decimals; a bound that would round to 0 but is not 0 keeps its sign and first digit, so that an
    interval that excludes 0 never prints as touching it."""
    if x != 0 and abs(x) < 5e-4:
        return f"{x:{sign}.0e}"
    return f"{x:{sign}.3f}"


def outcome_of(lo: float, hi: float, bar: float = 0.0, *, below: bool = False) -> str:
    """``holds`` when [lo, hi] lies strictly above ``bar`` (below it with ``below=True``), ``does not
    hold`` when it lies strictly on the other side, else ``inconclusive``."""
    if np.isnan(lo) or np.isnan(hi):
        return INCONCLUSIVE
    above, under = lo > bar, hi < bar
    if below:
        above, under = under, above
    return HOLDS if above else FAILS if under else INCONCLUSIVE


# ------------------------------------------------------------------- metrics by name

def _tpr(max_fpr: float) -> Callable:
    return lambda y, s: metrics.tpr_at_fpr(y, s, max_fpr)


def _macro_tpr(max_fpr: float) -> Callable:
    return lambda y, p: metrics.macro_tpr_at_fpr(y, p, max_fpr)


METRICS: dict[str, Callable] = {
    "auc": metrics.auc, "tpr@10%fpr": _tpr(0.1), "tpr@1%fpr": _tpr(0.01), "tpr@0.1%fpr": _tpr(0.001),
    "macro_auc": metrics.macro_auc, "macro_tpr@10%": _macro_tpr(0.1), "macro_tpr@1%": _macro_tpr(0.01),
    "macro_tpr@0.1%": _macro_tpr(0.001),
    "asr": lambda y, p: metrics.multiclass_balanced_accuracy(y, p.argmax(1)),   # 3-way: the argmax's balanced accuracy
}
BOUNDS = (0.0, 1.0)   # every metric above lies in [0, 1]


def max_fpr_of(metric: str) -> float | None:
    """The FPR a TPR metric is read at (``"tpr@0.1%fpr"`` -> 0.001), ``None`` for other metrics."""
    if not metric.startswith(("tpr@", "macro_tpr@")):
        return None
    return float(metric.split("@")[1].split("%")[0]) / 100


def measurable(max_fpr: float, n_neg: int) -> bool:
    """Whether a TPR at ``max_fpr`` can be read from ``n_neg`` negatives: at least one false positive
    must be allowed, else the number is the TPR at zero false positives, whatever ``max_fpr`` says."""
    return metrics.fp_allowed(max_fpr, int(n_neg)) >= 1


def unmeasurable_note(metric: str, n_neg: int) -> str:
    """Why ``metric`` cannot be read from ``n_neg`` negatives."""
    f = max_fpr_of(metric)
    return (f"not measurable: TPR at {metrics.fpr_label(f)} FPR needs at least {int(np.ceil(1 / f))} negatives, "
            f"these rows have {n_neg}")


def _negatives(y: np.ndarray, metric: str) -> int:
    """The fewest negatives behind ``metric`` (one-vs-rest for 3-way labels)."""
    classes = np.unique(y)
    if metric.startswith("macro_"):
        return int(min((y != c).sum() for c in classes))
    return int((y == 0).sum())


# ------------------------------------------------------------------- comparisons

def paired(labels, a, b, metric: str | Callable = "auc", *, n_boot: int, seed: int,
           bounds: tuple[float, float] = BOUNDS, alpha: float = ALPHA, bar: float = 0.0) -> Verdict:
    """Claim "A >= B" on ``metric``: method A's scores ``a`` and B's ``b`` on the same rows ``labels``
    (with ``bar``: "metric(A) - metric(B) > bar", e.g. ``bar=-0.05`` for "A within 0.05 of B or above").

    ``a``, ``b``: (n,) binary scores (higher = positive) or (n, k) class probabilities for 3-way
    metrics (``macro_auc``, ``macro_tpr@1%``, ``asr``).  The difference metric(A) - metric(B) and its
    percentile interval come from ``n_boot`` stratified resamples of the rows, the same rows for both
    methods.  Both at ``bounds``' ceiling (or floor): ``at ceiling``.
    """
    fn = METRICS[metric] if isinstance(metric, str) else metric
    y = np.asarray(labels)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or len(a) != len(y):
        raise ValueError(f"paired scores must cover the same rows: labels {y.shape}, a {a.shape}, b {b.shape}")
    if isinstance(metric, str) and max_fpr_of(metric) is not None:
        n_neg = _negatives(y, metric)
        if not measurable(max_fpr_of(metric), n_neg):
            return Verdict(INCONCLUSIVE, np.nan, np.nan, np.nan, note=unmeasurable_note(metric, n_neg))
    va, vb = fn(y, a), fn(y, b)
    for bound in bounds:
        if np.isclose(va, bound, atol=1e-12) and np.isclose(vb, bound, atol=1e-12):
            return Verdict(CEILING, 0.0, 0.0, 0.0, note=f"both {bound:g}")
    lo, hi = metrics.bootstrap_difference(fn, y, a, b, n_boot=n_boot, seed=seed, alpha=alpha)
    return Verdict(outcome_of(lo, hi, bar), float(va - vb), lo, hi)


def paired_values(a, b, *, n_boot: int, seed: int, bounds: tuple[float, float] | None = BOUNDS,
                  alpha: float = ALPHA, bar: float = 0.0) -> Verdict:
    """Claim "mean A >= mean B" (with ``bar``: "mean A - mean B > bar") on per-unit values of two methods on
    the same units (random splits, suspect models, images): the units are resampled once per replicate
    for both.  Every value of both at a bound of ``bounds``: ``at ceiling`` (``bounds=None`` for claims
    that a bound satisfies)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired values must be two non-empty (n,) arrays of the same units, got {a.shape}, {b.shape}")
    if bounds is not None:
        for bound in bounds:
            if np.allclose(a, bound, atol=1e-12) and np.allclose(b, bound, atol=1e-12):
                return Verdict(CEILING, 0.0, 0.0, 0.0, note=f"every value {bound:g}")
    d, lo, hi = metrics.bootstrap_mean(a - b, n_boot=n_boot, seed=seed, alpha=alpha)
    return Verdict(outcome_of(lo, hi, bar), d, lo, hi)


def unpaired(a, b, *, n_boot: int, seed: int, statistic: Callable = np.mean, alpha: float = ALPHA,
             bar: float = 0.0) -> Verdict:
    """Claim "statistic(A) - statistic(B) > ``bar``" for two independent samples (each resampled on
    its own); with ``bar`` < 0 or a negative claim, compare the other way round."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 1 or b.ndim != 1 or len(a) == 0 or len(b) == 0:
        raise ValueError(f"need two non-empty (n,) samples, got {a.shape}, {b.shape}")
    rng = np.random.default_rng(seed)
    diffs = [statistic(rng.choice(a, len(a))) - statistic(rng.choice(b, len(b))) for _ in range(n_boot)]
    lo, hi = np.percentile(diffs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return Verdict(outcome_of(lo, hi, bar), float(statistic(a) - statistic(b)), float(lo), float(hi))


def proportions(k_a: int, n_a: int, k_b: int, n_b: int, *, alpha: float = ALPHA) -> Verdict:
    """Claim "rate A >= rate B" for two independent proportions k/n: Newcombe's hybrid score
    interval of the difference (method 10; Wilson intervals of each rate)."""
    from scipy.stats import norm
    z = norm.ppf(1 - alpha / 2)

    def wilson(k, n):
        p = k / n
        c = (p + z * z / (2 * n)) / (1 + z * z / n)
        h = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return p, c - h, c + h

    (pa, la, ua), (pb, lb, ub) = wilson(k_a, n_a), wilson(k_b, n_b)
    d = pa - pb
    lo = d - np.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    hi = d + np.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    if (pa, pb) in ((0.0, 0.0), (1.0, 1.0)):
        return Verdict(CEILING, 0.0, float(lo), float(hi), note=f"both {pa:g}")
    return Verdict(outcome_of(lo, hi), float(d), float(lo), float(hi))


def against(value: float, lo: float, hi: float, *, above: float | None = None, below: float | None = None,
            note: str = "") -> Verdict:
    """A threshold claim judged by the value's interval: "> ``above``", "< ``below``", or both (a range).

    ``holds`` when [lo, hi] lies inside the claimed region, ``does not hold`` when it lies wholly
    outside it (on either side), ``inconclusive`` when it straddles an edge."""
    if above is None and below is None:
        raise ValueError("against() needs a bar: above=, below= or both")
    sides = []
    if above is not None:
        sides.append(outcome_of(lo, hi, above))
    if below is not None:
        sides.append(outcome_of(lo, hi, below, below=True))
    outcome = FAILS if FAILS in sides else HOLDS if all(s == HOLDS for s in sides) else INCONCLUSIVE
    return Verdict(outcome, float(value), float(lo), float(hi), quantity="value", note=note)


def every(rows: Mapping[str, Verdict] | Sequence[Verdict], *, note: str = "") -> Verdict:
    """A claim about several rows: ``holds`` when every row holds, ``does not hold`` when any row does
    not, ``at ceiling`` when every row is, else ``inconclusive``; the counts say how many of each."""
    rows = list(rows.values()) if isinstance(rows, Mapping) else list(rows)
    if not rows:
        raise ValueError("every() needs at least one row")
    counts = {o: sum(r.outcome == o for r in rows) for o in OUTCOMES}
    if counts[FAILS]:
        outcome = FAILS
    elif counts[HOLDS] == len(rows):
        outcome = HOLDS
    elif counts[CEILING] == len(rows):
        outcome = CEILING
    else:
        outcome = INCONCLUSIVE
    return Verdict(outcome, np.nan, np.nan, np.nan, quantity="rows", counts=counts, note=note)


def worst(rows: Mapping[str, Verdict]) -> tuple[str, Verdict]:
    """The row of a several-rows claim a reader should see first: a failing one, else an inconclusive
    one, else any; among those, the smallest estimate."""
    rank = {FAILS: 0, INCONCLUSIVE: 1, CEILING: 2, HOLDS: 3}
    return min(rows.items(), key=lambda kv: (rank[kv[1].outcome], np.nan_to_num(kv[1].estimate, nan=np.inf)))


def count_line(outcomes) -> str:
    """``"12 hold, 3 do not hold, 5 inconclusive, 2 at ceiling"`` (outcomes with no claim left out)."""
    outcomes = list(outcomes)
    words = {HOLDS: ("holds", "hold"), FAILS: ("does not hold", "do not hold"),
             INCONCLUSIVE: ("inconclusive", "inconclusive"), CEILING: ("at ceiling", "at ceiling")}
    parts = []
    for o in OUTCOMES:
        n = outcomes.count(o)
        if n:
            parts.append(f"{n} {words[o][0] if n == 1 else words[o][1]}")
    return ", ".join(parts) or "no claims"
