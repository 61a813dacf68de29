"""The combined probe's rule: a shrinkage linear discriminant, fitted in microseconds on any subset of columns.

The rule is scikit-learn's ``make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr",
shrinkage="auto"))``: columns standardised on the training rows, each class's covariance estimated by the
Ledoit-Wolf shrinkage of its own standardised rows, the class covariances summed with the class priors as
weights, and the coefficients solved by least squares.  Every quantity that estimate reads for a subset S of
the columns is a sub-matrix of moments of all columns: each class's Gram matrix of standardised rows (the
empirical covariance) and the Gram matrix of their squares (Ledoit-Wolf's beta).  :class:`Moments` computes
them once per set of training rows; :meth:`Moments.fit` is then an |S| x |S| solve, so that a selection can
judge thousands of column sets by cross-validation in seconds.  Equal to scikit-learn's estimator to float
rounding (``tests/test_discriminant.py``).  A fixed ``shrinkage`` in [0, 1] replaces Ledoit-Wolf's intensity
(0: the empirical class covariances, scikit-learn's ``shrinkage=None``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import linalg
from scipy.special import expit, softmax

__all__ = ["Moments", "Rule", "fit"]


def _scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (ddof 0) of each column, a constant column's deviation set to 1 (as
    scikit-learn's StandardScaler does)."""
    mean, sd = X.mean(0), X.std(0)
    constant = sd <= 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
    return mean, np.where(constant, 1.0, sd)


@dataclass(frozen=True)
class Rule:
    """A fitted discriminant on ``columns`` of the full matrix: ``decision_function`` (binary: one score,
    higher = class 1; k classes: k scores) and ``predict_proba``."""

    columns: tuple[int, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray        # (|S|,) for two classes, (k, |S|) for more
    intercept: np.ndarray   # () or (k,)
    shrinkage: tuple[float, ...]   # per class, the shrinkage its covariance got

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Scores of the rows of ``X`` (all columns; the rule reads its own)."""
        Z = (np.asarray(X, dtype=np.float64)[:, list(self.columns)] - self.mean) / self.scale
        return Z @ self.coef.T + self.intercept

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        d = self.decision_function(X)
        if d.ndim == 1:
            p = expit(d)
            return np.c_[1 - p, p]
        return softmax(d, axis=1)


class Moments:
    """Per-class moments of the training rows ``X`` (all columns), labels ``y`` in 0..k-1."""

    def __init__(self, X: ArrayLike, y: ArrayLike):
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y).astype(int)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be (n, d) with n = len(y) = {len(y)}, got shape {X.shape}")
        counts = np.bincount(y)
        if len(counts) < 2 or (counts < 2).any():
            raise ValueError(f"every class 0..k-1 (k >= 2) needs 2 rows at least, got counts {counts.tolist()}")
        self.mean, self.scale = _scale(X)
        Z = (X - self.mean) / self.scale
        self.priors = counts / len(y)
        self.counts = counts
        self.class_means, self.class_scale, self.gram, self.gram_sq = [], [], [], []
        for g in range(len(counts)):
            m, sd = _scale(Z[y == g])
            W = (Z[y == g] - m) / sd
            self.class_means.append(m)
            self.class_scale.append(sd)
            self.gram.append(W.T @ W)
            self.gram_sq.append((W ** 2).T @ (W ** 2))

    @property
    def classes(self) -> int:
        return len(self.counts)

    def _class_cov(self, g: int, S: np.ndarray, shrinkage: float | None) -> tuple[np.ndarray, float]:
        """Class ``g``'s covariance on columns ``S`` (Ledoit-Wolf on its standardised rows, rescaled)."""
        n, p = self.counts[g], len(S)
        G = self.gram[g][np.ix_(S, S)]
        emp = G / n
        trace = np.diag(emp).sum()
        mu = trace / p
        if shrinkage is not None:
            s = float(shrinkage)
        elif p == 1:
            s = 0.0
        else:   # sklearn.covariance.ledoit_wolf_shrinkage, from the moments
            beta_, delta_ = self.gram_sq[g][np.ix_(S, S)].sum(), (G ** 2).sum() / n ** 2
            beta = (beta_ / n - delta_) / (p * n)
            delta = (delta_ - 2.0 * mu * trace + p * mu ** 2) / p
            beta = min(beta, delta)
            s = 0.0 if beta == 0 else beta / delta
        shrunk = (1.0 - s) * emp
        shrunk[np.diag_indices(p)] += s * mu
        sd = self.class_scale[g][S]
        return sd[:, None] * shrunk * sd[None, :], s

    def fit(self, columns: Sequence[int], shrinkage: float | None = None) -> Rule:
        """The rule on ``columns`` (Ledoit-Wolf shrinkage per class, or the fixed ``shrinkage``)."""
        S = np.asarray(columns, dtype=int)
        if S.ndim != 1 or not len(S) or len(set(S.tolist())) != len(S):
            raise ValueError(f"columns must be distinct column indices, got {columns!r}")
        if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"shrinkage must lie in [0, 1] (or None for Ledoit-Wolf), got {shrinkage!r}")
        cov, shrunk = np.zeros((len(S), len(S))), []
        for g, prior in enumerate(self.priors):
            c, s = self._class_cov(g, S, shrinkage)
            cov += prior * c
            shrunk.append(s)
        means = np.stack([m[S] for m in self.class_means])
        coef = linalg.lstsq(cov, means.T)[0].T
        intercept = -0.5 * np.einsum("ij,ij->i", means, coef) + np.log(self.priors)
        if self.classes == 2:
            coef, intercept = coef[1] - coef[0], np.asarray(intercept[1] - intercept[0])
        return Rule(tuple(int(c) for c in S), self.mean[S], self.scale[S], coef, intercept, tuple(shrunk))


def fit(X: ArrayLike, y: ArrayLike, columns: Sequence[int] | None = None, shrinkage: float | None = None) -> Rule:
    """The rule fitted on the training rows ``X``, ``y`` at ``columns`` (default: all)."""
    X = np.asarray(X, dtype=np.float64)
    return Moments(X, y).fit(range(X.shape[1]) if columns is None else columns, shrinkage)
