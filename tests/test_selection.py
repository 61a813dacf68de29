"""The budget chain (provlib.detector.selection.budget_chain / select): a peer's single column wins when nothing
beats it, and the chosen probes never get worse with the budget."""
import numpy as np
import pytest

from provlib.detector import selection as S


def blocks_data(n=400, seed=0, k=2):
    """Ten columns: a weak signal spread over columns 0-5 (a 'family'), noise in 6-9."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.normal(size=(n, 10))
    X[:, :6] += 0.35 * y[:, None] + 0.3 * rng.normal(size=(n, 1))
    return X, y


COSTS = np.array([1, 1, 2, 2, 5, 5, 1, 1, 3, 10])
cost = lambda idx: float(COSTS[list(idx)].sum())  # noqa: E731


def test_a_single_optimal_column_is_the_probe_at_every_budget():
    rng = np.random.default_rng(1)
    y = np.arange(300) % 2
    X = rng.normal(size=(300, 10))
    X[:, :6] += 0.8 * y[:, None]                 # strong, imperfect columns (a peer's family)
    X[:, 3] = np.where(y == 1, 5.0, -5.0) + rng.uniform(-1, 1, 300)   # one column separates the classes
    for c in S.select(X, y, cost, [1, 2, 5, 25, np.inf], blocks=[[0, 1, 2, 4, 5]]):
        if c.budget < COSTS[3]:
            assert 3 not in c.columns
        else:
            assert c.columns == (3,) and c.single and c.shrinkage is None, c
            assert c.criterion == (1.0, 1.0) and c.nested == (1.0, 1.0)


@pytest.mark.parametrize("k", [2, 3])
def test_the_chosen_probes_cross_validated_scores_never_decrease_with_the_budget(k):
    X, y = blocks_data(k=k)
    budgets = [1, 2, 3, 5, 10, 25, np.inf]
    chain = S.budget_chain(X, y, cost, budgets, blocks=[list(range(6))])
    assert all(b.criterion >= a.criterion for a, b in zip(chain, chain[1:]))
    assert all(c.cost <= c.budget for c in chain)
    chosen = S.select(X, y, cost, budgets, blocks=[list(range(6))])
    assert [c.budget for c in chosen] == budgets
    assert all(b.nested >= a.nested for a, b in zip(chosen, chosen[1:]))
    for c in chosen:   # a kept probe is the smaller budget's, column for column
        if c.kept_from is not None:
            assert c.columns == next(d for d in chosen if d.budget == c.kept_from).columns
    assert any(len(c.columns) > 1 for c in chosen)   # the spread signal is worth combining


def test_no_budget_weighs_every_column_with_its_shrinkage_chosen_by_the_same_criterion():
    X, y = blocks_data(seed=5)
    last = S.budget_chain(X, y, cost, [1, np.inf])[-1]
    judge = S.Judge(X, y, S._folds(y, 5, 0), 0.01)
    every = tuple(range(10))
    best = max(judge(every, s) for s in S.SHRINKAGES)
    assert last.criterion >= best and last.criterion >= judge(last.columns)


def test_bad_input_is_named():
    X, y = blocks_data()
    with pytest.raises(ValueError, match="non-finite"):
        S.select(np.full_like(X, np.nan), y, cost, [1])
    with pytest.raises(ValueError, match="blocks"):
        S.budget_chain(X, y, cost, [1], blocks=[[11]])
    assert S.budget_chain(X, y, lambda idx: 99.0, [1, 2]) == []   # nothing fits: no probe, said by an empty chain
