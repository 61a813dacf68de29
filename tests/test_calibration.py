"""Certified decision thresholds: the stated false-positive rate holds on fresh negatives of every kind."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from provlib.detector import calibration as C

REPS = 400


def test_the_clopper_pearson_bound_and_the_negatives_a_rate_needs():
    assert C.upper_bound(0, 299) <= 0.01 < C.upper_bound(0, 298)
    assert C.negatives_needed(0.01) == 299 and C.negatives_needed(0.001) == 2995
    assert C.upper_bound(0, 10) == pytest.approx(1 - 0.05 ** 0.1)
    assert C.upper_bound(5, 5) == 1.0
    assert C.allowed_false_positives(298, 0.01) is None and C.allowed_false_positives(300, 0.01) == 0
    k = C.allowed_false_positives(2000, 0.01)
    assert C.upper_bound(k, 2000) <= 0.01 < C.upper_bound(k + 1, 2000)


def _exceedance(max_fpr, n_hard, n_easy, pooled=False, seed=0):
    """Share of calibration draws whose threshold lets more than ``max_fpr`` of fresh hard negatives through:
    hard negatives ~ N(0, 1), easy ones ~ N(-4, 1); the realised rate of a threshold is exact (norm.sf)."""
    rng = np.random.default_rng(seed)
    over = 0
    for _ in range(REPS):
        hard, easy = rng.normal(size=n_hard), rng.normal(-4, 1, size=n_easy)
        if pooled:   # the old rule: the pooled negatives' point estimate
            s = np.sort(np.r_[hard, easy])[::-1]
            thr = s[int(math.floor(max_fpr * len(s)))]
        else:
            thr = C.certified_decision({"hard": hard, "easy": easy}, max_fpr).threshold
        over += norm.sf(thr) > max_fpr
    return over / REPS


@pytest.mark.parametrize("max_fpr, n_hard", [(0.01, 300), (0.01, 1500), (0.1, 300)])
def test_the_realised_rate_exceeds_the_stated_one_in_at_most_about_5_percent_of_draws(max_fpr, n_hard):
    # 5% is the guarantee; 3 standard errors of slack for REPS draws
    assert _exceedance(max_fpr, n_hard, n_hard) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / REPS)


def test_the_pooled_point_estimate_it_replaces_fails_that_promise():
    # the test can fail: calibrated on the mixture, the easy kind's share of allowed false positives falls on
    # the hard kind, and the point estimate misses half the time
    assert _exceedance(0.01, 300, 300, pooled=True) > 0.5


def test_the_hardest_kind_decides_and_each_kind_reports_its_bound():
    rng = np.random.default_rng(1)
    hard, easy = rng.normal(size=1000), rng.normal(-3, 1, size=500)
    d = C.certified_decision({"hard": hard, "easy": easy}, 0.01)
    alone = C.certified_decision({"hard": hard}, 0.01)
    assert d.threshold == alone.threshold
    by_kind = {k.kind: k for k in d.kinds}
    assert by_kind["hard"].above == by_kind["hard"].allowed == C.allowed_false_positives(1000, 0.01)
    assert by_kind["easy"].above == int((easy > d.threshold).sum()) == 0
    assert all(k.certified <= 0.01 for k in d.kinds)
    assert d.apply([d.threshold, d.threshold + 1e-9]).tolist() == [False, True]


def test_a_kind_too_small_to_certify_the_rate_refuses_the_decision():
    d = C.certified_decision({"heldout": np.zeros(150), "generated": np.zeros(1000)}, 0.01)
    assert d.refused and d.threshold is None
    assert "150 'heldout' calibration negatives certify at best 1.98%" in d.reason()
    assert "299 per kind are needed for 0.01" in d.reason() and "generated" not in d.reason()
    with pytest.raises(ValueError, match="no decision at FPR <= 0.01"):
        d.apply([0.5])


@pytest.mark.parametrize("bad", [0, 1, float("nan"), float("inf"), -0.1, True])
def test_a_rate_outside_0_1_is_refused(bad):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        C.certified_decision({"a": np.zeros(10)}, bad)
