"""The membership study: every method on a target's images, evaluated honestly (Table 2 and after).

The methods read the measurements of :mod:`.measurements`.  Evaluation, per
target and setting (members vs same-distribution ``heldout`` images, vs
``external`` MNIST digits, or vs ``shifted`` held-out images: the same images
re-acquired through another pipeline, a subtle shift whose rows match the
held-out setting's, :func:`matched`):

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

import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from .. import attacks, classifiers, metrics, probe
from ..attacks import gsa, pia, secmi, sima
from ..attacks.passes import SECMI_K
from ..io import cached_state, code_version, tensor_sha256
from ..kernels import ddim, persample, trajectory
from ..kernels.trajectory import FEATURES
from ..metrics import auc, best_threshold, binary_report, operating_point, threshold_at_fpr
from ..probe import LinearProbe, feature_matrix
from ..seeds import stream_seed
from . import artifacts, measurements
from .artifacts import split_images
from .measurements import BASELINE_TIMESTEPS, MEASURES, gsa_timesteps, measure
from .run import SHIFTED, Run, Target

SETTINGS = {"heldout": "members vs same-distribution held-out images",
            "external": "members vs external images (MNIST)"}
# the subtle shift (Table 2's distribution-shift setting, as CelebA-HQ against FFHQ): held-out images re-acquired
# through another pipeline (provlib.acquisition.SHIFTED_ACQUISITION), their rows matched to the held-out setting's
SHIFT = {SHIFTED: "members vs held-out images through another acquisition pipeline (a subtle shift)"}
ALL_SETTINGS = {**SETTINGS, **SHIFT}
SECMI_NN_T = 100        # the t_sec whose residual maps SecMI_NNs classifies (the paper's default)
SECMI_NN_SHARE = 0.2    # SecMI_NNs trains on 20% of the rows (drawn from the training rows)


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


def rows(target: Target, setting: str) -> Rows:
    """The seeded training rows of members and of the setting's non-members (the same members in every setting)."""
    if setting not in ALL_SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose from {sorted(ALL_SETTINGS)}")
    n = {s: len(target.image_sets[s]) for s in ("member", setting) if s != SHIFTED}
    if setting == SHIFTED:
        n[SHIFTED] = len(target.shifted_positions)
    masks = {s: target.run.train_mask(k, f"probe:{s}") for s, k in n.items()}
    return Rows(setting, masks, n)


def matched(target: Target, result: "Result") -> np.ndarray:
    """A held-out-setting result's evaluation scores on the shifted setting's evaluation rows: the same members,
    and each shifted image's own held-out original (:meth:`Target.matched_heldout_rows`), in the shifted rows'
    order, so that the two settings compare row for row."""
    r = rows(target, "heldout")
    n_pos = int((~r.masks["member"]).sum())
    scores = np.asarray(result.eval_scores)
    return np.r_[scores[:n_pos], scores[n_pos:][target.matched_heldout_rows()]]


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


def threshold_report(run: Run, y_ev, s_ev, y_cal, s_cal) -> dict:
    """Evaluation-row metrics, with both thresholds set on calibration rows (``y_cal``, ``s_cal``:
    training rows, scored by a method not fitted on them): the ASR threshold (best balanced accuracy)
    and the operating point calibrated for 1% FPR (``op_*``: the TPR and FPR it gets on evaluation rows)."""
    rep = binary_report(y_ev, s_ev, threshold=best_threshold(y_cal, s_cal), n_boot=run.n_bootstrap, seed=run.seed)
    thr = threshold_at_fpr(y_cal, s_cal, OPERATING_FPR)
    op = operating_point(y_ev, s_ev, thr, n_boot=run.n_bootstrap, seed=run.seed)
    return {**rep, "op_threshold": float(thr), **{f"op_{k}": v for k, v in op.items()}}


def single_score(run: Run, r: Rows, name: str, scores: dict, ts, cost: dict, seconds: float) -> Result:
    """A score per timestep (higher = member): t chosen by training-row AUC, every t's AUC kept."""
    tr, ev = r.stack(scores, "train"), r.stack(scores, "eval")
    y_tr, y_ev = r.labels("train"), r.labels("eval")
    per_t = {int(t): (auc(y_tr, tr[:, j]), auc(y_ev, ev[:, j])) for j, t in enumerate(ts)}
    j = int(np.argmax([per_t[int(t)][0] for t in ts]))
    report = threshold_report(run, y_ev, ev[:, j], y_tr, tr[:, j])
    return Result(name, report, cost["forward"], cost["backward"], seconds, int(ts[j]), per_t, ev[:, j])


def cv_scores(fit_score, X, y, seed: int, folds: int = 5) -> np.ndarray:
    """Out-of-fold scores of ``fit_score(X_train, y_train, X_test)`` on ``X`` (for thresholds)."""
    out = np.empty(len(y))
    for a, b in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        out[b] = fit_score(X[a], y[a], X[b])
    return out


def fitted(run: Run, r: Rows, name: str, X: dict, fit_score, cost: dict, seconds: float) -> Result:
    """A method fitted on training rows: evaluation scores, and its threshold from out-of-fold training scores."""
    X_tr, X_ev = r.stack(X, "train"), r.stack(X, "eval")
    y_tr, y_ev = r.labels("train"), r.labels("eval")
    s_ev = fit_score(X_tr, y_tr, X_ev)
    report = threshold_report(run, y_ev, s_ev, y_tr, cv_scores(fit_score, X_tr, y_tr, run.seed))
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


def cnn(run: Run, r: Rows, name: str, X: dict, cost: dict, seconds: float, *, share: float | None,
        scorer, progress: bool = False) -> Result:
    """A CNN method: trained on (a share of) the training rows minus a held-back fifth that sets its threshold."""
    X_tr, X_ev = r.stack(X, "train"), r.stack(X, "eval")
    y_tr, y_ev = r.labels("train"), r.labels("eval")
    rng = np.random.default_rng(stream_seed(run.seed, f"cnn:{name}"))
    calib = np.zeros(len(y_tr), bool)
    for c in (0, 1):
        idx = np.flatnonzero(y_tr == c)
        calib[rng.choice(idx, max(1, len(idx) // 5), replace=False)] = True
    fit = np.flatnonzero(~calib)
    if share is not None:  # SecMI_NNs: 20% of all rows of the setting, drawn from the training rows
        n_fit = int(round(share * (len(y_tr) + len(y_ev))))
        fit = np.sort(rng.choice(fit, min(n_fit, len(fit)), replace=False))
    both = scorer(torch.as_tensor(X_tr[fit]), y_tr[fit], torch.cat([torch.as_tensor(X_tr[calib]),
                                                                   torch.as_tensor(X_ev)]), run.seed, progress)
    s_cal, s_ev = both[:calib.sum()], both[calib.sum():]
    report = threshold_report(run, y_ev, s_ev, y_tr[calib], s_cal)
    return Result(name, report, cost["forward"], cost["backward"], seconds, eval_scores=s_ev)


def evaluation(target: Target, setting: str, *, progress: bool = True) -> dict[str, Result]:
    """:func:`evaluate`, cached (pickle-free) under the target's weights and evaluated images, the parameters
    and the code's version."""
    run = target.run
    key = {"model": target.fingerprint, "target": target.name, "evaluated": target.evaluated,
           "setting": setting,
           "params": {k: getattr(run, k) for k in ("seed", "probe_train_frac", "n_bootstrap", "timestep_stride")},
           "code": code_version(sys.modules[__name__], measurements, attacks, gsa, pia, secmi, sima, attacks.blind,
                                attacks.loss, classifiers, probe, metrics, ddim, trajectory, persample, artifacts)}
    state = cached_state("evaluation", key, lambda: {name: result_state(r) for name, r in
                                                     evaluate(target, setting, progress=progress).items()})
    return {name: result_from_state(fields) for name, fields in state.items()}


def result_from_state(fields: dict) -> Result:
    """The :class:`Result` stored by :func:`result_state`."""
    scores = fields["eval_scores"]
    return Result(**{**fields, "eval_scores": None if scores is None else scores.numpy()})


def result_state(r: Result) -> dict:
    """A :class:`Result` as a pickle-free state (:func:`provlib.io.save_state`)."""
    return {"method": r.method, "report": r.report, "forward": r.forward, "backward": r.backward,
            "seconds_per_image": float(r.seconds_per_image), "chosen_t": r.chosen_t,
            "per_t": {int(t): tuple(float(v) for v in aucs) for t, aucs in r.per_t.items()},
            "eval_scores": None if r.eval_scores is None else torch.as_tensor(np.asarray(r.eval_scores, np.float64))}


def evaluate(target: Target, setting: str, *, progress: bool = True) -> dict[str, Result]:
    """Every method of the membership comparison on one setting of one target (Table 2)."""
    run, r, splits = target.run, rows(target, setting), ("member", setting)
    m = {meth: {s: measure(target, meth, s, progress=progress) for s in splits} for meth in MEASURES}
    sec = {meth: _mean_seconds(m[meth], r) for meth in MEASURES}
    traj = {s: m["trajectory"][s] for s in splits}
    per_pass = sec["sima"] / len(BASELINE_TIMESTEPS["sima"])  # one forward at a batch of images, as SimA timed it
    out = {"Loss": single_score(run, r, "Loss", *_loss_scores(run, traj, m["loss"]), attacks.passes("loss", [0]),
                                per_pass)}
    for meth, name in (("pia", "PIA"), ("pian", "PIAN"), ("sima", "SimA"), ("secmi", "SecMI_stat")):
        out[name] = _single_peer(run, r, meth, name, {s: -m[meth][s]["values"].numpy() for s in splits}, sec[meth])
    for meth, name in (("gsa1", "GSA_1"), ("gsa2", "GSA_2")):
        X = {s: m[meth][s]["values"].numpy() for s in splits}
        out[name] = fitted(run, r, name, X, lambda a, b, c: gsa.gsa_scores(a, b, c, seed=run.seed),
                           attacks.passes(meth, gsa_timesteps(run)), sec[meth])
    j = BASELINE_TIMESTEPS["secmi"].index(SECMI_NN_T)
    maps = {s: m["secmi"][s]["residuals"][:, j].numpy() for s in splits}
    out["SecMI_NNs"] = cnn(run, r, "SecMI_NNs", maps, attacks.passes("secmi_nn", [SECMI_NN_T], k=SECMI_K),
                           sec["secmi"], share=SECMI_NN_SHARE,
                           scorer=lambda a, b, c, seed, p: secmi.secmi_nn(a, b, c, seed=seed, progress=p),
                           progress=progress)
    images = {s: split_images(target, s).images.numpy() for s in splits}
    out["model-blind CNN"] = cnn(run, r, "model-blind CNN", images, attacks.passes("blind"), 0.0, share=None,
                                 scorer=blind_scores, progress=progress)
    X = {s: trajectory_matrix(traj[s]) for s in splits}
    out["Trajectory probe"] = fitted(run, r, "Trajectory probe", X, probe_fit_score(run.seed),
                                     attacks.passes("trajectory", run.grid, features=FEATURES), sec["trajectory"])
    return out


def blind_scores(train, labels, scored, seed: int, progress: bool) -> np.ndarray:
    """The model-blind CNN's scores (:func:`provlib.attacks.blind_scores`), cached under the content of its
    images, labels and seed: it never reads the model, so two targets that share images and rows (one latent
    model under two conditionings) share its training."""
    key = {"train": tensor_sha256(train), "labels": tensor_sha256(torch.as_tensor(np.asarray(labels))),
           "scored": tensor_sha256(scored), "seed": int(seed), "recipe": attacks.blind.RECIPE,
           "code": code_version(attacks.blind, classifiers)}
    state = cached_state("model-blind", key, lambda: torch.as_tensor(
        attacks.blind_scores(train, labels, scored, seed=seed, progress=progress)))
    return state.numpy()


def _loss_scores(run: Run, traj: dict, small_t: dict) -> tuple[dict, np.ndarray]:
    """The loss attack's scores ``-log L_t`` over the trajectory grid and the small t measured beside it
    (:data:`BASELINE_TIMESTEPS` ``["loss"]``, those not on the grid), columns in order of t; and those t."""
    extra = [j for j, t in enumerate(BASELINE_TIMESTEPS["loss"]) if t not in set(run.grid.tolist())]
    ts = np.r_[run.grid, np.asarray(BASELINE_TIMESTEPS["loss"])[extra]].astype(int)
    order = np.argsort(ts, kind="stable")
    scores = {s: -np.log(np.c_[traj[s]["loss"].numpy(), small_t[s]["values"].numpy()[:, extra]])[:, order]
              for s in traj}
    return scores, ts[order]


def _single_peer(run: Run, r: Rows, meth: str, name: str, scores: dict, seconds: float) -> Result:
    """A peer's score over its timesteps (:func:`single_score`), costed at the chosen t: its passes, and its
    share of the measured seconds of the run over every t."""
    ts, attack = BASELINE_TIMESTEPS[meth], {"secmi": "secmi_stat"}.get(meth, meth)
    res = single_score(run, r, name, scores, ts, {"forward": 0, "backward": 0}, 0.0)
    one, every = attacks.passes(attack, [res.chosen_t], k=SECMI_K), attacks.passes(attack, ts, k=SECMI_K)
    res.forward, res.backward = one["forward"], one["backward"]
    res.seconds_per_image = seconds * one["forward"] / every["forward"]  # the chosen t's share of the run
    return res


def _mean_seconds(by_split: dict, r: Rows) -> float:
    n = {s: r.counts[s] for s in by_split}
    return sum(by_split[s]["seconds_per_image"] * n[s] for s in by_split) / sum(n.values())


# ----------------------------------------------------------------------------- probes on parts of the features

def trajectory_rows(target: Target, setting: str) -> tuple[Rows, dict]:
    """The setting's rows and the trajectory features of its two splits (with their compute time)."""
    return rows(target, setting), {s: measure(target, "trajectory", s, progress=False) for s in ("member", setting)}


def per_pass_seconds(target: Target, setting: str) -> dict:
    """Measured seconds per image of one forward pass (SimA's run) and of one forward + backward row
    of the trajectory kernel (the features' run), for costing probes on parts of the grid."""
    r = rows(target, setting)
    sima_m = {s: measure(target, "sima", s, progress=False) for s in ("member", setting)}
    traj_m = {s: measure(target, "trajectory", s, progress=False) for s in ("member", setting)}
    return {"forward": _mean_seconds(sima_m, r) / len(BASELINE_TIMESTEPS["sima"]),
            "forward+backward": _mean_seconds(traj_m, r) / len(target.run.grid)}


def probe_result(run: Run, r: Rows, feats: dict, *, families=FEATURES, columns=None, name: str = "probe",
                 pass_seconds: dict | None = None) -> Result:
    """The linear probe on ``families`` at grid ``columns`` (default: all), evaluated like every method."""
    X = {s: trajectory_matrix(f, families, columns) for s, f in feats.items()}
    n_t = len(np.arange(len(run.grid))[slice(None) if columns is None else columns])
    cost = attacks.passes("trajectory", range(n_t), features=families)
    seconds = 0.0
    if pass_seconds is not None:
        seconds = n_t * pass_seconds["forward+backward" if cost["backward"] else "forward"]
    return fitted(run, r, name, X, probe_fit_score(run.seed), cost, seconds)


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
