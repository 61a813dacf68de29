"""provlib.study.membership: rows, choices made on training rows only, budgets, cached evaluations."""
from __future__ import annotations

import numpy as np
import pytest

from provlib.study import Run
from provlib.study import membership as M
from provlib.study.measurements import gsa_timesteps


def test_gsa_reads_ten_evenly_spread_points_of_the_grid():
    assert gsa_timesteps(Run.from_profile("tiny")) == list(range(0, 1000, 100))
    cpu = gsa_timesteps(Run.from_profile("cpu"))
    assert len(cpu) == 10 and cpu[0] == 0 and cpu[-1] == 950 and all(t % 50 == 0 for t in cpu)


def test_rows_share_the_members_across_settings_and_never_mix_train_and_eval():
    target = Run.from_profile("tiny").target()
    held, ext = M.rows(target, "heldout"), M.rows(target, "external")
    assert (held.masks["member"] == ext.masks["member"]).all()
    for r in (held, ext):
        assert r.labels("train").sum() == r.masks["member"].sum()
        assert len(r.labels("eval")) == sum((~m).sum() for m in r.masks.values())
        values = {s: np.arange(len(m)) + (0 if s == "member" else 10_000) for s, m in r.masks.items()}
        assert not set(r.stack(values, "train")) & set(r.stack(values, "eval"))
    with pytest.raises(ValueError, match="unknown setting"):
        M.rows(target, "generated")


def test_single_score_methods_choose_their_timestep_on_training_rows():
    run = Run.from_profile("tiny", n_bootstrap=10)
    r = M.Rows("heldout", {"member": np.r_[np.ones(20, bool), np.zeros(20, bool)],
                           "heldout": np.r_[np.ones(20, bool), np.zeros(20, bool)]})
    rng = np.random.default_rng(0)
    y = {"member": 1, "heldout": 0}
    # column 0 separates only the training rows, column 1 only the evaluation rows
    scores = {s: np.stack([np.r_[np.full(20, float(y[s])), rng.random(20)],
                           np.r_[rng.random(20), np.full(20, float(y[s]))]], 1) for s in y}
    res = M.single_score(run, r, "x", scores, [10, 20], {"forward": 1, "backward": 0}, 0.0)
    assert res.chosen_t == 10                       # the training rows' choice, not the evaluation rows'
    assert res.per_t[10][0] == 1.0 and res.per_t[20][1] == 1.0
    assert res.report["auc"] < 0.9                  # and it is reported on the evaluation rows


def test_thresholds_come_from_scores_of_rows_the_method_was_not_fitted_on():
    X = np.arange(40, dtype=float)[:, None]
    y = np.r_[np.ones(20, int), np.zeros(20, int)]

    def memoriser(X_tr, y_tr, X_te):  # scores a row 1 only if it was among its training rows
        return np.isin(X_te[:, 0], X_tr[:, 0]).astype(float)

    assert (M.cv_scores(memoriser, X, y, seed=0) == 0).all()


def test_a_data_budget_keeps_the_evaluation_rows_and_shrinks_the_known_members():
    r = M.rows(Run.from_profile("tiny").target(), "heldout")
    rb, keep = M.with_budget(r, 0.25, seed=0)
    assert rb.masks["member"].sum() == round(0.25 * r.masks["member"].sum())
    assert (~rb.masks["member"]).sum() == (~r.masks["member"]).sum()
    assert (rb.masks["heldout"] == r.masks["heldout"]).all()
    members = np.arange(len(r.masks["member"]))
    assert set(members[keep["member"]][~rb.masks["member"]]) == set(members[~r.masks["member"]])
    with pytest.raises(ValueError, match="share must lie in"):
        M.with_budget(r, 0.0, seed=0)


def test_the_evaluation_is_cached_and_reloads_equal():
    target = Run.from_profile("tiny").target()
    first = M.evaluation(target, "external", progress=False)
    again = M.evaluation(Run.from_profile("tiny").target(), "external", progress=False)
    assert list(first) == list(again) and "Trajectory probe" in first and "SecMI_NNs" in first
    for name in first:
        assert first[name].report == again[name].report
        np.testing.assert_array_equal(first[name].eval_scores, again[name].eval_scores)
        assert first[name].report["n_pos"] + first[name].report["n_neg"] == len(first[name].eval_scores)


def test_the_operating_point_threshold_is_set_on_training_rows_and_can_miss_its_fpr():
    """Training scores of non-members sit lower than their evaluation scores: the threshold
    calibrated for 1% FPR on training rows lets through far more evaluation false positives."""
    run = Run.from_profile("tiny", n_bootstrap=10)
    r = M.Rows("heldout", {"member": np.r_[np.ones(100, bool), np.zeros(100, bool)],
                           "heldout": np.r_[np.ones(100, bool), np.zeros(100, bool)]})
    rng = np.random.default_rng(1)
    scores = {"member": (rng.normal(size=200) + 3)[:, None],
              "heldout": np.r_[rng.normal(size=100), rng.normal(size=100) + 2][:, None]}
    res = M.single_score(run, r, "x", scores, [0], {"forward": 1, "backward": 0}, 0.0)
    assert res.report["op_fpr"] > 0.2 and res.report["tpr@1%fpr"] <= 1.0


def test_the_model_blind_cnn_is_trained_once_per_content(monkeypatch):
    import torch

    from provlib import attacks
    calls = []

    def fake(train, labels, scored, *, seed, progress):
        calls.append(seed)
        return scored.flatten(1).float().mean(1).numpy() + seed

    monkeypatch.setattr(attacks, "blind_scores", fake)
    rng = np.random.default_rng(7)
    train, scored = torch.as_tensor(rng.normal(size=(8, 1, 4, 4))), torch.as_tensor(rng.normal(size=(5, 1, 4, 4)))
    labels = np.r_[np.ones(4, int), np.zeros(4, int)]
    first = M.blind_scores(train, labels, scored, 3, False)
    again = M.blind_scores(train.clone(), labels.copy(), scored.clone(), 3, False)   # other targets, same images
    assert calls == [3] and np.array_equal(first, again) and first.dtype == again.dtype
    M.blind_scores(train, labels[::-1].copy(), scored, 3, False)   # other labels: trained again
    M.blind_scores(train, labels, scored, 4, False)                # another seed: trained again
    assert calls == [3, 3, 4]
