"""Feature columns chosen under a cost budget: greedy forward selection on training rows.

A detector that may spend at most ``budget`` UNet passes per image picks the
feature columns it computes.  Columns share passes (the loss and both gradient
norms at one t come from one forward and one backward; SimA's two norms at one
t from one forward), so the cost of a set of columns is a function of the whole
set, given by the caller (:func:`provlib.detector.columns.passes_of`).

:func:`greedy_select` starts from no column and adds, one at a time, the column
whose addition gives the best cross-validated criterion among those that keep
the cost within the budget; it stops when no column fits, none improves the
criterion, or ``max_columns`` are added.  Its first step may also take a whole
``block`` of columns at once (e.g. one family over its grid: a peer's own
probe), so that a set whose columns are weak one by one but strong together is
within reach of the search, and a budget that covers a peer's probe can start
from it.  The criterion is computed on the
training rows only: out-of-fold scores of a shrinkage linear discriminant
(closed form, so that hundreds of candidate sets cost seconds; the same kind of
linear rule as the final probe), pooled over stratified folds, compared as
(TPR at ``max_fpr``, AUC) lexicographically (macro, one-vs-rest, for more than two classes); a gain in AUC alone must exceed
``min_gain``.  The caller then fits its own probe on the chosen columns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..metrics import auc, macro_auc, macro_tpr_at_fpr, tpr_at_fpr
from . import discriminant

__all__ = ["Selection", "cv_criterion", "greedy_select", "Choice", "Judge", "budget_chain", "select", "criterion"]


@dataclass(frozen=True)
class Selection:
    """Columns chosen by :func:`greedy_select`, in the order they were added, and what they cost."""

    columns: tuple[int, ...]
    cost: float
    budget: float
    criterion: tuple[float, float]               # (cross-validated TPR at max_fpr, AUC) on training rows
    path: tuple[tuple[int, float, float, float], ...] = ()   # per column added: (column, cost, TPR, AUC)


def _folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    n_splits = int(min(folds, np.bincount(y).min()))
    if n_splits < 2:
        raise ValueError("selection needs at least 2 training rows of each class")
    return list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def cv_criterion(X: ArrayLike, y: ArrayLike, *, seed: int = 0, folds: int = 5, max_fpr: float = 0.01,
                 splits=None) -> tuple[float, float]:
    """(TPR at ``max_fpr``, AUC) of out-of-fold linear-discriminant scores of the columns of ``X``; with
    more than two classes (labels 0..k-1), the macro (one-vs-rest) TPR and AUC of its class probabilities."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y).astype(int)
    k = int(y.max()) + 1
    oof = np.empty(len(y)) if k == 2 else np.empty((len(y), k))
    for a, b in splits if splits is not None else _folds(y, folds, seed):
        model = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
        model.fit(X[a], y[a])
        oof[b] = model.decision_function(X[b]) if k == 2 else model.predict_proba(X[b])
    if k == 2:
        return tpr_at_fpr(y, oof, max_fpr), auc(y, oof)
    return macro_tpr_at_fpr(y, oof, max_fpr), macro_auc(y, oof)


def greedy_select(X: ArrayLike, y: ArrayLike, cost: Callable[[Sequence[int]], float], budget: float, *,
                  candidates: Sequence[int] | None = None, blocks: Sequence[Sequence[int]] = (), seed: int = 0,
                  folds: int = 5, max_fpr: float = 0.01, max_columns: int = 24, min_gain: float = 1e-3,
                  memo: dict | None = None) -> Selection:
    """The columns of ``X`` (training rows; labels 0/1, 1 = positive, or 0..k-1) chosen greedily within ``budget``.

    ``cost(columns)`` gives the passes per image of a set of column indices; ``blocks`` are sets of
    columns the first step may take together (beside every single column).
    ``memo`` (a dict) may be shared between calls on the same ``X``, ``y`` and
    settings, e.g. for several budgets: a column set is then evaluated once.
    The returned selection's cost never exceeds ``budget``; it is empty when no
    single column fits.
    """
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y).astype(int)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (n, d) with n = len(y) = {len(y)}, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X has non-finite values")
    pool = list(range(X.shape[1])) if candidates is None else [int(c) for c in candidates]
    splits = _folds(y, folds, seed)
    memo = {} if memo is None else memo

    def score(cols: tuple[int, ...]) -> tuple[float, float]:
        key = frozenset(cols)
        if key not in memo:
            memo[key] = cv_criterion(X[:, sorted(key)], y, max_fpr=max_fpr, splits=splits)
        return memo[key]

    starts = [tuple(dict.fromkeys(int(c) for c in b)) for b in blocks]
    if any(not b or min(b) < 0 or max(b) >= X.shape[1] for b in starts):
        raise ValueError(f"blocks must be non-empty sets of column indices of X (0..{X.shape[1] - 1})")
    chosen: tuple[int, ...] = ()
    best, path, added = (0.0, 0.5), [], 0
    while added < max_columns:
        options = [(c,) for c in pool if c not in chosen] + ([b for b in starts if len(b) > 1] if not chosen else [])
        costs = {o: cost([*chosen, *o]) for o in options}
        fits = [o for o, v in costs.items() if v <= budget]
        if not fits:
            break
        trials = {o: score((*chosen, *o)) for o in fits}
        o = max(fits, key=lambda o: (trials[o], -costs[o], -len(o), [-c for c in o]))
        tpr, a = trials[o]
        if not (tpr > best[0] or (tpr == best[0] and a > best[1] + min_gain)) and chosen:
            break
        chosen, best, added = (*chosen, *o), (tpr, a), added + (len(o) == 1)
        path.extend((c, float(cost(chosen)), tpr, a) for c in o)
    spent = float(cost(chosen)) if chosen else 0.0
    return Selection(chosen, spent, float(budget), best, tuple(path))


# ----------------------------------------------------------------------------- the budget chain, judged as evaluated

SHRINKAGES = (None, 0.01, 0.1, 0.3, 0.6, 0.9)   # the no-budget probe's regularisation grid (None: Ledoit-Wolf)


@dataclass(frozen=True)
class Choice:
    """The probe chosen at one budget: its columns (one column: that signal alone is the probe), their cost, the
    discriminant's shrinkage (None: Ledoit-Wolf), the cross-validated criterion that chose it, and the nested
    estimate of the procedure that chose it (:func:`select`)."""

    budget: float
    columns: tuple[int, ...]
    cost: float
    shrinkage: float | None
    criterion: tuple[float, float]                 # (TPR at max_fpr, AUC), cross-validated on the training rows
    nested: tuple[float, float] = (float("nan"), float("nan"))   # the same, outer folds of a nested cross-validation
    kept_from: float | None = None                 # a smaller budget whose probe no larger one estimated better

    @property
    def single(self) -> bool:
        """True when one signal at one timestep is the whole probe (no combination beat it)."""
        return len(self.columns) == 1


class Judge:
    """The cross-validated (TPR at ``max_fpr``, AUC) of the discriminant (:mod:`.discriminant`) on a column set,
    pooled out-of-fold over ``splits`` of the rows ``X``, ``y``; memoised per (set, shrinkage)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, splits, max_fpr: float):
        self.y, self.max_fpr, self.memo = y, max_fpr, {}
        self.parts = [(discriminant.Moments(X[a], y[a]), X[b], b) for a, b in splits]
        self.k = int(y.max()) + 1

    def __call__(self, cols: tuple[int, ...], shrinkage: float | None = None) -> tuple[float, float]:
        key = (frozenset(cols), shrinkage)
        if key not in self.memo:
            oof = np.empty(len(self.y)) if self.k == 2 else np.empty((len(self.y), self.k))
            for moments, X_out, rows in self.parts:
                rule = moments.fit(sorted(cols), shrinkage)
                oof[rows] = rule.decision_function(X_out) if self.k == 2 else rule.predict_proba(X_out)
            self.memo[key] = criterion(self.y, oof, self.max_fpr)
        return self.memo[key]


def criterion(y: np.ndarray, scores: np.ndarray, max_fpr: float) -> tuple[float, float]:
    """(TPR at ``max_fpr``, AUC) of scores (binary) or class probabilities (macro, one-vs-rest)."""
    if scores.ndim == 1:
        return tpr_at_fpr(y, scores, max_fpr), auc(y, scores)
    return macro_tpr_at_fpr(y, scores, max_fpr), macro_auc(y, scores)


def _better(a: tuple[float, float], b: tuple[float, float], min_gain: float) -> bool:
    """``a`` beats ``b``: a higher TPR, or the same TPR and an AUC higher by more than ``min_gain``."""
    return a[0] > b[0] or (a[0] == b[0] and a[1] > b[1] + min_gain)


def budget_chain(X: ArrayLike, y: ArrayLike, cost: Callable[[Sequence[int]], float], budgets: Sequence[float], *,
                 blocks: Sequence[Sequence[int]] = (), splits=None, seed: int = 0, folds: int = 5,
                 max_fpr: float = 0.01, max_columns: int = 24, min_gain: float = 1e-3,
                 shrinkages: Sequence[float | None] = SHRINKAGES) -> list[Choice]:
    """The probe at each budget (ascending), chosen by the cross-validated criterion on the rows ``X``, ``y``.

    A budget's search starts from the best of: the previous budget's probe, every single column (a peer's
    score at one timestep), every block (a peer's own probe) that fits; it then adds the column that helps most
    while one helps (:func:`_better`) and fits, up to ``max_columns``.  A budget's probe is therefore at least
    as good as the previous one by this criterion.  An infinite budget also weighs every column at once, its
    shrinkage chosen among ``shrinkages`` by the same criterion.
    """
    X, y = _checked(X, y)
    judge = Judge(X, y, _folds(y, folds, seed) if splits is None else splits, max_fpr)
    starts = [tuple(dict.fromkeys(int(c) for c in b)) for b in blocks]
    if any(not b or min(b) < 0 or max(b) >= X.shape[1] for b in starts):
        raise ValueError(f"blocks must be non-empty sets of column indices of X (0..{X.shape[1] - 1})")
    rank = lambda o: (judge(o), -cost(o), -len(o), [-c for c in o])  # noqa: E731
    out, prev = [], ()
    for budget in sorted(budgets):
        options = [o for o in [prev, *((c,) for c in range(X.shape[1])), *starts] if o and cost(o) <= budget]
        if not options:
            continue
        chosen = max(options, key=rank)
        while len(chosen) < max_columns:
            grown = [(*chosen, c) for c in range(X.shape[1]) if c not in chosen and cost((*chosen, c)) <= budget]
            best = max(grown, key=rank, default=None)
            if best is None or not _better(judge(best), judge(chosen), min_gain):
                break
            chosen = best
        shrinkage = None
        if np.isinf(budget):
            every = tuple(range(X.shape[1]))
            s = max(shrinkages, key=lambda s: (judge(every, s), s is None))
            if _better(judge(every, s), judge(chosen), 0.0):
                chosen, shrinkage = every, s
        prev = chosen
        out.append(Choice(float(budget), chosen, float(cost(chosen)), shrinkage, judge(chosen, shrinkage)))
    return out


def select(X: ArrayLike, y: ArrayLike, cost: Callable[[Sequence[int]], float], budgets: Sequence[float], *,
           blocks: Sequence[Sequence[int]] = (), seed: int = 0, folds: int = 5, max_fpr: float = 0.01,
           **chain) -> list[Choice]:
    """The chosen probe at each budget, judged as it is evaluated, on the training rows only.

    :func:`budget_chain` on all rows (inner folds) chooses; a nested cross-validation estimates each budget's
    procedure: in each outer fold the chain is rerun on the other rows, its probe fitted there and scored on the
    fold's rows, the scores pooled.  A budget whose estimate does not beat a smaller budget's keeps that budget's
    probe (``kept_from``), so the chosen probes' estimates never decrease with the budget.
    """
    X, y = _checked(X, y)
    budgets = sorted(budgets)
    k = int(y.max()) + 1
    oof = {b: np.full(len(y), np.nan) if k == 2 else np.full((len(y), k), np.nan) for b in budgets}
    for i, (a, rows) in enumerate(_folds(y, folds, seed)):
        inner = budget_chain(X[a], y[a], cost, budgets, blocks=blocks, seed=seed + 1 + i, folds=folds,
                             max_fpr=max_fpr, **chain)
        moments = discriminant.Moments(X[a], y[a])
        for c in inner:
            rule = moments.fit(sorted(c.columns), c.shrinkage)
            oof[c.budget][rows] = rule.decision_function(X[rows]) if k == 2 else rule.predict_proba(X[rows])
    estimate = {b: criterion(y, s, max_fpr) if np.isfinite(s).all() else (-1.0, -1.0) for b, s in oof.items()}
    out, best = [], None
    for c in budget_chain(X, y, cost, budgets, blocks=blocks, seed=seed, folds=folds, max_fpr=max_fpr, **chain):
        if best is None or estimate[c.budget] > best.nested:
            best = Choice(**{**vars(c), "nested": estimate[c.budget]})
            out.append(best)
        else:
            out.append(Choice(**{**vars(best), "budget": c.budget, "kept_from": best.budget}))
    return out


def _checked(X: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y).astype(int)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (n, d) with n = len(y) = {len(y)}, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X has non-finite values")
    return X, y
