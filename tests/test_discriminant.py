"""The combined probe's discriminant (provlib.detector.discriminant) against scikit-learn's estimator."""
import numpy as np
import pytest
from sklearn.covariance import empirical_covariance, shrunk_covariance
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from provlib.detector import discriminant as D


def data(k=2, n=120, d=9, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 0.7 * y[:, None] * rng.normal(size=d)
    return X * rng.uniform(0.01, 100, size=d) + rng.normal(size=d), y   # columns on very different scales


def sklearn_rule(X, y, shrinkage="auto"):
    return make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage)).fit(X, y)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("columns", [[4], [0, 3], [8, 1, 5, 2], list(range(9))])
def test_a_subset_fit_equals_scikit_learns_estimator_on_those_columns(k, columns):
    X, y = data(k)
    X_new = data(k, seed=1)[0]
    ours = D.Moments(X, y).fit(columns)
    ref = sklearn_rule(X[:, columns], y)
    np.testing.assert_allclose(ours.decision_function(X_new), ref.decision_function(X_new[:, columns]),
                               rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(ours.predict_proba(X_new), ref.predict_proba(X_new[:, columns]), rtol=1e-7, atol=1e-10)


class FixedShrinkage:
    """A covariance estimator for scikit-learn's LDA: the standardised rows' covariance shrunk by ``s``, rescaled."""

    def __init__(self, s):
        self.s = s

    def fit(self, X):
        sc = StandardScaler().fit(X)
        cov = shrunk_covariance(empirical_covariance(sc.transform(X)), self.s)
        self.covariance_ = sc.scale_[:, None] * cov * sc.scale_[None, :]
        return self


@pytest.mark.parametrize("s", [0.0, 0.3, 1.0])
def test_a_fixed_shrinkage_is_ledoit_wolfs_form_at_that_intensity(s):
    X, y = data(3)
    cols = [0, 2, 5]
    ours = D.Moments(X, y).fit(cols, shrinkage=s)
    ref = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", covariance_estimator=FixedShrinkage(s)))
    ref.fit(X[:, cols], y)
    np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(X[:, cols]), rtol=1e-7, atol=1e-8)
    assert ours.shrinkage == (s, s, s)
    if s == 0.0:   # no shrinkage: scikit-learn's empirical covariances
        emp = sklearn_rule(X[:, cols], y, shrinkage=None)
        np.testing.assert_allclose(ours.decision_function(X), emp.decision_function(X[:, cols]), rtol=1e-7, atol=1e-8)


def test_ledoit_wolf_picks_an_intensity_per_class_strictly_inside_0_1():
    X, y = data(3)
    assert all(0 < s < 1 for s in D.Moments(X, y).fit([0, 2, 5]).shrinkage)
    assert D.Moments(X, y).fit([4]).shrinkage == (0.0, 0.0, 0.0)   # one column: nothing to shrink


def test_bad_input_is_named():
    X, y = data()
    with pytest.raises(ValueError, match="2 rows"):
        D.Moments(X[:3], np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="distinct"):
        D.Moments(X, y).fit([1, 1])
    with pytest.raises(ValueError, match="shrinkage"):
        D.Moments(X, y).fit([1], shrinkage=1.5)
    with pytest.raises(ValueError, match="shape"):
        D.Moments(X[:, 0], y)
