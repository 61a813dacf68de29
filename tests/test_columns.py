"""The combined probe's feature families and its budgets: each family's kernel against a per-image float64
loop (the trajectory families: tests/test_trajectory.py; SecMI's t-error: tests/test_ddim.py), pass counting,
and budgets that are never exceeded."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from provlib import attacks
from provlib.attacks.passes import FAMILIES, passes_of, total_passes
from provlib.detector.selection import cv_criterion, greedy_select
from provlib.study import measurements as G
from provlib.study import Run


@pytest.fixture(scope="module")
def images():
    return torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1


def _eps64(unet64, x, t):
    return unet64(x[None].double(), torch.tensor([t])).sample[0]


def test_clean_image_and_pia_families_match_a_float64_loop(model, images):
    unet, sched = model
    u64 = copy.deepcopy(unet).double()
    ts = [0, 20, 150]
    norms = attacks.sima_norms(unet, sched, images, ts, powers=(2, 4), batch_size=2, device="cpu")
    pia = attacks.pia_distance(unet, sched, images, ts[1:], batch_size=3, device="cpu")
    abar = sched.alphas_cumprod.double()
    with torch.no_grad():
        for i, x in enumerate(images):
            eps0 = _eps64(u64, x, 0)
            for j, t in enumerate(ts):
                e = _eps64(u64, x, t)
                assert float(norms[2][i, j]) == pytest.approx(float(e.pow(2).sum()), rel=1e-4)
                assert float(norms[4][i, j]) == pytest.approx(float(e.pow(4).sum()), rel=1e-4)
            for j, t in enumerate(ts[1:]):
                xt = abar[t].sqrt() * x.double() + (1 - abar[t]).sqrt() * eps0
                ref = float((eps0 - _eps64(u64, xt, t)).pow(4).sum())
                assert float(pia[i, j]) == pytest.approx(ref, rel=1e-3)
    torch.testing.assert_close(attacks.sima_norm(unet, sched, images, ts, device="cpu"), norms[4])


def test_the_families_read_the_measurements_the_study_caches():
    p = Run.from_profile("tiny")
    cols = G.columns(p)
    assert len(cols) == len(set(cols)) and {f for f, _ in cols} == set(FAMILIES)
    values = {f: np.arange(1, 1 + 3 * len(G.family_timesteps(p, f)), dtype=float).reshape(3, -1) for f in FAMILIES}
    pick = [("secmi", 100), ("loss", 200), ("sima_l2", 0)]
    X = G.matrix(values, pick, p)
    expect = [values["secmi"][:, G.family_timesteps(p, "secmi").index(100)],
              values["loss"][:, G.family_timesteps(p, "loss").index(200)], values["sima_l2"][:, 0]]
    np.testing.assert_allclose(X, np.log(np.stack(expect, 1)))
    with pytest.raises(ValueError, match="unknown feature family"):
        passes_of([("lossy", 0)])


def test_passes_count_shared_passes_once_and_equal_each_peers_cost():
    """Each peer's family over its grid costs what the peer's own run costs (counted by hand)."""
    p = Run.from_profile("cpu")
    assert passes_of(G.columns(p, ["sima_l4"])) == {"forward": 9, "backward": 0}      # one forward per t
    assert passes_of(G.columns(p, ["pia"])) == {"forward": 1 + 7, "backward": 0}      # eps0, then one per t
    # SecMI at t_sec 10, 20, 50, 100, 200 (k = 10): one inversion to 190 (19 steps) and a 2-call round trip per t_sec
    assert passes_of(G.columns(p, ["secmi"])) == {"forward": 19 + 2 * 5, "backward": 0}
    assert passes_of(G.columns(p, ["loss", "grad_x", "grad_theta"])) == {"forward": 20, "backward": 20}
    assert total_passes([("loss", 100), ("grad_x", 100), ("grad_theta", 100)]) == 2   # one forward, one backward
    assert total_passes([("sima_l2", 20), ("sima_l4", 20)]) == 1
    assert total_passes([("pia", 100), ("pia", 200)]) == 3         # one eps0 forward, one per t
    assert total_passes([("sima_l4", 0), ("pia", 200)]) == 3       # PIA's eps0 forward is its own
    assert total_passes([("secmi", 50), ("secmi", 100)]) == 9 + 2 * 2   # one inversion to 90, two round trips


def test_a_budget_is_never_exceeded():
    p = Run.from_profile("cpu")
    cols = G.columns(p)
    cost = lambda idx: total_passes([cols[i] for i in idx])   # noqa: E731
    for budget in (1, 2, 3, 5, 10, 25):
        rng = np.random.default_rng(budget)
        y = np.r_[np.ones(40, int), np.zeros(40, int)]
        X = rng.standard_normal((80, len(cols))) + 0.3 * y[:, None] * rng.random(len(cols))
        sel = greedy_select(X, y, cost, budget, candidates=range(0, len(cols), 3), max_columns=4)
        assert sel.columns and sel.cost == cost(sel.columns) <= budget
        assert [c for c, *_ in sel.path] == list(sel.columns)
        assert all(step[1] <= budget for step in sel.path)


def test_greedy_selection_finds_the_informative_column_and_uses_training_rows_only():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(100, int), np.zeros(100, int)]
    X = rng.standard_normal((200, 6))
    X[:, 4] += 3 * y
    costs = [1, 1, 1, 1, 2, 1]
    sel = greedy_select(X, y, lambda idx: sum(costs[i] for i in idx), 2)
    assert sel.columns[0] == 4 and sel.cost <= 2
    assert greedy_select(X, y, lambda idx: sum(costs[i] for i in idx), 1).columns[:1] != (4,)   # too dear
    tpr, auc = cv_criterion(X[:, [4]], y)
    assert auc > 0.95 and tpr > 0.3
    assert greedy_select(X, y, lambda idx: 5 * len(idx), 4).columns == ()   # no column fits
    with pytest.raises(ValueError, match="non-finite"):
        greedy_select(np.full((4, 2), np.nan), [0, 1, 0, 1], len, 3)


def test_a_block_strong_only_together_is_found_and_a_budget_still_holds():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(150, int), np.zeros(150, int)]
    z = 2 * rng.standard_normal(300)
    X = rng.standard_normal((300, 6))
    X[:, 0] = z + 0.2 * rng.standard_normal(300)
    X[:, 1] = z + 0.2 * rng.standard_normal(300) + 0.8 * y   # the signal is the difference of columns 0 and 1
    X[:, 2] += y                                              # the best column on its own
    cost = lambda idx: len(set(idx))                          # noqa: E731
    alone = greedy_select(X, y, cost, 2)
    assert alone.columns[0] == 2 and set(alone.columns) != {0, 1}   # one column at a time misses the pair
    sel = greedy_select(X, y, cost, 2, blocks=[[0, 1]])
    assert set(sel.columns) == {0, 1} and sel.cost == 2 and [c for c, *_ in sel.path] == list(sel.columns)
    assert greedy_select(X, y, cost, 1, blocks=[[0, 1]]).cost <= 1   # a block dearer than the budget is not taken
    with pytest.raises(ValueError, match="blocks"):
        greedy_select(X, y, cost, 2, blocks=[[0, 9]])


def test_family_blocks_are_the_peers_probes():
    from provlib.detector.columns import family_blocks
    cols = [("loss", 0), ("sima_l4", 0), ("grad_x", 0), ("sima_l4", 20), ("pia", 100)]
    assert family_blocks(cols) == [[0], [2], [1, 3], [4], [0, 2]]


def test_the_criterion_is_macro_for_three_classes():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1, 2], 60)
    X = rng.standard_normal((180, 3))
    X[:, 1] += 4 * (y == 1) - 4 * (y == 2)
    tpr, auc = cv_criterion(X[:, [1]], y)
    assert auc > 0.9 and 0.3 < tpr <= 1   # the member class (0) lies between the others: one-vs-rest is harder
    assert greedy_select(X, y, len, 1).columns == (1,)


# ----------------------------------------------------------------------------- columns of new images (provlib.detector.columns)

def _forward_rows(unet):
    """Count the images the UNet's forward sees (a hook), to check the work done against passes_of."""
    seen = []
    handle = unet.register_forward_hook(
        lambda mod, args, kwargs, out: seen.append(len(args[0] if args else kwargs["sample"])), with_kwargs=True)
    return seen, handle


def test_signal_values_equal_each_kernel_and_do_the_passes_they_count(model, images):
    from provlib.detector import columns as S
    from provlib.kernels.trajectory import trajectory_features

    unet, sched = model
    ids = [11, 12, 13, 14, 15]
    cols = [("loss", 100), ("grad_x", 300), ("grad_theta", 300), ("loss", 300), ("sima_l2", 20), ("sima_l4", 0),
            ("pia", 100), ("pia", 200), ("secmi", 50)]
    seen, handle = _forward_rows(unet)
    try:
        got = S.values(unet, sched, images, cols, seed=3, ids=ids)
    finally:
        handle.remove()
    traj = trajectory_features(unet, sched, images, [100, 300], seed=3, ids=ids)
    sima = attacks.sima_norms(unet, sched, images, [0, 20])
    expect = [traj["loss"][:, 0], traj["grad_x"][:, 1], traj["grad_theta"][:, 1], traj["loss"][:, 1],
              sima[2][:, 1], sima[4][:, 0], *attacks.pia_distance(unet, sched, images, [100, 200]).T,
              attacks.secmi_t_error(unet, sched, images, [50], 10)[:, 0]]
    np.testing.assert_allclose(got, torch.stack(expect, 1).double().numpy(), rtol=1e-5)
    # forwards per image: the trajectory's at 100 and 300, SimA's at 0 and 20, PIA's eps0 + 2, SecMI's inversion
    assert sum(seen) / len(images) == S.passes_of(cols)["forward"] == 2 + 2 + 3 + (4 + 2)
    assert S.passes_of(cols)["backward"] == 1


def test_signal_columns_are_checked():
    from provlib.detector import columns as S

    with pytest.raises(ValueError, match="unknown feature family 'lossy'"):
        S.check_columns([("lossy", 0)])
    with pytest.raises(ValueError, match="repeated"):
        S.check_columns([("loss", 0), ("loss", 0)])
    with pytest.raises(ValueError, match="integer"):
        S.check_columns([("loss", 0.5)])
    assert S.describe([("sima_l4", 20), ("loss", 40), ("loss", 0)]) == "loss@0,40; sima_l4@20"
