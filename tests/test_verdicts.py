"""The claim helper: each of the four outcomes on constructed cases, for every kind of claim."""
from __future__ import annotations

import json

import numpy as np
import pytest

from provlib.report import verdicts as V

N_BOOT = 300


def _scores(seed: int, n: int = 400, signal: float = 1.0):
    """Labels, and a method's scores with ``signal`` standard deviations between the classes."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2, int), np.zeros(n // 2, int)]
    return y, rng.normal(size=n) + signal * y


def test_clear_win_holds_and_clear_loss_does_not():
    y, strong = _scores(0, signal=2.0)
    _, weak = _scores(1, signal=0.3)
    win = V.paired(y, strong, weak, "auc", n_boot=N_BOOT, seed=0)
    assert win.outcome == V.HOLDS and win.lo > 0 and win.estimate > 0.2
    loss = V.paired(y, weak, strong, "auc", n_boot=N_BOOT, seed=0)
    assert loss.outcome == V.FAILS and loss.hi < 0
    assert "difference" in win.interval and "[" in win.interval


def test_tie_within_noise_is_inconclusive():
    y, a = _scores(2, signal=1.0)
    b = a + np.random.default_rng(3).normal(scale=0.3, size=len(a))   # the same method, a little noise
    v = V.paired(y, a, b, "auc", n_boot=N_BOOT, seed=0)
    assert v.outcome == V.INCONCLUSIVE and v.lo < 0 < v.hi


def test_paired_interval_is_narrower_than_two_intervals_side_by_side():
    # two methods that share most of their noise: the paired interval sees a difference that
    # overlapping marginal intervals hide
    y, a = _scores(4, n=600, signal=1.0)
    b = a - 0.15 * y + np.random.default_rng(5).normal(scale=0.05, size=len(a))
    v = V.paired(y, a, b, "auc", n_boot=N_BOOT, seed=0)
    from provlib.metrics import auc, bootstrap_ci
    a_lo, _ = bootstrap_ci(auc, y, a, n_boot=N_BOOT, seed=0)
    _, b_hi = bootstrap_ci(auc, y, b, n_boot=N_BOOT, seed=0)
    assert b_hi > a_lo            # the marginal intervals overlap ...
    assert v.outcome == V.HOLDS   # ... the paired difference does not contain 0


def test_both_at_ceiling():
    y = np.r_[np.ones(100, int), np.zeros(100, int)]     # 100 negatives: TPR at 1% FPR is measurable
    a, b = y + 0.1 * np.arange(200) / 200, 2 * y + 0.01
    v = V.paired(y, a, b, "auc", n_boot=N_BOOT, seed=0)
    assert v.outcome == V.CEILING
    v = V.paired(y, a, b, "tpr@1%fpr", n_boot=N_BOOT, seed=0)
    assert v.outcome == V.CEILING
    # one at the ceiling, the other not: a comparison
    _, c = _scores(6, n=200, signal=0.5)
    assert V.paired(y, a, c, "auc", n_boot=N_BOOT, seed=0).outcome == V.HOLDS


def test_tpr_below_one_over_the_negatives_is_not_measurable():
    y, a = _scores(7, n=250, signal=2.0)        # 125 negatives: TPR at 0.1% FPR cannot be read
    _, b = _scores(8, n=250, signal=0.0)
    v = V.paired(y, a, b, "tpr@0.1%fpr", n_boot=N_BOOT, seed=0)
    assert v.outcome == V.INCONCLUSIVE and "not measurable" in v.interval and "1000 negatives" in v.interval
    assert V.paired(y, a, b, "tpr@1%fpr", n_boot=N_BOOT, seed=0).outcome == V.HOLDS
    assert not V.measurable(0.001, 125) and V.measurable(0.01, 125) and V.measurable(0.001, 1000)


def test_three_way_metrics_are_paired_on_probabilities():
    rng = np.random.default_rng(9)
    y = np.repeat([0, 1, 2], 100)
    good = np.eye(3)[y] * 2 + rng.normal(size=(300, 3))
    bad = rng.normal(size=(300, 3))
    for metric in ("macro_auc", "macro_tpr@1%", "asr"):
        assert V.paired(y, good, bad, metric, n_boot=N_BOOT, seed=0).outcome == V.HOLDS
        assert V.paired(y, bad, good, metric, n_boot=N_BOOT, seed=0).outcome == V.FAILS


def test_paired_values_on_the_same_units():
    rng = np.random.default_rng(10)
    base = rng.random(20)
    assert V.paired_values(base + 0.2, base, n_boot=N_BOOT, seed=0).outcome == V.HOLDS
    assert V.paired_values(base, base + 0.2, n_boot=N_BOOT, seed=0).outcome == V.FAILS
    noisy = base + rng.normal(scale=0.1, size=20)
    assert V.paired_values(noisy, base, n_boot=N_BOOT, seed=0).outcome == V.INCONCLUSIVE
    assert V.paired_values(np.ones(5), np.ones(5), n_boot=N_BOOT, seed=0).outcome == V.CEILING
    with pytest.raises(ValueError, match="same units"):
        V.paired_values(np.ones(3), np.ones(4), n_boot=N_BOOT, seed=0)


def test_unpaired_and_proportions():
    rng = np.random.default_rng(11)
    assert V.unpaired(rng.normal(1, 1, 200), rng.normal(0, 1, 200), n_boot=N_BOOT, seed=0).outcome == V.HOLDS
    assert V.unpaired(rng.normal(0, 1, 200), rng.normal(0, 1, 200), n_boot=N_BOOT, seed=0).outcome == V.INCONCLUSIVE
    assert V.proportions(180, 200, 100, 200).outcome == V.HOLDS
    assert V.proportions(100, 200, 180, 200).outcome == V.FAILS
    assert V.proportions(100, 200, 104, 200).outcome == V.INCONCLUSIVE
    assert V.proportions(0, 200, 0, 100).outcome == V.CEILING


def test_threshold_claims_by_their_interval():
    assert V.against(0.7, 0.65, 0.75, above=0.6).outcome == V.HOLDS
    assert V.against(0.5, 0.45, 0.55, above=0.6).outcome == V.FAILS
    assert V.against(0.62, 0.55, 0.68, above=0.6).outcome == V.INCONCLUSIVE
    # a range: inside, outside on either side, straddling an edge
    assert V.against(0.7, 0.65, 0.75, above=0.6, below=0.85).outcome == V.HOLDS
    assert V.against(0.9, 0.88, 0.93, above=0.6, below=0.85).outcome == V.FAILS
    assert V.against(0.55, 0.5, 0.58, above=0.6, below=0.85).outcome == V.FAILS
    assert V.against(0.84, 0.80, 0.88, above=0.6, below=0.85).outcome == V.INCONCLUSIVE
    assert V.against(0.05, 0.0, 0.09, below=0.1).outcome == V.HOLDS
    v = V.against(0.7, 0.65, 0.75, above=0.6)
    assert v.interval == "value 0.700 [0.650, 0.750]"
    with pytest.raises(ValueError, match="bar"):
        V.against(0.5, 0.4, 0.6)


def test_claims_over_several_rows_count_each_outcome():
    h = V.Verdict(V.HOLDS, 0.1, 0.05, 0.15)
    f = V.Verdict(V.FAILS, -0.1, -0.15, -0.05)
    i = V.Verdict(V.INCONCLUSIVE, 0.0, -0.05, 0.05)
    c = V.Verdict(V.CEILING, 0.0, 0.0, 0.0)
    assert V.every([h, h]).outcome == V.HOLDS
    assert V.every([h, f, i]).outcome == V.FAILS
    assert V.every([h, i]).outcome == V.INCONCLUSIVE
    assert V.every([c, c]).outcome == V.CEILING
    assert V.every([h, c]).outcome == V.INCONCLUSIVE
    v = V.every({"a": h, "b": f, "c": i, "d": c})
    assert v.counts == {V.HOLDS: 1, V.FAILS: 1, V.INCONCLUSIVE: 1, V.CEILING: 1}
    assert v.interval == "1 holds, 1 does not hold, 1 inconclusive, 1 at ceiling"
    assert V.every([f, f, h]).interval == "1 holds, 2 do not hold"
    assert V.worst({"a": h, "b": f, "c": i})[0] == "b"
    assert V.count_line([V.HOLDS, V.HOLDS, V.FAILS]) == "2 hold, 1 does not hold"
    with pytest.raises(ValueError, match="outcome"):
        V.Verdict("holds mostly", 0, 0, 0)


def test_claims_file_records_the_outcome_and_interval(tmp_path, monkeypatch):
    from provlib import paths, report
    from provlib.study.run import Run

    monkeypatch.setattr(paths, "reports_dir", lambda profile: tmp_path)
    run = Run.declared("tiny", seed=0)
    claim = {"paper": report.OURS, "claim": "A beats B", "scope": "x", "paper_value": "-", "our_value": "1 vs 0",
             "detail": "", "verdict": V.against(0.7, 0.65, 0.75, above=0.6)}
    doc = json.loads(report.save_claims([claim], run, "99_test").read_text())
    assert doc["claims"][0]["outcome"] == V.HOLDS and doc["claims"][0]["interval"].startswith("value 0.700")
    with pytest.raises(TypeError, match="computed Verdict"):
        report.save_claims([{**claim, "verdict": True}], run, "99_test")
    md = report.numbers_say([claim], run).data
    assert "1 claim checks: 1 holds" in md and "A beats B (x)" in md


def test_claims_md_counts_each_outcome_per_paper_and_flags_old_records(tmp_path):
    from provlib.report.index import render_claims

    def claim(paper, outcome):
        return {"paper": paper, "claim": f"c {outcome}", "scope": "s", "paper_value": "p", "our_value": "o",
                "detail": "d", "outcome": outcome, "interval": "difference +0.1 [+0.0, +0.2]"}

    docs = {"01_a": [claim("Paper A", V.HOLDS), claim("Paper A", V.INCONCLUSIVE), claim("Paper B", V.CEILING)],
            "02_b": [{k: v for k, v in claim("Paper B", V.HOLDS).items() if k not in ("outcome", "interval")}
                     | {"holds": True}]}                     # recorded by an older provlib: a bare bool
    for stem, claims in docs.items():
        (tmp_path / f"{stem}_claims.json").write_text(json.dumps({"provenance": "x", "claims": claims}))
    record = {"profile": "tiny", "notebooks": [{"stem": s} for s in docs], "only": None, "kernel": None,
              "status": "ok", "epoch": 0}
    md = render_claims(record, tmp_path)
    assert "4 claim checks: 1 holds, 2 inconclusive, 1 at ceiling" in md
    assert "- **Paper A**: 1 holds, 1 inconclusive" in md and "- **Paper B**: 1 inconclusive, 1 at ceiling" in md
    assert "recorded without an interval by an older provlib" in md


def test_a_certified_rate_is_judged_by_the_realised_rate_interval():
    from provlib.study.calibration import bound_outcome

    assert bound_outcome(0.0, 0.008, 0.01) == V.HOLDS            # the whole interval at or under the bound
    assert bound_outcome(0.02, 0.05, 0.01) == V.FAILS            # even its lower end above the bound
    assert bound_outcome(0.0, 0.06, 0.01) == V.INCONCLUSIVE      # 60 fresh negatives cannot confirm 1%


def test_tables_say_a_tpr_the_negatives_cannot_measure():
    import pandas as pd
    from provlib.report.outputs import unmeasurable_masked

    df = pd.DataFrame({"method": ["few", "many"], "tpr@0.1%fpr": [0.5, 0.2], "tpr@0.1%fpr_lo": [0.4, 0.1],
                       "tpr@1%fpr": [0.6, 0.7], "n_neg": [125, 2000]})
    out = unmeasurable_masked(df)
    assert list(out["tpr@0.1%fpr"]) == ["not measurable", 0.2] and list(out["tpr@0.1%fpr_lo"]) == ["not measurable", 0.1]
    assert list(out["tpr@1%fpr"]) == [0.6, 0.7] and df["tpr@0.1%fpr"].tolist() == [0.5, 0.2]   # the input untouched
    three = pd.DataFrame({"non-members": ["heldout"], "macro_tpr@0.1%": [0.5], "negatives_member": [1250],
                          "negatives_non-member": [500]})    # a column named like a count, holding a setting
    assert unmeasurable_masked(three)["macro_tpr@0.1%"].tolist() == ["not measurable"]
    assert unmeasurable_masked(pd.DataFrame({"tpr@0.1%fpr": [0.5]})).equals(pd.DataFrame({"tpr@0.1%fpr": [0.5]}))
