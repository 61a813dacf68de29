"""provlib.probe: standardisation on training rows, separation, Figure-3 weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from provlib.probe import LinearProbe, log_features, weights_by_family

torch.set_num_threads(1)
RECIPES = ["logreg", "adamw"]
# where the hyper-parameter search is beside the point, a cheap one keeps the tests fast
CHEAP = {"logreg": dict(Cs=[1.0], cv=2), "adamw": dict(epochs=5)}


def _linear_problem(seed: int, n: int, d: int = 8, noise: float = 0.0):
    """Linearly separable (noise=0) y = [z @ w > 0] on features with different means and
    scales; w weights 4 of the d standardised columns equally (+1 / -1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    w = np.zeros(d)
    w[:4] = [1.0, -1.0, 1.0, -1.0]
    y = (z @ w + noise * rng.normal(size=n) > 0).astype(int)
    return 10.0 + z * np.arange(1, d + 1), y


def _blobs(seed: int, n: int, k: int = 3, d: int = 6):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = 3.0 * np.eye(k, d)
    return centres[y] + rng.normal(size=(n, d)), y


@pytest.mark.parametrize("recipe", RECIPES)
def test_standardisation_uses_training_rows_only(recipe):
    X_tr, y_tr = _linear_problem(0, 200)
    X_ev = 50.0 * np.random.default_rng(1).normal(size=(100, X_tr.shape[1])) + 1000.0
    probe = LinearProbe(recipe, **CHEAP[recipe]).fit(X_tr, y_tr)
    np.testing.assert_allclose(probe.scaler_.mean_, X_tr.mean(0))
    np.testing.assert_allclose(probe.scaler_.scale_, X_tr.std(0))
    W = probe.coefficients()
    scores = probe.decision_function(X_ev)
    # evaluating never refits: scaler and weights unchanged, rows scored independently
    np.testing.assert_allclose(probe.scaler_.mean_, X_tr.mean(0))
    np.testing.assert_array_equal(probe.coefficients(), W)
    np.testing.assert_allclose(probe.decision_function(X_ev[:7]), scores[:7], rtol=1e-6)
    # and the probe is exactly "linear map of (X - train mean) / train std"
    Z = (X_ev - X_tr.mean(0)) / X_tr.std(0)
    np.testing.assert_allclose(scores - Z @ W[0], np.full(len(Z), (scores - Z @ W[0])[0]),
                               rtol=1e-4, atol=1e-3 * np.abs(scores).max())


@pytest.mark.parametrize("recipe", RECIPES)
def test_binary_probe_separates_linear_problem(recipe):
    X, y = _linear_problem(2, 700)
    probe = LinearProbe(recipe, seed=0).fit(X[:400], y[:400])
    scores = probe.decision_function(X[400:])
    assert scores.shape == (300,)
    assert roc_auc_score(y[400:], scores) > 0.95
    proba = probe.predict_proba(X[400:])
    assert proba.shape == (300, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert np.all(np.diff(proba[np.argsort(scores), 1]) >= 0)   # higher score = class 1


def test_adamw_is_seeded_and_leaves_global_rng_alone():
    X, y = _linear_problem(3, 100)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = LinearProbe("adamw", seed=5, epochs=3).fit(X, y).coefficients()
    after = torch.rand(1)
    b = LinearProbe("adamw", seed=5, epochs=3).fit(X, y).coefficients()
    c = LinearProbe("adamw", seed=6, epochs=3).fit(X, y).coefficients()
    assert before == after
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("recipe", RECIPES)
def test_multiclass_probe(recipe):
    X, y = _blobs(4, 600)
    probe = LinearProbe(recipe).fit(X[:450], y[:450])
    logits = probe.decision_function(X[450:])
    proba = probe.predict_proba(X[450:])
    assert logits.shape == (150, 3) and proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert probe.coefficients().shape == (3, 6)
    np.testing.assert_array_equal(probe.predict(X[450:]), logits.argmax(1))
    assert balanced_accuracy_score(y[450:], probe.predict(X[450:])) > 0.8   # chance: 1/3
    if recipe == "logreg":
        assert probe.model_[-1].scoring == "neg_log_loss"


def test_logreg_recipe_settings():
    clf = LinearProbe(seed=3).fit(*_linear_problem(8, 100)).model_[-1]
    np.testing.assert_allclose(clf.Cs_, np.logspace(-4, 2, 13))
    assert clf.scoring == "roc_auc" and clf.class_weight == "balanced" and clf.random_state == 3
    assert clf.cv.n_splits == 5 and type(clf.cv).__name__ == "StratifiedKFold"


def test_arbitrary_binary_labels_map_to_sorted_classes():
    X, y01 = _linear_problem(5, 200)
    y = np.where(y01 == 1, "member", "external")       # sorted: external < member
    probe = LinearProbe(**CHEAP["logreg"]).fit(X, y)
    assert list(probe.classes_) == ["external", "member"]
    assert roc_auc_score(y01, probe.decision_function(X)) > 0.95
    assert set(probe.predict(X)) <= {"external", "member"}


@pytest.mark.parametrize("recipe", RECIPES)
def test_weights_by_family_finds_informative_column(recipe):
    families, T = ["loss", "grad_x", "grad_theta"], 5
    rng = np.random.default_rng(6)
    X = rng.normal(size=(300, len(families) * T))
    col = 1 * T + 3                                        # grad_x at timestep index 3
    y = (X[:, col] + 0.3 * rng.normal(size=300) > 0).astype(int)
    probe = LinearProbe(recipe).fit(X, y)
    by_family = weights_by_family(probe, families, T)
    assert list(by_family) == families
    assert all(w.shape == (1, T) for w in by_family.values())
    np.testing.assert_array_equal(np.concatenate(list(by_family.values()), axis=1),
                                  probe.coefficients())
    peak = max(families, key=lambda f: np.abs(by_family[f]).max())
    assert peak == "grad_x"
    assert np.argmax(np.abs(by_family["grad_x"][0])) == 3
    with pytest.raises(ValueError, match="expected"):
        weights_by_family(probe, families, T + 1)


@pytest.mark.parametrize("recipe", RECIPES)
def test_non_finite_features_raise(recipe):
    X, y = _linear_problem(7, 60)
    bad = X.copy()
    bad[3, 1] = np.nan
    bad[5, 4] = np.inf
    with pytest.raises(ValueError, match="2 of 8 columns"):
        LinearProbe(recipe).fit(bad, y)
    probe = LinearProbe(recipe, **CHEAP[recipe]).fit(X, y)
    with pytest.raises(ValueError, match="non-finite"):
        probe.decision_function(bad)
    with pytest.raises(ValueError, match="columns"):
        probe.decision_function(X[:, :5])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="recipe"):
        LinearProbe("svm")
    with pytest.raises(ValueError, match="one class"):
        LinearProbe().fit(np.ones((10, 2)), np.zeros(10))
    with pytest.raises(RuntimeError, match="not fitted"):
        LinearProbe().decision_function(np.ones((2, 2)))


def test_log_features():
    X = np.array([[1.0, np.e, 0.0], [1e-40, 1e6, 1e-3]])
    L = log_features(X)
    assert np.isfinite(L).all()
    np.testing.assert_allclose(L[0, :2], [0.0, 1.0])
    np.testing.assert_allclose(L[1, 1], np.log(1e6))
    assert L[0, 2] == L[1, 0] == pytest.approx(np.log(1e-30))
