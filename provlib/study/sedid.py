"""The SeDID study (Ma et al., 2023): tell a target's own generated images from its training images.

SeDID's setting: the images to classify are the model's DDPM samples
(positives) and real images of its training split (negatives: the paper draws
its real images from the training split the models were trained on); here,
for each dataset's target, ``n_sedid`` of each, all put through the same 8-bit
PNG encoding (``@png``), so that no storage format tells the classes apart.
Rows are split as everywhere in the study: a seeded ``probe_train_frac`` of
each class trains (thresholds, ``T_SE``, networks, probes), the rest evaluates.

Methods on the same rows:

- ``Loss``: Matsumoto et al.'s loss attack, the paper's baseline: ``-L_t`` at
  the grid timestep with the best training-row AUC;
- ``SeDID_stat``: ``-t-error`` at the ``T_SE`` with the best training-row AUC
  (every ``T_SE``'s AUC, accuracy and TPRs kept: Table 1 and Figure 4);
- ``SeDID_NNs``: the ResNet on the intermediate results at that ``T_SE``,
  trained on 10% of the rows (the paper's recipe) or on every training row with
  more steps (``SeDID_NNs (adapted)``; see :mod:`provlib.attacks.sedid`);
- ``Trajectory probe``: *Tracing the Roots*' model-attribution probe (target
  samples vs real images) on the same rows, with its cost beside SeDID's.
"""
from __future__ import annotations

import numpy as np

from .. import attacks
from ..attacks import sedid
from ..io import code_version
from ..kernels import ddim
from ..metrics import auc
from .artifacts import chunked, split_images
from .measurements import measured
from .membership import (Result, Rows, cnn, fitted, probe_fit_score, single_score, threshold_report,
                         trajectory_matrix)
from .origin import mask
from .run import Run, Target, split_name

SPLITS = ("generated", "member")   # positives, negatives
K_SWEEP = (10, 33, 66, 165)        # step sizes of Figure 4's right panel, at T_SE_K
T_SE_K = 330


def splits(run: Run) -> dict[str, str]:
    """The split names of the two classes: ``n_sedid`` images each, PNG-encoded."""
    return {s: split_name(s, run.n_sedid, "png") for s in SPLITS}


def rows(target: Target) -> Rows:
    """Generated (label 1) vs member (label 0) rows; the training masks of :func:`provlib.study.origin.mask`."""
    names = splits(target.run)
    n = {s: len(split_images(target, names[s], progress=False)) for s in SPLITS}
    return Rows("member", {s: mask(target.run, names[s], n[s]) for s in SPLITS}, n, positive="generated")


def t_errors(target: Target, split: str, t_se, k: int, *, states: bool = False, progress: bool = True) -> dict:
    """SeDID's t-errors of one split at each ``T_SE`` of ``t_se`` with step ``k`` (cached per chunk):
    ``{"values": (N, T), ["states": (N, T, 2, H, W)], "seconds_per_image": s}``."""
    ts = [int(t) for t in t_se]
    c, h, w = target.config.space_shape

    def compute(model, part, cb):
        out = sedid.sedid_t_error(*model, part.images, ts, k, return_states=states, cond=part.cond)
        return {"values": out[0], "states": out[1]} if states else {"values": out}

    shapes = {"values": (len(ts),), **({"states": (len(ts), 2 * c, h, w)} if states else {})}
    return chunked(target, split, "sedid", {"t_se": ts, "k": k, "states": states},
                   code_version(sedid, attacks.secmi, ddim), compute, shapes, progress=progress)


def _both(target: Target, fn) -> dict:
    return {s: fn(name) for s, name in splits(target.run).items()}


def _errors(target: Target, *, progress: bool = True) -> dict:
    """Both classes' t-errors and intermediate states over the ``T_SE`` sweep (step :data:`provlib.attacks.sedid.K`)."""
    return _both(target, lambda s: t_errors(target, s, sedid.T_SE, sedid.K, states=True, progress=progress))


def _t_se_scores(target: Target, part: str, *, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, scores)`` of ``part``'s rows ("train" or "eval"): SeDID_stat's score ``-log t-error`` at
    each ``T_SE`` of :data:`provlib.attacks.sedid.T_SE`, one column each."""
    r = rows(target)
    err = _errors(target, progress=progress)
    scores = {s: -np.log(err[s]["values"].numpy()) for s in SPLITS}
    return r.labels(part), r.stack(scores, part)


def t_se_scores(target: Target, *, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, scores)`` of the evaluation rows: SeDID_stat's score at each ``T_SE`` (columns in the
    order of :data:`provlib.attacks.sedid.T_SE`), for paired comparisons of two ``T_SE`` on the same rows."""
    return _t_se_scores(target, "eval", progress=progress)


def t_se_sweep(target: Target, *, progress: bool = True) -> list[dict]:
    """SeDID_stat at each ``T_SE`` (Table 1, Figure 4): the evaluation-row report (AUC, accuracy at the
    training rows' threshold, TPR at low FPR with the negatives behind it) and the training-row AUC."""
    y_tr, tr = _t_se_scores(target, "train", progress=progress)
    y_ev, ev = _t_se_scores(target, "eval", progress=False)
    return [{"T_SE": int(t), "train_auc": auc(y_tr, tr[:, i]),
             **threshold_report(target.run, y_ev, ev[:, i], y_tr, tr[:, i])}
            for i, t in enumerate(sedid.T_SE)]


def evaluate(target: Target, *, progress: bool = True) -> dict[str, Result]:
    """Every method on one dataset's target, on the same rows (Table 2): ``{name: Result}``."""
    run, r = target.run, rows(target)
    err = _errors(target, progress=progress)
    traj = _both(target, lambda s: measured(target, "trajectory", s))
    sec = {name: float(np.mean([m[s]["seconds_per_image"] for s in SPLITS])) for name, m in
           (("sedid", err), ("trajectory", traj))}
    grid = run.grid
    out: dict[str, Result] = {}
    every = attacks.passes("sedid_stat", sedid.T_SE, k=sedid.K)
    per_pass = sec["sedid"] / every["forward"]   # one forward at a batch of images, as the t-error timed it
    out["Loss"] = single_score(run, r, "Loss", {s: -np.log(traj[s]["loss"].numpy()) for s in SPLITS}, grid,
                               attacks.passes("loss", [0]), per_pass)
    scores = {s: -np.log(err[s]["values"].numpy()) for s in SPLITS}
    stat = single_score(run, r, "SeDID_stat", scores, sedid.T_SE, {"forward": 0, "backward": 0}, 0.0)
    one = attacks.passes("sedid_stat", [stat.chosen_t], k=sedid.K)
    stat.forward, stat.seconds_per_image = one["forward"], per_pass * one["forward"]
    out["SeDID_stat"] = stat
    j = list(sedid.T_SE).index(stat.chosen_t)
    maps = {s: err[s]["states"][:, j].numpy() for s in SPLITS}
    for name, share, adapted in (("SeDID_NNs", 0.1, False), ("SeDID_NNs (adapted)", None, True)):
        res = cnn(run, r, name, maps, one, stat.seconds_per_image, share=share,
                  scorer=lambda a, b, c, seed, p, adapted=adapted: sedid.sedid_nn(a, b, c, seed=seed, adapted=adapted,
                                                                                 progress=p),
                  progress=progress)
        res.chosen_t = stat.chosen_t
        out[name] = res
    X = {s: trajectory_matrix(traj[s]) for s in SPLITS}
    out["Trajectory probe"] = fitted(run, r, "Trajectory probe", X, probe_fit_score(run.seed),
                                     attacks.passes("trajectory", grid, features=("loss", "grad_x", "grad_theta")),
                                     sec["trajectory"])
    return out


def k_sweep(target: Target, *, progress: bool = True) -> list[dict]:
    """SeDID_stat at ``T_SE`` = :data:`T_SE_K` for each step size of :data:`K_SWEEP`: AUC on training and
    evaluation rows, and the UNet calls per image."""
    r = rows(target)
    out = []
    for k in K_SWEEP:
        if k == sedid.K:   # a column of the T_SE sweep
            j = list(sedid.T_SE).index(T_SE_K)
            err = _errors(target, progress=progress)
        else:
            j = 0
            err = _both(target, lambda s, k=k: t_errors(target, s, [T_SE_K], k, progress=progress))
        s = {c: -np.log(err[c]["values"].numpy()[:, j]) for c in SPLITS}
        out.append({"k": k, "train_auc": auc(r.labels("train"), r.stack(s, "train")),
                    "auc": auc(r.labels("eval"), r.stack(s, "eval")),
                    "unet_calls": attacks.passes("sedid_stat", [T_SE_K], k=k)["forward"]})
    return out
