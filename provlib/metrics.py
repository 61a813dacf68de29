"""Honest metrics for membership / provenance attacks (numpy only).

Conventions
-----------
* Binary labels are 0/1, with 1 the positive class (e.g. "member").
* A HIGHER score means MORE LIKELY POSITIVE; a threshold ``thr`` predicts
  positive where ``score >= thr``.
* Tied scores are never split: a tie group is either all above the threshold
  or all below it, so no operating point is reached by breaking ties at random.
* Low-FPR numbers are only as good as the number of negatives behind them;
  :func:`binary_report` states ``fp_allowed@X%`` (the number of false
  positives a threshold may make) next to each ``tpr@X%fpr``.
* Multi-class labels are integers ``0..k-1`` indexing the columns of an
  ``(n, k)`` score / probability matrix.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

MetricFn = Callable[[np.ndarray, np.ndarray], float]

__all__ = [
    "roc_points", "auc", "fp_allowed", "threshold_at_fpr", "tpr_at_fpr",
    "balanced_accuracy", "best_threshold", "asr",
    "macro_auc", "macro_tpr_at_fpr", "multiclass_balanced_accuracy",
    "bootstrap_ci", "bootstrap_difference", "binary_report", "fpr_label", "operating_point",
]


# ----------------------------------------------------------------- validation
def _check_labels(labels: ArrayLike) -> np.ndarray:
    """1-D 0/1 labels with both classes present, as an int array."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ValueError("empty input: no labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0/1, got values {np.unique(y)[:10]}")
    y = y.astype(np.int64)
    if y.min() == y.max():
        raise ValueError(f"only one class present in labels (all {y[0]}); need both 0 and 1")
    return y


def _check_scores(scores: ArrayLike, n: int, ndim: int = 1) -> np.ndarray:
    """Float scores of the given ndim and length ``n``, without NaN."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != ndim:
        raise ValueError(f"scores must be {ndim}-D, got shape {s.shape}")
    if s.shape[0] != n:
        raise ValueError(f"length mismatch: {n} labels but {s.shape[0]} scores")
    if np.isnan(s).any():
        raise ValueError(f"scores contain {int(np.isnan(s).sum())} NaN value(s)")
    return s


def _check_binary(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = _check_labels(labels)
    return y, _check_scores(scores, len(y))


def _check_max_fpr(max_fpr: float) -> float:
    if not 0.0 < max_fpr < 1.0:
        raise ValueError(f"max_fpr must lie in (0, 1), got {max_fpr}")
    return float(max_fpr)


def _check_multiclass(labels: ArrayLike, probs: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels 0..k-1 (every class present) and an (n, k) score matrix."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    p = _check_scores(probs, len(y), ndim=2)
    k = p.shape[1]
    if k < 2:
        raise ValueError(f"need at least 2 score columns, got {k}")
    if not np.isin(y, np.arange(k)).all():
        raise ValueError(f"labels must be integers in 0..{k - 1}, got values {np.unique(y)[:10]}")
    y = y.astype(np.int64)
    missing = np.setdiff1d(np.arange(k), y)
    if missing.size:
        raise ValueError(f"class(es) {missing.tolist()} absent from labels; one-vs-rest needs all {k}")
    return y, p


# -------------------------------------------------------------------- binary
def roc_points(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve over every distinct threshold.

    Returns ``(fpr, tpr, thresholds)``, thresholds decreasing, the first being
    ``+inf`` (nothing predicted positive, the point (0, 0)).  Point ``i`` is the
    rate of ``score >= thresholds[i]``; tie groups are all in or all out.
    Equal to ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    """
    y, s = _check_binary(labels, scores)
    return _roc(y, s)


def _roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`roc_points` of checked 0/1 labels and float scores."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # end of each tie group
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    fpr = np.r_[0, fps] / fps[-1]
    tpr = np.r_[0, tps] / tps[-1]
    return fpr, tpr, np.r_[np.inf, s[last]]


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given the mean rank of their group."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC as the Mann-Whitney statistic: P(s_pos > s_neg) + 1/2 P(s_pos = s_neg)."""
    y, s = _check_binary(labels, scores)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    rank_sum = _average_ranks(s)[y == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def fp_allowed(max_fpr: float, n_neg: int) -> int:
    """Largest number of false positives ``k`` with ``k / n_neg <= max_fpr``.

    Normally ``floor(max_fpr * n_neg)``; computed so that it agrees exactly
    with the float comparison ``fpr <= max_fpr`` used by :func:`tpr_at_fpr`.
    """
    max_fpr = _check_max_fpr(max_fpr)
    if isinstance(n_neg, bool) or not isinstance(n_neg, (int, np.integer)) or n_neg < 1:
        raise ValueError(f"fp_allowed needs a positive number of negatives, got n_neg={n_neg!r}: "
                         "no FPR can be measured without negatives")
    k = int(np.floor(max_fpr * n_neg))
    while (k + 1) / n_neg <= max_fpr:
        k += 1
    while k > 0 and k / n_neg > max_fpr:
        k -= 1
    return k


def threshold_at_fpr(labels: ArrayLike, scores: ArrayLike, max_fpr: float) -> float:
    """Threshold of the best TPR among thresholds whose FPR is AT MOST ``max_fpr``.

    Among equal TPRs the highest threshold (lowest FPR) wins.  ``+inf`` when
    only "predict nothing positive" qualifies.
    """
    max_fpr = _check_max_fpr(max_fpr)
    fpr, tpr, thr = roc_points(labels, scores)
    ok = np.flatnonzero(fpr <= max_fpr)           # never empty: point 0 has fpr 0
    return float(thr[ok[np.argmax(tpr[ok])]])


def tpr_at_fpr(labels: ArrayLike, scores: ArrayLike, max_fpr: float) -> float:
    """Best TPR among thresholds with FPR <= ``max_fpr`` (never the point just above).

    0.0 when no threshold except "predict nothing positive" qualifies.
    """
    max_fpr = _check_max_fpr(max_fpr)
    fpr, tpr, _ = roc_points(labels, scores)
    return float(tpr[fpr <= max_fpr].max())


def balanced_accuracy(labels: ArrayLike, predictions: ArrayLike) -> float:
    """Balanced accuracy (the attack success rate, ASR): (TPR + TNR) / 2 of 0/1 predictions."""
    y = _check_labels(labels)
    p = np.asarray(predictions)
    if p.shape != y.shape:
        raise ValueError(f"length mismatch: labels {y.shape} vs predictions {p.shape}")
    if not np.isin(p, (0, 1)).all():
        raise ValueError("predictions must be 0/1")
    tpr = np.mean(p[y == 1] == 1)
    tnr = np.mean(p[y == 0] == 0)
    return float((tpr + tnr) / 2.0)


def best_threshold(labels: ArrayLike, scores: ArrayLike) -> float:
    """Threshold maximising balanced accuracy on these (TRAINING) rows.

    Returns the midpoint between the chosen tie group's score and the next
    lower distinct score (same predictions on these rows, less biased on new
    ones); ``+inf`` if predicting nothing positive is best.  Apply it to
    held-out rows with :func:`asr`.
    """
    fpr, tpr, thr = roc_points(labels, scores)
    i = int(np.argmax(tpr - fpr))                 # balanced acc = (1 + tpr - fpr) / 2
    if i == 0 or i == len(thr) - 1:
        return float(thr[i])
    mid = (thr[i] + thr[i + 1]) / 2.0
    return float(mid) if np.isfinite(mid) else float(thr[i])


def asr(labels: ArrayLike, scores: ArrayLike, threshold: float) -> float:
    """Attack success rate: balanced accuracy of ``scores >= threshold``."""
    y, s = _check_binary(labels, scores)
    if np.isnan(threshold):
        raise ValueError("asr: threshold is NaN")
    return balanced_accuracy(y, (s >= threshold).astype(np.int64))


# --------------------------------------------------------------- multi-class
def macro_auc(labels: ArrayLike, probs: ArrayLike) -> float:
    """One-vs-rest ROC AUC averaged over classes (column c scores class c)."""
    y, p = _check_multiclass(labels, probs)
    return float(np.mean([auc(y == c, p[:, c]) for c in range(p.shape[1])]))


def macro_tpr_at_fpr(labels: ArrayLike, probs: ArrayLike, max_fpr: float) -> float:
    """One-vs-rest TPR at FPR <= ``max_fpr``, averaged over classes."""
    y, p = _check_multiclass(labels, probs)
    return float(np.mean([tpr_at_fpr(y == c, p[:, c], max_fpr) for c in range(p.shape[1])]))


def multiclass_balanced_accuracy(labels: ArrayLike, predictions: ArrayLike) -> float:
    """Mean per-class recall (mean of the row-normalised confusion-matrix diagonal).

    Classes are those present in ``labels``.
    """
    y = np.asarray(labels)
    p = np.asarray(predictions)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    if p.shape != y.shape:
        raise ValueError(f"length mismatch: labels {y.shape} vs predictions {p.shape}")
    return float(np.mean([np.mean(p[y == c] == c) for c in np.unique(y)]))


# ----------------------------------------------------------------- bootstrap
def _bootstrap_many(fns: Mapping[str, MetricFn], labels: ArrayLike, scores: ArrayLike,
                    n_boot: int, seed: int, alpha: float) -> dict[str, tuple[float, float]]:
    """Percentile intervals of several metrics over the SAME stratified resamples."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.size == 0 or len(s) != len(y):
        raise ValueError(f"need non-empty 1-D labels and scores of equal length, got {y.shape}, {s.shape}")
    cis = _bootstrap_vector(lambda a, b: np.array([fn(a, b) for fn in fns.values()]), y, s, n_boot, seed, alpha)
    return dict(zip(fns, cis))


def bootstrap_ci(metric_fn: MetricFn, labels: ArrayLike, scores: ArrayLike, n_boot: int = 1000,
                 seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Stratified percentile bootstrap ``(low, high)`` interval of ``metric_fn(labels, scores)``.

    Each class is resampled separately with replacement, so class counts are
    kept.  ``scores`` may be 1-D (binary) or (n, k) (multi-class).
    """
    return _bootstrap_many({"m": metric_fn}, labels, scores, n_boot, seed, alpha)["m"]


def bootstrap_difference(metric_fn: MetricFn, labels: ArrayLike, a: ArrayLike, b: ArrayLike, *, n_boot: int = 1000,
                         seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Paired stratified percentile bootstrap ``(low, high)`` of ``metric_fn(labels, a) - metric_fn(labels, b)``:
    two methods' scores ``a`` and ``b`` on the same rows, each replicate resampling the rows once for both
    (the same resamples as :func:`bootstrap_ci` with the same seed).  ``a``, ``b``: (n,) or (n, k)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    y = np.asarray(labels)
    if a.shape != b.shape or y.ndim != 1 or len(a) != len(y) or y.size == 0:
        raise ValueError(f"paired scores must cover the same rows: labels {y.shape}, a {a.shape}, b {b.shape}")
    both = np.stack([a, b], axis=-1)
    ((lo, hi),) = _bootstrap_vector(lambda yy, ss: np.array([metric_fn(yy, ss[..., 0]) - metric_fn(yy, ss[..., 1])]),
                                    y, both, n_boot, seed, alpha)
    return lo, hi


def bootstrap_mean(values: ArrayLike, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05):
    """``(mean, low, high)``: the mean of ``values`` over their first axis (images, models) and its
    percentile bootstrap interval, the rows resampled with replacement.

    For (n,) values the three are floats; for (n, k) values, (k,) arrays (one interval per column, the
    same resamples for every column).  Float values keep their precision; others are taken as float64.
    """
    v = np.asarray(values)
    v = v if v.dtype.kind == "f" else v.astype(np.float64)
    if v.ndim not in (1, 2) or len(v) == 0:
        raise ValueError(f"need non-empty (n,) or (n, k) values, got shape {v.shape}")
    if n_boot < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need n_boot >= 1 and alpha in (0, 1), got {n_boot}, {alpha}")
    rng = np.random.default_rng(seed)
    means = np.stack([v[rng.integers(0, len(v), len(v))].mean(0) for _ in range(n_boot)])
    lo, hi = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    if v.ndim == 1:
        return float(v.mean()), float(lo), float(hi)
    return v.mean(0), lo, hi


# -------------------------------------------------------------------- report
def fpr_label(max_fpr: float) -> str:
    """``0.1 -> '10%'``, ``0.001 -> '0.1%'``."""
    return f"{100 * max_fpr:g}%"


def binary_report(labels: ArrayLike, scores: ArrayLike, *, threshold: float,
                  fprs: Sequence[float] = (0.1, 0.01, 0.001), n_boot: int = 1000,
                  seed: int = 0, alpha: float = 0.05) -> dict:
    """AUC, TPR at each FPR and ASR on (held-out) rows, each with a bootstrap CI.

    ``threshold`` is the ASR threshold chosen on TRAINING rows
    (:func:`best_threshold`).  Keys: ``n_pos``, ``n_neg``, ``threshold``,
    ``auc``, ``tpr@10%fpr``, ``fp_allowed@10%`` (per entry of ``fprs``),
    ``asr``, and ``<metric>_lo`` / ``<metric>_hi`` for every metric.
    """
    y, s = _check_binary(labels, scores)
    if np.isnan(threshold):
        raise ValueError("binary_report: threshold is NaN; pass the threshold chosen on training rows "
                         "(best_threshold), +inf to predict nothing positive")
    fprs = [_check_max_fpr(f) for f in fprs]
    names = ["auc", *[f"tpr@{fpr_label(f)}fpr" for f in fprs], "asr"]  # the order of _binary_metrics
    n_pos = int(y.sum())
    out: dict = {"n_pos": n_pos, "n_neg": len(y) - n_pos, "threshold": float(threshold)}
    for f in fprs:
        out[f"fp_allowed@{fpr_label(f)}"] = fp_allowed(f, out["n_neg"])
    point = _binary_metrics(y, s, fprs, threshold)
    cis = _bootstrap_vector(lambda a, b: _binary_metrics(a, b, fprs, threshold), y, s, n_boot, seed, alpha)
    for j, name in enumerate(names):
        out[name] = float(point[j])
        out[f"{name}_lo"], out[f"{name}_hi"] = cis[j]
    return out


def _binary_metrics(y: np.ndarray, s: np.ndarray, fprs: Sequence[float], threshold: float) -> np.ndarray:
    """AUC, TPR at each FPR, and ASR from one ROC (one sort): the values of :func:`auc`,
    :func:`tpr_at_fpr` and :func:`asr` (the AUC as the area under the tie-aware ROC, which is the
    Mann-Whitney statistic)."""
    fpr, tpr, _ = _roc(y, s)
    pred = s >= threshold
    asr_value = (np.mean(pred[y == 1]) + np.mean(~pred[y == 0])) / 2.0
    return np.array([np.trapezoid(tpr, fpr), *[tpr[fpr <= f].max() for f in fprs], asr_value])


def _bootstrap_vector(fn, y: np.ndarray, s: np.ndarray, n_boot: int, seed: int,
                      alpha: float) -> list[tuple[float, float]]:
    """Percentile intervals of every entry of ``fn(labels, scores)`` over stratified resamples
    (the same resamples, in the same order, as :func:`bootstrap_ci` with the same seed)."""
    if n_boot < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need n_boot >= 1 and alpha in (0, 1), got {n_boot}, {alpha}")
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(y == c) for c in np.unique(y)]
    values = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in strata])
        values.append(fn(y[idx], s[idx]))
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    lo, hi = np.percentile(np.array(values), q, axis=0)
    return [(float(a), float(b)) for a, b in zip(lo, hi)]


def operating_point(labels: ArrayLike, scores: ArrayLike, threshold: float, *, n_boot: int = 1000,
                    seed: int = 0, alpha: float = 0.05) -> dict:
    """TPR and FPR of ``scores >= threshold`` on these (evaluation) rows, with bootstrap intervals.

    For a threshold fixed beforehand, e.g. :func:`threshold_at_fpr` on training
    rows: the operating point an attacker actually gets, whose FPR may exceed
    the target it was calibrated for.  Keys ``tpr``, ``fpr`` and their
    ``_lo`` / ``_hi``.
    """
    y, s = _check_binary(labels, scores)
    if np.isnan(threshold):
        raise ValueError("operating_point: threshold is NaN")

    def rates(a, b):
        pred = b >= threshold
        return np.array([np.mean(pred[a == 1]), np.mean(pred[a == 0])])

    point = rates(y, s)
    (tlo, thi), (flo, fhi) = _bootstrap_vector(rates, y, s, n_boot, seed, alpha)
    return {"tpr": float(point[0]), "fpr": float(point[1]), "tpr_lo": tlo, "tpr_hi": thi, "fpr_lo": flo,
            "fpr_hi": fhi}
