"""The membership study: every method's measurements on a target's images, and their honest evaluation.

Measurements (cached per chunk like the features, with their compute time):
the trajectory features, and the raw peer measurements of
:mod:`provlib.attacks` at every timestep each method is evaluated at
(:data:`BASELINE_TIMESTEPS`).  Evaluation, per target and setting (members vs
same-distribution ``heldout`` images, or vs ``external`` MNIST digits):

- rows: a seeded share ``probe_train_frac`` of each class trains (probes,
  classifiers, thresholds, timesteps); the rest evaluates;
- single-score methods choose their timestep by AUC on training rows and
  report every timestep's evaluation AUC beside it (methods.md, section 5);
- classifiers (GSA's boosted trees, the CNNs) are fitted on training rows; the
  thresholds of any method (for ASR, and the operating point calibrated for 1%
  FPR) are chosen on training-row scores the method was not fitted on (5-fold
  cross-validation for the probe and GSA; a held-back fifth of the training
  rows for the CNNs), and the operating point's TPR and FPR are measured on
  the evaluation rows, next to the threshold-free TPR at 1% FPR;
- every number is measured on the evaluation rows, with bootstrap intervals and
  the number of negatives behind each low-FPR figure.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from .. import attacks
from ..attacks import gsa, pia, secmi, sima
from ..io import artifact_dir, artifact_lock, code_version, load_state, save_state
from ..kernels import ddim, persample, trajectory
from ..kernels.trajectory import FEATURES, LAYERS
from ..metrics import auc, best_threshold, binary_report, operating_point, threshold_at_fpr
from ..probe import LinearProbe, feature_matrix
from ..detector.columns import SECMI_K  # SecMI's DDIM step
from . import artifacts
from ..seeds import stream_seed
from .artifacts import chunked, features, source_of, split_images, timestep_grid, train_mask

SETTINGS = {"heldout": "members vs same-distribution held-out images",
            "external": "members vs external images (MNIST)"}
BASELINE_TIMESTEPS = {
    "pia": (50, 100, 200, 300, 500),           # PIA's default is 200
    "pian": (50, 100, 200, 300, 500),
    "sima": (0, 20, 40, 60, 80, 100, 150, 200),  # SimA scans small t
    "secmi": (50, 100, 200),                   # SecMI's default t_sec is 100, k = 10
}
GSA_POINTS = 10  # GSA's timesteps: 10 points of the trajectory grid, evenly spread (gsa_timesteps)
SECMI_NN_T = 100        # the t_sec whose residual maps SecMI_NNs classifies (the paper's default)
SECMI_NN_SHARE = 0.2    # SecMI_NNs trains on 20% of the rows (drawn from the training rows)
MEASURES = ("trajectory", "pia", "pian", "sima", "secmi", "gsa1", "gsa2")


# ----------------------------------------------------------------------------- measurements

def gsa_columns(params: dict) -> np.ndarray:
    """The grid columns GSA reads: :data:`GSA_POINTS` evenly spread points of the trajectory grid.

    GSA uses 10 equidistant timesteps; taking them on the trajectory grid lets
    GSA_2 read the per-layer norms of the features' own backward (same noise,
    no second run).  On a grid of 10 points (every 100th step) they are exactly
    0, 100, ..., 900.
    """
    n = len(timestep_grid(params))
    return np.unique(np.linspace(0, n - 1, min(GSA_POINTS, n)).round().astype(int))


def gsa_timesteps(params: dict) -> list[int]:
    return [int(t) for t in timestep_grid(params)[gsa_columns(params)]]


def measure(params: dict, method: str, split: str, *, target: str | None = None, progress: bool = True) -> dict:
    """Raw measurements of ``method`` on one split: ``{"values": (N, ...), ..., "seconds_per_image": s}``.

    ``values`` is (N, T) over :data:`BASELINE_TIMESTEPS` for pia, pian, sima and
    secmi (lower = member; sima adds ``l2``, the squared l2 norm of the same
    prediction; secmi adds ``residuals`` (N, T, C, H, W)), (N, layers)
    for gsa1 / gsa2 (at :func:`gsa_timesteps`; gsa2 from the features' own
    backward), and the trajectory features ``loss``, ``grad_x``, ``grad_theta``
    (N, grid) for ``trajectory``.
    """
    if method not in MEASURES:
        raise ValueError(f"unknown measurement {method!r}; choose from {MEASURES}")
    if method == "trajectory":
        return features(params, split, target=target, progress=progress, seconds=True)
    seed = stream_seed(params["seed"], source_of(params, split, target))
    size = artifacts.get_target(target or params["targets"][0]).image_size
    if method in ("pia", "pian"):
        ts = BASELINE_TIMESTEPS[method]
        compute = lambda model, part, cb: {"values": pia.pia_distance(*model, part.images, list(ts),
                                                                      normalized=method == "pian")}
        shapes, code = {"values": (len(ts),)}, code_version(pia)
    elif method == "sima":
        ts = BASELINE_TIMESTEPS["sima"]
        def compute(model, part, cb):   # l4 (SimA's score) and l2 from the same forward passes
            norms = sima.sima_norms(*model, part.images, list(ts), powers=(4, 2))
            return {"values": norms[4], "l2": norms[2]}
        shapes, code = {"values": (len(ts),), "l2": (len(ts),)}, code_version(sima)
    elif method == "secmi":
        ts = BASELINE_TIMESTEPS["secmi"]

        def compute(model, part, cb):
            errors, maps = secmi.secmi_t_error(*model, part.images, list(ts), SECMI_K, return_residuals=True)
            return {"values": errors, "residuals": maps}
        shapes, code = {"values": (len(ts),), "residuals": (len(ts), 1, size, size)}, code_version(secmi, ddim)
    elif method == "gsa2":  # the features' per-layer norms at GSA's timesteps, averaged over them
        f = features(params, split, target=target, progress=progress, seconds=True, layers=True)
        cols = gsa_columns(params)
        return {"values": f[LAYERS][:, cols].mean(1),
                "seconds_per_image": f["seconds_per_image"] * len(cols) / len(timestep_grid(params))}
    else:
        ts = gsa_timesteps(params)
        compute = lambda model, part, cb: {"values": gsa.gsa_features(*model, part.images, ts, variant=1,
                                                                      seed=seed, ids=part.ids)}
        shapes, code = {"values": (None,)}, code_version(gsa, trajectory, persample)
    return chunked(params, split, f"attack-{method}", {"timesteps": list(ts), "k": SECMI_K}, code, compute, shapes,
                   target=target, progress=progress)


# ----------------------------------------------------------------------------- rows

@dataclass
class Rows:
    """Labels and the train / evaluation split of one setting of one target.

    Label 1 is the ``positive`` split (members here; the generated images in the SeDID study).
    """

    negative: str                   # the non-member split: heldout or external
    masks: dict[str, np.ndarray]    # split -> boolean training mask
    counts: dict[str, int] = field(default_factory=dict)
    positive: str = "member"

    def stack(self, values: dict[str, np.ndarray], part: str) -> np.ndarray:
        """Positive rows then negative rows of ``part`` ("train" or "eval")."""
        both = (self.positive, self.negative)
        keep = {s: self.masks[s] if part == "train" else ~self.masks[s] for s in both}
        return np.concatenate([np.asarray(values[s])[keep[s]] for s in both])

    def labels(self, part: str) -> np.ndarray:
        n = {s: int(self.masks[s].sum()) if part == "train" else int((~self.masks[s]).sum())
             for s in (self.positive, self.negative)}
        return np.r_[np.ones(n[self.positive], int), np.zeros(n[self.negative], int)]


def rows(params: dict, setting: str, target: str | None = None) -> Rows:
    """The seeded training rows of members and of the setting's non-members (the same members in every setting)."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose from {sorted(SETTINGS)}")
    sets = artifacts.image_sets(params, target)
    masks = {s: train_mask(len(sets[s]), params["probe_train_frac"], params["seed"], f"probe:{s}")
             for s in ("member", setting)}
    return Rows(setting, masks, {s: len(sets[s]) for s in ("member", setting)})


# ----------------------------------------------------------------------------- evaluation

@dataclass
class Result:
    """One method on one setting: its evaluation report, chosen timestep, per-timestep AUCs and cost."""

    method: str
    report: dict
    forward: int
    backward: int
    seconds_per_image: float
    chosen_t: int | None = None
    per_t: dict = field(default_factory=dict)   # t -> (train AUC, evaluation AUC)
    eval_scores: np.ndarray | None = None


OPERATING_FPR = 0.01  # the FPR the operating point is calibrated for, on training rows


def _report(params, y_ev, s_ev, y_cal, s_cal) -> dict:
    """Evaluation-row metrics, with both thresholds set on calibration rows (``y_cal``, ``s_cal``:
    training rows, scored by a method not fitted on them): the ASR threshold (best balanced accuracy)
    and the operating point calibrated for 1% FPR (``op_*``: the TPR and FPR it gets on evaluation rows)."""
    rep = binary_report(y_ev, s_ev, threshold=best_threshold(y_cal, s_cal), n_boot=params["n_bootstrap"],
                        seed=params["seed"])
    thr = threshold_at_fpr(y_cal, s_cal, OPERATING_FPR)
    op = operating_point(y_ev, s_ev, thr, n_boot=params["n_bootstrap"], seed=params["seed"])
    return {**rep, "op_threshold": float(thr), **{f"op_{k}": v for k, v in op.items()}}


def single_score(params, r: Rows, name: str, scores: dict, ts, cost: dict, seconds: float) -> Result:
    """A score per timestep (higher = member): t chosen by training-row AUC, every t's AUC kept."""
    tr, ev = r.stack(scores, "train"), r.stack(scores, "eval")
    y_tr, y_ev = r.labels("train"), r.labels("eval")
    per_t = {int(t): (auc(y_tr, tr[:, j]), auc(y_ev, ev[:, j])) for j, t in enumerate(ts)}
    j = int(np.argmax([per_t[int(t)][0] for t in ts]))
    report = _report(params, y_ev, ev[:, j], y_tr, tr[:, j])
    return Result(name, report, cost["forward"], cost["backward"], seconds, int(ts[j]), per_t, ev[:, j])


def _cv_scores(fit_score, X, y, seed: int, folds: int = 5) -> np.ndarray:
    """Out-of-fold scores of ``fit_score(X_train, y_train, X_test)`` on ``X`` (for thresholds)."""
    out = np.empty(len(y))
    for a, b in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        out[b] = fit_score(X[a], y[a], X[b])
    return out


def fitted(params, r: Rows, name: str, X: dict, fit_score, cost: dict, seconds: float) -> Result:
    """A method fitted on training rows: evaluation scores, and its threshold from out-of-fold training scores."""
    X_tr, X_ev = r.stack(X, "train"), r.stack(X, "eval")
    y_tr, y_ev = r.labels("train"), r.labels("eval")
    s_ev = fit_score(X_tr, y_tr, X_ev)
    report = _report(params, y_ev, s_ev, y_tr, _cv_scores(fit_score, X_tr, y_tr, params["seed"]))
    return Result(name, report, cost["forward"], cost["backward"], seconds,
                  eval_scores=s_ev)


def probe_fit_score(seed: int):
    """Fit-and-score function of the trajectory probe (log features, standardised, logistic regression)."""
    def fit_score(X_tr, y_tr, X_ev):
        return LinearProbe(seed=seed).fit(X_tr, y_tr).decision_function(X_ev)
    return fit_score


def trajectory_matrix(feats: dict, families=FEATURES, columns=None) -> np.ndarray:
    """Log features of ``families`` side by side (optionally only the grid ``columns``)."""
    return feature_matrix(feats, families, columns)


def cnn(params, r: Rows, name: str, X: dict, cost: dict, seconds: float, *, share: float | None,
        scorer, progress: bool = False) -> Result:
    """A CNN method: trained on (a share of) the training rows minus a held-back fifth that sets its threshold."""
    X_tr, X_ev = r.stack(X, "train"), r.stack(X, "eval")
    y_tr, y_ev = r.labels("train"), r.labels("eval")
    rng = np.random.default_rng(stream_seed(params["seed"], f"cnn:{name}"))
    calib = np.zeros(len(y_tr), bool)
    for c in (0, 1):
        idx = np.flatnonzero(y_tr == c)
        calib[rng.choice(idx, max(1, len(idx) // 5), replace=False)] = True
    fit = np.flatnonzero(~calib)
    if share is not None:  # SecMI_NNs: 20% of all rows of the setting, drawn from the training rows
        n_fit = int(round(share * (len(y_tr) + len(y_ev))))
        fit = np.sort(rng.choice(fit, min(n_fit, len(fit)), replace=False))
    both = scorer(torch.as_tensor(X_tr[fit]), y_tr[fit], torch.cat([torch.as_tensor(X_tr[calib]),
                                                                   torch.as_tensor(X_ev)]), params["seed"], progress)
    s_cal, s_ev = both[:calib.sum()], both[calib.sum():]
    report = _report(params, y_ev, s_ev, y_tr[calib], s_cal)
    return Result(name, report, cost["forward"], cost["backward"], seconds, eval_scores=s_ev)


def evaluation(params: dict, setting: str, *, target: str | None = None, progress: bool = True) -> dict[str, Result]:
    """:func:`evaluate`, cached (pickle-free) under the target's weights, the parameters and the code's version."""
    from .. import classifiers, metrics, probe
    t = artifacts.resolve(target or params["targets"][0], params["seed"], progress=progress)
    key = {"model": t.fingerprint, "target": t.name, "setting": setting,
           "params": {k: params[k] for k in ("seed", "probe_train_frac", "n_bootstrap", "timestep_stride")},
           "code": code_version(_this_module(), attacks, gsa, pia, secmi, sima, attacks.blind, attacks.loss,
                                classifiers, probe, metrics, ddim, trajectory, persample, artifacts)}
    path = artifact_dir("evaluation", key) / "result.safetensors"
    with artifact_lock(path.parent):
        if not path.exists():
            results = evaluate(params, setting, target=target, progress=progress)
            save_state(path, {name: _fields(r) for name, r in results.items()})
    return {name: _result(fields) for name, fields in load_state(path).items()}


def _this_module():
    import sys
    return sys.modules[__name__]


def _result(fields: dict) -> Result:
    scores = fields["eval_scores"]
    return Result(**{**fields, "eval_scores": None if scores is None else scores.numpy()})


def _fields(r: Result) -> dict:
    return {"method": r.method, "report": r.report, "forward": r.forward, "backward": r.backward,
            "seconds_per_image": float(r.seconds_per_image), "chosen_t": r.chosen_t,
            "per_t": {int(t): tuple(float(v) for v in aucs) for t, aucs in r.per_t.items()},
            "eval_scores": None if r.eval_scores is None else torch.as_tensor(np.asarray(r.eval_scores, np.float64))}


def evaluate(params: dict, setting: str, *, target: str | None = None, progress: bool = True) -> dict[str, Result]:
    """Every method of the membership comparison on one setting of one target (Table 2)."""
    r = rows(params, setting, target)
    splits = ("member", setting)
    m = {meth: {s: measure(params, meth, s, target=target, progress=progress) for s in splits} for meth in MEASURES}
    sec = {meth: _mean_seconds(m[meth], r) for meth in MEASURES}
    grid = timestep_grid(params)
    out: dict[str, Result] = {}
    traj = {s: m["trajectory"][s] for s in splits}
    per_pass = sec["sima"] / len(BASELINE_TIMESTEPS["sima"])  # one forward at a batch of images, as SimA timed it
    out["Loss"] = single_score(params, r, "Loss", {s: -np.log(traj[s]["loss"].numpy()) for s in splits}, grid,
                               attacks.passes("loss", [0]), per_pass)
    for meth, name in (("pia", "PIA"), ("pian", "PIAN"), ("sima", "SimA"), ("secmi", "SecMI_stat")):
        ts, attack = BASELINE_TIMESTEPS[meth], {"secmi": "secmi_stat"}.get(meth, meth)
        res = single_score(params, r, name, {s: -m[meth][s]["values"].numpy() for s in splits}, ts,
                           {"forward": 0, "backward": 0}, 0.0)
        one, every = attacks.passes(attack, [res.chosen_t], k=SECMI_K), attacks.passes(attack, ts, k=SECMI_K)
        res.forward, res.backward = one["forward"], one["backward"]
        res.seconds_per_image = sec[meth] * one["forward"] / every["forward"]  # the chosen t's share of the run
        out[name] = res
    for meth, name in (("gsa1", "GSA_1"), ("gsa2", "GSA_2")):
        X = {s: m[meth][s]["values"].numpy() for s in splits}
        out[name] = fitted(params, r, name, X, lambda a, b, c: gsa.gsa_scores(a, b, c, seed=params["seed"]),
                           attacks.passes(meth, gsa_timesteps(params)), sec[meth])
    j = BASELINE_TIMESTEPS["secmi"].index(SECMI_NN_T)
    maps = {s: m["secmi"][s]["residuals"][:, j].numpy() for s in splits}
    out["SecMI_NNs"] = cnn(params, r, "SecMI_NNs", maps, attacks.passes("secmi_nn", [SECMI_NN_T], k=SECMI_K),
                           sec["secmi"], share=SECMI_NN_SHARE,
                           scorer=lambda a, b, c, seed, p: secmi.secmi_nn(a, b, c, seed=seed, progress=p),
                           progress=progress)
    images = {s: split_images(params, s, target).images.numpy() for s in splits}
    out["model-blind CNN"] = cnn(params, r, "model-blind CNN", images, attacks.passes("blind"), 0.0, share=None,
                                 scorer=lambda a, b, c, seed, p: attacks.blind_scores(a, b, c, seed=seed, progress=p),
                                 progress=progress)
    X = {s: trajectory_matrix(traj[s]) for s in splits}
    out["Trajectory probe"] = fitted(params, r, "Trajectory probe", X, probe_fit_score(params["seed"]),
                                     attacks.passes("trajectory", grid, features=FEATURES), sec["trajectory"])
    return out


def _mean_seconds(by_split: dict, r: Rows) -> float:
    n = {s: r.counts[s] for s in by_split}
    return sum(by_split[s]["seconds_per_image"] * n[s] for s in by_split) / sum(n.values())


# ----------------------------------------------------------------------------- probes on parts of the features

def trajectory_rows(params: dict, setting: str, target: str | None = None) -> tuple[Rows, dict]:
    """The setting's rows and the trajectory features of its two splits (with their compute time)."""
    r = rows(params, setting, target)
    return r, {s: measure(params, "trajectory", s, target=target, progress=False) for s in ("member", setting)}


def per_pass_seconds(params: dict, setting: str, target: str | None = None) -> dict:
    """Measured seconds per image of one forward pass (SimA's run) and of one forward + backward row
    of the trajectory kernel (the features' run), for costing probes on parts of the grid."""
    r = rows(params, setting, target)
    sima_m = {s: measure(params, "sima", s, target=target, progress=False) for s in ("member", setting)}
    traj_m = {s: measure(params, "trajectory", s, target=target, progress=False) for s in ("member", setting)}
    n_grid = len(timestep_grid(params))
    return {"forward": _mean_seconds(sima_m, r) / len(BASELINE_TIMESTEPS["sima"]),
            "forward+backward": _mean_seconds(traj_m, r) / n_grid}


def probe_result(params: dict, r: Rows, feats: dict, *, families=FEATURES, columns=None, name: str = "probe",
                 pass_seconds: dict | None = None) -> Result:
    """The linear probe on ``families`` at grid ``columns`` (default: all), evaluated like every method."""
    X = {s: trajectory_matrix(f, families, columns) for s, f in feats.items()}
    n_t = len(np.arange(len(timestep_grid(params)))[slice(None) if columns is None else columns])
    cost = attacks.passes("trajectory", range(n_t), features=families)
    seconds = 0.0
    if pass_seconds is not None:
        seconds = n_t * pass_seconds["forward+backward" if cost["backward"] else "forward"]
    return fitted(params, r, name, X, probe_fit_score(params["seed"]), cost, seconds)


def with_budget(r: Rows, share: float, seed: int) -> tuple[Rows, dict]:
    """The rows of an attacker who knows only ``share`` of the member training rows (the data budget).

    Returns the reduced :class:`Rows` and, per split, the row indices to keep from
    full-length value arrays (dropped member training rows are neither trained
    on nor evaluated; the evaluation rows stay the same).
    """
    if not 0 < share <= 1:
        raise ValueError(f"share must lie in (0, 1], got {share}")
    mask = r.masks["member"]
    train = np.flatnonzero(mask)
    rng = np.random.default_rng(stream_seed(seed, f"budget:{share}"))
    kept_train = np.sort(rng.choice(train, max(2, int(round(share * len(train)))), replace=False))
    keep = {"member": np.sort(np.r_[kept_train, np.flatnonzero(~mask)]),
            r.negative: np.arange(len(r.masks[r.negative]))}
    masks = {s: r.masks[s][keep[s]] for s in keep}
    return Rows(r.negative, masks, {s: len(keep[s]) for s in keep}), keep
