"""The strongest membership detector a budget of UNet passes per image allows: the combined probe.

Every feature family of :mod:`provlib.study.measurements` (the trajectory's L,
grad_x, grad_theta; SimA's clean-image prediction norms; PIA's eps consistency;
SecMI's t-error), one probe.  For each budget of :data:`BUDGETS` passes per
image (forward + backward), the columns are chosen on the training rows only
(:func:`provlib.detector.selection.greedy_select`), then two classifiers are fitted on
the training rows at the same columns and evaluated like every method of the
membership study (:func:`provlib.study.membership.fitted`: thresholds from
out-of-fold training scores, metrics on evaluation rows with intervals):

- the linear probe (:class:`provlib.probe.LinearProbe`), and
- histogram gradient boosting (GSA's classifier, :func:`provlib.attacks.gsa.gsa_classifier`),
  to see whether linearity costs anything.

``"full"`` is every column of every family, without selection.

The same selection serves the two other questions (notebook 15): 3-way origin
(:func:`three_way`, the columns chosen by the macro criterion on the 3-way
training rows) and open-world attribution (:func:`open_world`), each against
every peer's signal used as a probe.  :func:`default_budget` reads
``provlib fit``'s default budget off the 3-way results.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from .. import attacks, classifiers, metrics, probe
from ..attacks import gsa
from ..attacks.passes import passes_of, total_passes
from ..detector import selection
from ..detector.columns import describe, family_blocks
from ..io import cached_state, code_version
from ..kernels import ddim, persample, trajectory
from . import artifacts, generators, origin
from . import measurements as G
from . import membership as M
from .run import Run, Target

BUDGETS = (1, 2, 5, 10, 25, 50, 100)   # UNet passes per image (forward + backward)
FULL = "full"
LINEAR, TREES = "Combined probe", "Combined boosted trees"


@dataclass
class Budgeted:
    """One budget: the columns chosen on training rows, and both classifiers' results at them."""

    budget: int | str
    columns: list[tuple[str, int]]
    linear: M.Result
    trees: M.Result
    criterion: tuple[float, float] = (float("nan"), float("nan"))   # training rows' cross-validated (TPR@1%, AUC)


def method_name(kind: str, budget) -> str:
    return f"{kind} (all families)" if budget == FULL else f"{kind} (<= {budget} passes)"


def evaluate(target: Target, setting: str, *, progress: bool = True) -> list[Budgeted]:
    """The combined probe at every budget and on every column, on one setting of one target."""
    run, r, splits = target.run, M.rows(target, setting), ("member", setting)
    cols = G.columns(run)
    X = {s: G.matrix(G.values(target, s, progress=progress), cols, run) for s in splits}
    X_tr, y_tr = r.stack(X, "train"), r.labels("train")
    per_pass = M.per_pass_seconds(target, setting)
    seed = run.seed
    cost = lambda idx: total_passes([cols[i] for i in idx])  # noqa: E731
    memo, done, out = {}, {}, []
    for budget in (*BUDGETS, FULL):
        if budget == FULL:
            idx, crit = tuple(range(len(cols))), (float("nan"), float("nan"))
        else:
            sel = selection.greedy_select(X_tr, y_tr, cost, budget, blocks=family_blocks(cols), seed=seed,
                                          max_fpr=M.OPERATING_FPR, memo=memo)
            idx, crit = sel.columns, sel.criterion
        chosen = [cols[i] for i in idx]
        if not chosen:
            continue
        key = tuple(sorted(idx))
        if key not in done:
            Xs = {s: X[s][:, list(key)] for s in splits}
            passes, secs = passes_of(chosen), G.seconds_of(chosen, per_pass)
            lin = M.fitted(run, r, "", Xs, M.probe_fit_score(seed), passes, secs)
            trees = M.fitted(run, r, "", Xs, lambda a, b, c: gsa.gsa_scores(a, b, c, seed=seed), passes, secs)
            done[key] = (lin, trees)
        lin, trees = (M.Result(**{**vars(res), "method": method_name(kind, budget)})
                      for res, kind in zip(done[key], (LINEAR, TREES)))
        out.append(Budgeted(budget, chosen, lin, trees, crit))
    return out


def evaluation(target: Target, setting: str, *, progress: bool = True) -> list[Budgeted]:
    """:func:`evaluate`, cached (pickle-free) under the target's weights and evaluated images, the parameters
    and the code's version."""
    run = target.run
    key = {"model": target.fingerprint, "target": target.name, "evaluated": target.evaluated,
           "setting": setting,
           "params": {k: getattr(run, k) for k in ("seed", "probe_train_frac", "n_bootstrap", "timestep_stride")},
           "code": code_version(sys.modules[__name__], G, M, selection, probe, metrics, gsa, attacks.sima,
                                attacks.pia, attacks.secmi, classifiers, ddim, trajectory, persample, artifacts)}
    state = cached_state("combined-evaluation", key, lambda: [
        {"budget": b.budget, "columns": [[f, int(t)] for f, t in b.columns], "criterion": list(b.criterion),
         "linear": M.result_state(b.linear), "trees": M.result_state(b.trees)}
        for b in evaluate(target, setting, progress=progress)])
    return [Budgeted(d["budget"], [(f, int(t)) for f, t in d["columns"]], M.result_from_state(d["linear"]),
                     M.result_from_state(d["trees"]), tuple(d["criterion"])) for d in state]


# ----------------------------------------------------------------------------- 3-way origin and open-world attribution

FAMILY_PROBES = {"Loss probe": ("loss",), "Trajectory probe": ("loss", "grad_x", "grad_theta"),
                 "SimA probe": ("sima_l4",), "PIA probe": ("pia",), "SecMI probe": ("secmi",)}


def _budget_columns(run: Run, X_tr: np.ndarray, y_tr: np.ndarray, cols: list) -> dict:
    """``{method name: columns}``: each peer's family over its t grid, and the greedy choice at each budget."""
    cost = lambda idx: total_passes([cols[i] for i in idx])  # noqa: E731
    out = {name: G.columns(run, fams) for name, fams in FAMILY_PROBES.items()}
    memo = {}
    for budget in BUDGETS:
        sel = selection.greedy_select(X_tr, y_tr, cost, budget, blocks=family_blocks(cols), seed=run.seed,
                                      max_fpr=M.OPERATING_FPR, memo=memo)
        if sel.columns:
            out[method_name(LINEAR, budget)] = [cols[i] for i in sel.columns]
    out[method_name(LINEAR, FULL)] = cols
    return out


def three_way(target: Target, setting: str) -> list[dict]:
    """3-way origin (member / generated / non-member) for each peer's signal as a probe, the trajectory
    probe, and the combined probe at every budget (columns chosen on the 3-way training rows, by the macro
    criterion): one row per method with its passes, seconds and :func:`.origin.multiclass_report`, and the
    evaluation rows' ``labels`` and the method's class ``probabilities`` (tensors; the same rows for every method)."""
    run, cols = target.run, G.columns(target.run)
    X_tr, y_tr = origin.three_way_rows(target, setting, "train", columns=cols)
    X_ev, y_ev = origin.three_way_rows(target, setting, "eval", columns=cols)
    index = {c: j for j, c in enumerate(cols)}
    per_pass = M.per_pass_seconds(target, setting)
    rows = []
    for method, chosen in _budget_columns(run, X_tr, y_tr, cols).items():
        j = [index[c] for c in chosen]
        rep = origin.three_way_fit(run, X_tr[:, j], y_tr, X_ev[:, j], y_ev)
        labels, probabilities = rep.pop("labels"), rep.pop("probabilities")
        rows.append({"method": method, "budget": budget_of(method), "passes": total_passes(chosen),
                     "seconds": G.seconds_of(chosen, per_pass),
                     "columns": describe(chosen), **{k: v for k, v in rep.items() if not isinstance(v, (dict, list))},
                     "negatives": min(rep["negatives"].values()), "confusion": rep["confusion"],
                     "labels": torch.as_tensor(labels), "probabilities": torch.as_tensor(probabilities)})
    return rows


def open_world(target: Target) -> dict:
    """Open-world attribution (:func:`provlib.study.origin.attribution`) with each peer's signal as a probe and
    the combined probe at every budget (columns chosen on the attribution training rows), beside the
    trajectory probe, the loss and the SeDID-style t-error: ``{method: result}``, each with its ``passes``
    and ``columns``."""
    cols = G.columns(target.run)
    X_tr, y_tr = origin.attribution_rows(target, columns=cols)
    probes = {m: c for m, c in _budget_columns(target.run, X_tr, y_tr, cols).items() if m != "Trajectory probe"}
    res = origin.attribution(target, probes=probes)
    for method, r in res.items():
        if method in probes:
            chosen = probes[method]
        elif method == "Trajectory probe":
            chosen = G.columns(target.run, FAMILY_PROBES["Trajectory probe"])
        elif method == "Loss":
            chosen = [("loss", r["chosen_t"])]
        else:
            chosen = [("secmi", r["chosen_t"])]
        r["passes"], r["columns"], r["budget"] = total_passes(chosen), describe(chosen), budget_of(method)
        for v in r["rows"].values():
            v["hits"] = torch.as_tensor(v["hits"])
    return res


def budget_of(method: str) -> str:
    """The budget of a combined probe's method name (``"5"``, ``"full"``); ``""`` for any other method."""
    names = {method_name(LINEAR, b): str(b) for b in (*BUDGETS, FULL)}
    return names.get(method, "")


def default_budget(rows: list[dict]) -> int:
    """The smallest budget whose combined probe's macro TPR@1% lies within the 95% interval of the best
    combined probe (all families included) in every setting: ``rows`` as :func:`three_way` returns them,
    each with its ``setting``.  ``provlib fit``'s default (:data:`provlib.detector.origin_probe.DEFAULT_BUDGET`)."""
    m = "macro_tpr@1%"
    chosen = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        comb = [r for r in rows if r["setting"] == setting and r["budget"]]
        best = max(comb, key=lambda r: r[m])
        ok = [int(r["budget"]) for r in comb if r["budget"] != FULL and r[m] >= best[f"{m}_lo"]]
        chosen.append(min(ok) if ok else max(BUDGETS))
    return max(chosen)


def covering_pairs(table, combined, others) -> list[tuple]:
    """``[(combined row, other row), ...]``: every pair of a combined probe and another method where the combined
    probe's budget covers the other's cost (``"full"`` covers any).  ``table`` (a DataFrame with ``budget`` and
    ``passes`` columns) holds both; ``combined`` and ``others`` are boolean masks of its rows.  The rows the claim
    "the combined probe is at least as good as every peer at every budget at or above the peer's cost" is about."""
    return [(c.Index, o.Index) for o in table[others].itertuples() for c in table[combined].itertuples()
            if c.budget == FULL or int(c.budget) >= o.passes]


def worst_margin(table, metric: str, combined, others) -> tuple:
    """``(margin, combined row, other row)``: the smallest point-estimate margin in ``metric`` of a combined probe
    over another method, over the :func:`covering_pairs`."""
    worst = None
    for ci, oi in covering_pairs(table, combined, others):
        margin = table.loc[ci, metric] - table.loc[oi, metric]
        if worst is None or margin < worst[0]:
            worst = (margin, ci, oi)
    return worst


def _cached(kind: str, target: Target, extra: dict, compute):
    """``compute()``'s JSON-able result, cached (pickle-free) under the target's weights, the parameters the
    origin study reads, and the code's version."""
    run = target.run
    key = {"model": target.fingerprint, "target": target.name, "evaluated": target.evaluated, **extra,
           "params": {k: v for k, v in run.values().items()   # those the run was given (3-way reads no open world)
                      if k in ("seed", "probe_train_frac", "n_bootstrap", "timestep_stride", "n_generated",
                               "sampler_steps", "open_world", "n_open_world")},
           "code": code_version(sys.modules[__name__], G, M, origin, generators, selection, probe, metrics,
                                attacks.sima, attacks.pia, attacks.secmi, classifiers, ddim, trajectory, persample,
                                artifacts)}
    return cached_state(kind, key, compute)


def three_way_evaluation(target: Target, setting: str) -> list[dict]:
    """:func:`three_way`, cached."""
    return _cached("combined-three-way", target, {"setting": setting}, lambda: three_way(target, setting))


def open_world_evaluation(target: Target) -> dict:
    """:func:`open_world`, cached."""
    return _cached("combined-open-world", target, {}, lambda: open_world(target))


__all__ = ["BUDGETS", "FULL", "Budgeted", "evaluate", "evaluation", "describe", "method_name", "three_way",
           "three_way_evaluation", "open_world", "open_world_evaluation", "budget_of", "default_budget",
           "covering_pairs", "worst_margin", "FAMILY_PROBES"]
