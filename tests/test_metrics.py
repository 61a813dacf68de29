"""provlib.metrics against scikit-learn as an independent reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score, roc_curve

from provlib import metrics as M


def _binary(seed: int, n: int = 300, ties: bool = False, pos_frac: float = 0.4):
    """Labels and scores with signal; ``ties`` gives integer scores in 0..5."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < pos_frac).astype(int)
    y[:2] = [0, 1]
    s = rng.normal(size=n) + 0.8 * y
    if ties:
        s = np.clip(np.round(s + 2.5), 0, 5)
    return y, s


CASES = [(seed, ties) for seed in range(4) for ties in (False, True)]


@pytest.mark.parametrize("seed,ties", CASES)
def test_roc_points_match_sklearn(seed, ties):
    y, s = _binary(seed, ties=ties)
    fpr, tpr, thr = M.roc_points(y, s)
    ref_fpr, ref_tpr, ref_thr = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    np.testing.assert_array_equal(thr, ref_thr)
    if ties:
        assert len(thr) <= 7        # one point per distinct score, plus +inf


@pytest.mark.parametrize("seed,ties", CASES)
def test_auc_matches_sklearn(seed, ties):
    y, s = _binary(seed, ties=ties)
    assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_hand_computed():
    # pairs (pos, neg): (0.35 > 0.1), (0.35 < 0.4), (0.8 > both) -> 3/4
    assert M.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # a tie counts 1/2: pos 1 vs neg {1, 0} -> (0.5 + 1) / 2
    assert M.auc([1, 0, 0], [1, 1, 0]) == pytest.approx(0.75)
    assert M.auc([1, 0], [2, 2]) == pytest.approx(0.5)
    assert M.auc([1, 0], [1, 2]) == 0.0


@pytest.mark.parametrize("seed,ties", CASES)
@pytest.mark.parametrize("target", [0.5, 0.1, 0.05, 0.01, 0.001])
def test_tpr_at_fpr_never_exceeds_target(seed, ties, target):
    y, s = _binary(seed, ties=ties)
    tpr = M.tpr_at_fpr(y, s, target)
    thr = M.threshold_at_fpr(y, s, target)
    pred = s >= thr
    achieved_fpr = pred[y == 0].mean()
    assert achieved_fpr <= target
    assert pred[y == 1].mean() == pytest.approx(tpr)
    ref_fpr, ref_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert tpr == pytest.approx(ref_tpr[ref_fpr <= target].max())


def test_tpr_at_fpr_hand_computed():
    # descending: P P N P N P N N N N  (4 positives, 6 negatives)
    y = [1, 1, 0, 1, 0, 1, 0, 0, 0, 0]
    s = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert M.tpr_at_fpr(y, s, 0.1) == 0.5          # 0 FP allowed (0.6 < 1): 2 of 4
    assert M.tpr_at_fpr(y, s, 1 / 6) == 0.75       # 1 FP allowed: threshold 7
    assert M.tpr_at_fpr(y, s, 0.3) == 0.75         # 1 FP (2/6 > 0.3): not the point above
    assert M.tpr_at_fpr(y, s, 0.34) == 1.0         # 2 FP allowed
    # a tie group is all in or all out: P and N tied at the top
    assert M.tpr_at_fpr([1, 0, 1, 0], [5, 5, 3, 1], 0.4) == 0.0
    assert M.threshold_at_fpr([1, 0, 1, 0], [5, 5, 3, 1], 0.4) == math.inf
    # the top score is a negative and only 0 FP are allowed -> 0.0
    assert M.tpr_at_fpr([0, 1, 1], [3, 2, 1], 0.5) == 0.0


def test_fp_allowed_matches_fpr_comparison():
    assert M.fp_allowed(0.29, 100) == 29           # 0.29 * 100 = 28.999999999999996
    assert M.fp_allowed(0.01, 99) == 0
    assert M.fp_allowed(0.1, 30) == 3
    for n in range(1, 200):
        for f in (0.1, 0.07, 0.01, 0.29, 0.001):
            k = M.fp_allowed(f, n)
            assert k / n <= f and (k + 1) / n > f


@pytest.mark.parametrize("seed", range(4))
def test_balanced_accuracy_and_asr_match_sklearn(seed):
    y, s = _binary(seed)
    pred = (s > 0.3).astype(int)
    assert M.balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))
    assert M.asr(y, s, 0.3) == pytest.approx(balanced_accuracy_score(y, s >= 0.3))


@pytest.mark.parametrize("seed,ties", CASES)
def test_best_threshold_is_optimal_on_training_rows(seed, ties):
    y, s = _binary(seed, ties=ties)
    thr = M.best_threshold(y, s)
    best = max(balanced_accuracy_score(y, s >= t) for t in np.unique(s))
    assert M.asr(y, s, thr) == pytest.approx(best)
    if ties:   # midpoint between distinct integer scores: never equal to a score
        assert thr not in set(s.tolist())


def _multiclass(seed: int, n: int = 300, k: int = 3, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    logits = rng.normal(size=(n, k)) + 1.0 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if ties:   # tenths that still sum to 1: many tied scores per column
        p = np.array([rng.multinomial(10, row) for row in p]) / 10.0
    return y, p


@pytest.mark.parametrize("seed,ties", CASES)
def test_macro_auc_matches_sklearn(seed, ties):
    y, p = _multiclass(seed, ties=ties)
    ref = roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert M.macro_auc(y, p) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("seed,ties", CASES)
def test_macro_tpr_at_fpr_matches_per_class_sklearn(seed, ties):
    y, p = _multiclass(seed, ties=ties)
    ref = []
    for c in range(3):
        fpr, tpr, _ = roc_curve(y == c, p[:, c], drop_intermediate=False)
        ref.append(tpr[fpr <= 0.05].max())
    assert M.macro_tpr_at_fpr(y, p, 0.05) == pytest.approx(np.mean(ref))


@pytest.mark.parametrize("seed", range(4))
def test_multiclass_balanced_accuracy_matches_sklearn(seed):
    y, p = _multiclass(seed)
    pred = p.argmax(1)
    assert M.multiclass_balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))
    assert M.multiclass_balanced_accuracy([0, 0, 1, 2], [0, 1, 1, 0]) == pytest.approx((0.5 + 1 + 0) / 3)


def test_bootstrap_ci_contains_estimate_and_narrows():
    widths = []
    for n in (100, 2000):
        y, s = _binary(0, n=n)
        lo, hi = M.bootstrap_ci(M.auc, y, s, n_boot=300, seed=1)
        assert lo <= M.auc(y, s) <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2                # ~ 1/sqrt(n): ratio ~ 4.5
    assert M.bootstrap_ci(M.auc, y, s, n_boot=50, seed=3) == M.bootstrap_ci(M.auc, y, s, n_boot=50, seed=3)


def test_bootstrap_is_stratified_and_handles_multiclass():
    y, p = _multiclass(0, n=120)
    counts = []

    def record(labels, probs):
        counts.append(np.bincount(labels, minlength=3))
        return M.macro_auc(labels, probs)

    lo, hi = M.bootstrap_ci(record, y, p, n_boot=50)
    assert all((c == np.bincount(y)).all() for c in counts)
    assert lo <= M.macro_auc(y, p) <= hi


def test_binary_report_keys_and_values():
    y_tr, s_tr = _binary(0, n=400)
    y, s = _binary(1, n=1500)
    thr = M.best_threshold(y_tr, s_tr)
    rep = M.binary_report(y, s, threshold=thr, n_boot=100)
    n_neg = int((y == 0).sum())
    assert rep["n_pos"] == int(y.sum()) and rep["n_neg"] == n_neg
    assert rep["fp_allowed@10%"] == math.floor(0.1 * n_neg)
    assert rep["fp_allowed@1%"] == math.floor(0.01 * n_neg)
    assert rep["fp_allowed@0.1%"] == math.floor(0.001 * n_neg)
    assert rep["auc"] == pytest.approx(roc_auc_score(y, s))
    assert rep["tpr@1%fpr"] == M.tpr_at_fpr(y, s, 0.01)
    assert rep["asr"] == pytest.approx(balanced_accuracy_score(y, s >= thr))
    for name in ("auc", "tpr@10%fpr", "tpr@1%fpr", "tpr@0.1%fpr", "asr"):
        assert rep[f"{name}_lo"] <= rep[name] + 1e-12 and rep[name] <= rep[f"{name}_hi"] + 1e-12
    assert (rep["auc_lo"], rep["auc_hi"]) == pytest.approx(M.bootstrap_ci(M.auc, y, s, n_boot=100), abs=1e-12)
    assert (rep["tpr@1%fpr_lo"], rep["tpr@1%fpr_hi"]) == pytest.approx(
        M.bootstrap_ci(lambda a, b: M.tpr_at_fpr(a, b, 0.01), y, s, n_boot=100), abs=1e-12)
    assert (rep["asr_lo"], rep["asr_hi"]) == pytest.approx(
        M.bootstrap_ci(lambda a, b: M.asr(a, b, thr), y, s, n_boot=100), abs=1e-12)


@pytest.mark.parametrize("fn", [M.auc, M.roc_points, lambda y, s: M.tpr_at_fpr(y, s, 0.1),
                                lambda y, s: M.asr(y, s, 0.0)])
@pytest.mark.parametrize("labels,scores,match", [
    ([], [], "empty"),
    ([1, 1, 1], [0.1, 0.2, 0.3], "one class"),
    ([0, 0], [0.1, 0.2], "one class"),
    ([0, 1, 2], [0.1, 0.2, 0.3], "0/1"),
    ([0, 1, -1], [0.1, 0.2, 0.3], "0/1"),
    ([0, 1, 1], [0.1, np.nan, 0.3], "NaN"),
    ([0, 1, 1], [0.1, 0.3], "length mismatch"),
])
def test_bad_binary_input_raises(fn, labels, scores, match):
    with pytest.raises(ValueError, match=match):
        fn(labels, scores)


@pytest.mark.parametrize("max_fpr", [0.0, 1.0, -0.1, 1.5])
def test_max_fpr_outside_unit_interval_raises(max_fpr):
    with pytest.raises(ValueError, match="max_fpr"):
        M.tpr_at_fpr([0, 1], [0.0, 1.0], max_fpr)


def test_bad_multiclass_input_raises():
    y, p = _multiclass(0, n=30)
    with pytest.raises(ValueError, match="absent"):
        M.macro_auc(np.zeros(30, int) + (np.arange(30) % 2), p)
    with pytest.raises(ValueError, match="0..2"):
        M.macro_auc(np.r_[y[:-1], 3], p)
    with pytest.raises(ValueError, match="NaN"):
        M.macro_auc(y, np.where(np.arange(30)[:, None] == 0, np.nan, p))
    with pytest.raises(ValueError, match="length mismatch"):
        M.macro_auc(y[:-1], p)
    with pytest.raises(ValueError, match="length mismatch"):
        M.multiclass_balanced_accuracy(y, y[:-1])
    with pytest.raises(ValueError, match="predictions must be 0/1"):
        M.balanced_accuracy([0, 1], [0, 2])


def test_operating_point_counts_the_rates_of_a_fixed_threshold():
    y = np.r_[np.ones(4, int), np.zeros(6, int)]
    s = np.array([0.9, 0.8, 0.3, 0.2, 0.85, 0.5, 0.4, 0.1, 0.05, 0.0])
    op = M.operating_point(y, s, 0.35, n_boot=50)
    assert op["tpr"] == 0.5 and op["fpr"] == pytest.approx(3 / 6)
    assert op["tpr_lo"] <= op["tpr"] <= op["tpr_hi"] and op["fpr_lo"] <= op["fpr"] <= op["fpr_hi"]
    with pytest.raises(ValueError, match="threshold is NaN"):
        M.operating_point(y, s, float("nan"))


def test_bootstrap_mean_brackets_the_mean_and_is_exact_on_constant_values():
    m, lo, hi = M.bootstrap_mean([0.2, 0.4, 0.6, 0.8], n_boot=500, seed=0)
    assert m == pytest.approx(0.5) and lo < m < hi
    assert M.bootstrap_mean([0.7, 0.7], n_boot=50, seed=0) == (0.7, 0.7, 0.7)


def test_bootstrap_mean_resamples_rows_as_a_direct_loop_does():
    """Against an independent loop: each resample draws n rows with replacement (numpy's choice)."""
    v = np.random.default_rng(1).normal(size=(37, 3))
    rng = np.random.default_rng(5)
    means = np.array([v[rng.choice(len(v), len(v))].mean(0) for _ in range(300)])
    mean, lo, hi = M.bootstrap_mean(v, n_boot=300, seed=5)
    np.testing.assert_allclose(mean, v.mean(0))
    np.testing.assert_allclose(lo, np.quantile(means, 0.025, axis=0))
    np.testing.assert_allclose(hi, np.quantile(means, 0.975, axis=0))
    m1, lo1, hi1 = M.bootstrap_mean(v[:, 1], n_boot=300, seed=5)   # one column: the same resamples
    assert (m1, lo1, hi1) == pytest.approx((mean[1], lo[1], hi[1]))
    with pytest.raises(ValueError, match="non-empty"):
        M.bootstrap_mean([], n_boot=10)
