"""Linear probe on trajectory features (Tracing the Roots, Floros et al. 2025).

Features are standardised with the mean / std of the probe's TRAINING rows
only (a :class:`~sklearn.preprocessing.StandardScaler` fitted in
:meth:`LinearProbe.fit`), then a linear classifier is trained:

* ``recipe="logreg"`` (default): scikit-learn ``LogisticRegressionCV`` (L2,
  C on a log grid 1e-4..1e2, 5 stratified folds, class-balanced).
* ``recipe="adamw"``: the paper's recipe in torch: ``nn.Linear``, (BCE-with-
  logits / cross-entropy) loss with class-balanced weights, AdamW (lr 1e-3,
  weight decay 10), batch 50, 100 epochs, ``StepLR(step_size=5, gamma=0.8)``.

Feature transforms are left to the caller; :func:`log_features` is the usual
one for squared norms spanning many orders of magnitude.
"""
from __future__ import annotations

import inspect
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .checks import positive_int
from .progress import progress_bar

__all__ = ["LinearProbe", "feature_matrix", "log_features", "weights_by_family", "DEFAULT_CS", "RECIPES"]

DEFAULT_CS = np.logspace(-4, 2, 13)
RECIPES = ("logreg", "adamw")


def log_features(X: ArrayLike) -> np.ndarray:
    """``log(max(X, 1e-30))``: log scale for non-negative features (squared norms)."""
    return np.log(np.maximum(np.asarray(X, dtype=np.float64), 1e-30))


def feature_matrix(feats: dict, families: Sequence[str], columns=None) -> np.ndarray:
    """Log features of ``families`` side by side, (N, len(families) * T) (optionally only grid ``columns``)."""
    cols = slice(None) if columns is None else columns
    return log_features(np.concatenate([np.asarray(feats[f])[:, cols] for f in families], axis=1))


def _check_X(X: ArrayLike, n_features: int | None = None) -> np.ndarray:
    """A finite 2-D float64 feature matrix (with ``n_features`` columns if given)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty 2-D array (n, d), got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} columns, the probe was fitted on {n_features}")
    bad = np.flatnonzero(~np.isfinite(X).all(axis=0))
    if bad.size:
        raise ValueError(f"X has non-finite values (NaN/inf) in {bad.size} of {X.shape[1]} "
                         f"columns (first: {bad[:5].tolist()})")
    return X


def _logreg(n_classes: int, seed: int, Cs: ArrayLike, cv: int, max_iter: int) -> Pipeline:
    """StandardScaler + LogisticRegressionCV, without version-dependent warnings."""
    kwargs = dict(Cs=np.asarray(Cs, dtype=np.float64),
                  cv=StratifiedKFold(cv, shuffle=True, random_state=seed),
                  scoring="roc_auc" if n_classes == 2 else "neg_log_loss",
                  class_weight="balanced", max_iter=max_iter, random_state=seed)
    params = inspect.signature(LogisticRegressionCV).parameters
    if "l1_ratios" in params:                     # sklearn >= 1.8: L2 is l1_ratio = 0
        kwargs["l1_ratios"] = (0.0,)
    if "use_legacy_attributes" in params:
        kwargs["use_legacy_attributes"] = False
    return make_pipeline(StandardScaler(), LogisticRegressionCV(**kwargs))


class LinearProbe:
    """Standardise (training rows only), then a linear classifier.

    Labels may be any sortable values; ``classes_`` holds them in sorted order.
    Binary: ``decision_function`` is 1-D, higher = ``classes_[1]``.
    Multi-class: ``decision_function`` is (n, k) logits in ``classes_`` order.
    """

    def __init__(self, recipe: str = "logreg", *, seed: int = 0, Cs: ArrayLike = DEFAULT_CS,
                 cv: int = 5, max_iter: int = 10_000, lr: float = 1e-3,
                 weight_decay: float = 10.0, batch_size: int = 50, epochs: int = 100,
                 step_size: int = 5, gamma: float = 0.8, progress: bool = False) -> None:
        if recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
        batch_size, epochs = positive_int(batch_size, "batch_size"), positive_int(epochs, "epochs")
        step_size, cv = positive_int(step_size, "step_size"), positive_int(cv, "cv")
        self.progress = progress
        self.recipe, self.seed = recipe, seed
        self.Cs, self.cv, self.max_iter = Cs, cv, max_iter
        self.lr, self.weight_decay, self.batch_size = lr, weight_decay, batch_size
        self.epochs, self.step_size, self.gamma = epochs, step_size, gamma

    # ------------------------------------------------------------------ fit
    def fit(self, X: ArrayLike, y: ArrayLike) -> "LinearProbe":
        """Fit scaler and classifier on these (training) rows."""
        X = _check_X(X)
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},), got {y.shape}")
        self.classes_, yi = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("only one class present in y")
        self.n_features_in_ = X.shape[1]
        if self.recipe == "logreg":
            self.model_ = _logreg(len(self.classes_), self.seed, self.Cs, self.cv, self.max_iter)
            self.model_.fit(X, yi)
            self.scaler_ = self.model_[0]
        else:
            self.scaler_ = StandardScaler().fit(X)
            self.linear_ = self._train_adamw(self.scaler_.transform(X), yi)
        return self

    def _train_adamw(self, Z: np.ndarray, yi: np.ndarray) -> torch.nn.Linear:
        """The paper's recipe on standardised features ``Z`` and class indices ``yi``."""
        k = len(self.classes_)
        with torch.random.fork_rng(devices=[]):   # seeded init, global RNG untouched
            torch.manual_seed(self.seed)
            linear = torch.nn.Linear(Z.shape[1], 1 if k == 2 else k)
        gen = torch.Generator().manual_seed(self.seed)
        Zt = torch.as_tensor(Z, dtype=torch.float32)
        yt = torch.as_tensor(yi, dtype=torch.int64)
        class_w = torch.as_tensor(len(yi) / (k * np.bincount(yi, minlength=k)), dtype=torch.float32)
        opt = torch.optim.AdamW(linear.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=self.step_size, gamma=self.gamma)
        for _ in progress_bar(range(self.epochs), desc="linear probe (AdamW epochs)", enabled=self.progress):
            for idx in torch.randperm(len(yt), generator=gen).split(self.batch_size):
                loss = _balanced_loss(linear(Zt[idx]), yt[idx], class_w)
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
        return linear.eval()

    # -------------------------------------------------------------- predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "scaler_"):
            raise RuntimeError("LinearProbe is not fitted; call fit(X, y) first")

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Binary: (n,) score, higher = ``classes_[1]``; multi-class: (n, k) logits."""
        self._check_fitted()
        X = _check_X(X, self.n_features_in_)
        if self.recipe == "logreg":
            return self.model_.decision_function(X)
        with torch.no_grad():
            z = torch.as_tensor(self.scaler_.transform(X), dtype=torch.float32)
            out = self.linear_(z).double().numpy()
        return out[:, 0] if out.shape[1] == 1 else out

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """(n, k) class probabilities in ``classes_`` order."""
        d = torch.as_tensor(self.decision_function(X), dtype=torch.float64)
        if d.ndim == 1:
            p1 = torch.sigmoid(d)
            return torch.stack([1 - p1, p1], dim=1).numpy()
        return torch.softmax(d, dim=1).numpy()

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Most probable class label per row."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def export(self) -> dict[str, np.ndarray]:
        """The fitted probe as plain arrays: ``mean``, ``scale`` (standardisation), ``coef`` (n_out, d) and
        ``intercept`` (n_out,), so that ``decision_function(X) == ((X - mean) / scale) @ coef.T + intercept``."""
        self._check_fitted()
        if self.recipe == "logreg":
            intercept = np.asarray(self.model_[-1].intercept_, dtype=np.float64)
        else:
            intercept = self.linear_.bias.detach().double().numpy().copy()
        return {"mean": np.asarray(self.scaler_.mean_, dtype=np.float64),
                "scale": np.asarray(self.scaler_.scale_, dtype=np.float64),
                "coef": self.coefficients(), "intercept": intercept.reshape(-1)}

    def coefficients(self) -> np.ndarray:
        """Weights W in standardised feature space, shape (n_out, d); binary n_out = 1."""
        self._check_fitted()
        if self.recipe == "logreg":
            return np.array(self.model_[-1].coef_, dtype=np.float64)
        return self.linear_.weight.detach().double().numpy().copy()


def _balanced_loss(logits: torch.Tensor, y: torch.Tensor, class_w: torch.Tensor) -> torch.Tensor:
    """Class-weighted mean loss: BCE-with-logits (one logit) or cross-entropy (k logits)."""
    if logits.shape[1] == 1:
        w = class_w[y]
        per_row = F.binary_cross_entropy_with_logits(logits[:, 0], y.float(), reduction="none")
        return (w * per_row).sum() / w.sum()
    return F.cross_entropy(logits, y, weight=class_w)


def weights_by_family(probe: LinearProbe, families: Sequence[str],
                      n_timesteps: int) -> dict[str, np.ndarray]:
    """Split W by feature family: ``{family: (n_out, n_timesteps)}`` (paper's Figure 3).

    Assumes a family-major layout: column ``i * n_timesteps + t`` is family
    ``families[i]`` at timestep index ``t``.
    """
    W = probe.coefficients()
    if len(set(families)) != len(families):
        raise ValueError(f"duplicate family names in {list(families)}")
    if W.shape[1] != len(families) * n_timesteps:
        raise ValueError(f"probe has {W.shape[1]} features, expected {len(families)} families "
                         f"x {n_timesteps} timesteps = {len(families) * n_timesteps}")
    W3 = W.reshape(W.shape[0], len(families), n_timesteps)
    return {name: W3[:, i, :].copy() for i, name in enumerate(families)}
