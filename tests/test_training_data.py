"""The attribution study's calibration and scoring on hand-built answer tables (no model needed)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from provlib.attribution import keys as K
from provlib.study import training_data as A
from provlib.study import Run
from provlib.study.profiles import get_profile


def _table(scores: dict) -> pd.DataFrame:
    """scores: {(role, rho, index): {method: array}} -> an answers() table."""
    rows = []
    for (role, rho, i), by_method in scores.items():
        for m, s in by_method.items():
            rows.append({"model": f"{role}-{rho}-{i}", "source": "src", "setting": "class labels", "rho": rho, "role": role, "index": i,
                         "infringing": rho > 0, "method": m, "scores": np.asarray(s, float)})
    return pd.DataFrame(rows)


def _answers(inf_d, inn_d, inf_wm, inn_wm, roles=("shadow", "test"), per=3):
    out = {}
    for role in roles:
        for i in range(per):
            out[(role, 0.0, i)] = {m: inn_d for m in A.STRATEGIES} | {"watermark": inn_wm}
            out[(role, 0.5, i)] = {m: inf_d for m in A.STRATEGIES} | {"watermark": inf_wm}
    return _table(out)


def test_conf_counts_keys_at_most_delta0_and_watermark_generations_at_least_tau():
    t = _answers([0.1, 0.2, 0.3, 0.1], [0.4, 0.5, 0.25, 0.6], [1.0, 0.9, 0.5, 1.0], [0.5, 0.4, 0.6, 0.8])
    c = A.confs(t, 4)
    ours = c[(c.method == "generation")].set_index("infringing").conf
    wm = c[(c.method == "watermark")].set_index("infringing").conf
    # 12 shadow innocent keys at a 5% rate: none may count.  delta_0 = 0.2 (0.25 is an innocent key): three of
    # four infringing keys count; tau = 0.9 (0.8 is an innocent generation's): three of four generations
    assert set(ours[True]) == {0.75} and set(ours[False]) == {0.0}
    assert set(wm[True]) == {0.75} and set(wm[False]) == {0.0}
    (d0,), (tau,) = set(c[c.method == "generation"].threshold), set(c[c.method == "watermark"].threshold)
    assert d0 == 0.2 and tau == 0.9
    assert set(c.role) == {"test"}


def test_overlapping_histograms_keep_innocent_conf_at_the_rate():
    """Where nothing separates, delta_0 does not drift to where every key counts (the balanced-accuracy
    optimum can): the shadow innocent models' conf stays at most INNOCENT_KEY_RATE."""
    rng = np.random.default_rng(1)
    rows = {(role, rho, i): {m: rng.uniform(0.1, 0.5, 40) for m in A.STRATEGIES} | {"watermark": rng.uniform(0, 1, 40)}
            for role in ("shadow", "test") for rho in (0.0, 1.0) for i in range(5)}
    t = _table(rows)
    c = A.confs(t, 40, role="shadow")
    assert (c[~c.infringing].groupby("method").conf.mean() <= K.INNOCENT_KEY_RATE).all()
    assert (c.conf < 0.5).all()


def test_thresholds_come_from_shadow_models_only():
    t = _answers([0.1, 0.2], [0.4, 0.5], [1.0, 1.0], [0.5, 0.5])
    before = A.choose_threshold(t, "training", 2).value
    moved = t.copy()
    test = moved.role == "test"
    moved.loc[test, "scores"] = pd.Series([np.array([9.0, 9.0])] * int(test.sum()), index=moved.index[test])
    assert A.choose_threshold(moved, "training", 2).value == before
    assert 0.2 <= before < 0.4
    with pytest.raises(ValueError, match="innocent and infringing shadow"):
        A.choose_threshold(t[t.rho > 0], "training", 2)


def test_first_n_keys_only():
    th = A.Threshold("generation", 2, 0.15)
    assert th.conf([0.1, 0.2, 0.0, 0.0]) == 0.5          # the last two keys are ignored
    assert A.Threshold("watermark", 3, 0.8).conf([0.9, 0.7, 0.8, 0.1]) == pytest.approx(2 / 3)


def test_discriminator_fit_on_shadow_and_reported_on_test():
    rng = np.random.default_rng(0)
    rows = {}
    for role in ("shadow", "test"):
        for i in range(6):
            rows[(role, 0.0, i)] = {m: 0.3 + 0.02 * rng.standard_normal(5) for m in A.STRATEGIES} | \
                                   {"watermark": 0.5 + 0.05 * rng.standard_normal(5)}
            rows[(role, 1.0, i)] = {m: 0.1 + 0.02 * rng.standard_normal(5) for m in A.STRATEGIES} | \
                                   {"watermark": 0.9 + 0.05 * rng.standard_normal(5)}
    t = _table(rows)
    r = A.discriminate(t, "ours", 5, n_boot=50, seed=0)
    assert (r["n_pos"], r["n_neg"], r["shadow models"]) == (6, 6, 12)
    assert r["auc"] == 1.0 and r["asr"] == 1.0 and r["tpr@10%fpr"] == 1.0
    X, y, models = A.features(t, A.DISCRIMINATORS["ours"], 5, "test")
    assert X.shape == (12, 10) and y.sum() == 6 and all(m.startswith("test") for m in models)
    few = t[~((t.role == "shadow") & (t.rho == 0) & (t["index"] > 0))]
    with pytest.raises(ValueError, match="at least 2 shadow models"):
        A.discriminate(few, "ours", 5, n_boot=10, seed=0)


def test_attribution_parameters_are_checked():
    with pytest.raises(ValueError, match="cannot exceed n_keys_max"):
        get_profile("tiny", n_keys=31)
    with pytest.raises(ValueError, match="attribution_sources"):
        get_profile("tiny", attribution_sources=["fmc-src-z"])
    with pytest.raises(ValueError, match="suspects_per_role"):
        get_profile("tiny", suspects_per_role=1)
    with pytest.raises(ValueError, match="strategy must be one of"):
        A.keyset(Run.from_profile("tiny"), "fmc-src-a", "best")
    with pytest.raises(ValueError, match="method must be one of"):
        A.counts_high("loss")


def test_each_source_names_its_setting():
    from provlib.study import suspects as S
    from provlib.study import suspects_text as T

    assert A.setting("fmc-src-b") is S and A.setting("sd-src-b") is T
    assert A.title("sd-src-a") == "sd-src-a (text prompts)"
    assert get_profile("cpu")["attribution_sources"] == [*S.SOURCES, *T.SOURCES]   # both settings in the main run
    with pytest.raises(ValueError, match="unknown source model"):
        A.setting("fmc-base")


def test_the_command_line_decision_is_calibrated_on_shadow_models_and_reported_on_test_models():
    rng = np.random.default_rng(2)
    rows = {}
    for role in ("shadow", "test"):
        for i in range(4):
            rows[(role, 0.0, i)] = {m: rng.normal(0.30, 0.03, 6) for m in A.STRATEGIES} | {"watermark": np.full(6, .5)}
            rows[(role, 1.0, i)] = {m: rng.normal(0.12, 0.03, 6) for m in A.STRATEGIES} | {"watermark": np.full(6, .5)}
    d = A.decisions(_table(rows), 6)
    assert len(d) == 8 and set(d.model.str.split("-").str[0]) == {"test"}
    assert d.alpha.eq(1 / 5).all()                      # 4 innocent shadow models certify 1/(4+1)
    assert d[d.infringing].declared.all() and not d[~d.infringing].declared.any()


def test_an_innocent_models_watermark_generations_are_drawn_once_for_every_class_label_source(monkeypatch, tmp_path):
    """The class-label sources share their conditions, so the innocent suspects' generations (the watermark
    baseline's) are one cached draw; an infringing suspect's are its own."""
    import torch

    from provlib.study import suspects as S

    monkeypatch.setenv("PROVLIB_CACHE_DIR", str(tmp_path / "cache"))
    drawn = []

    def generate(model, condition, ids, *, seed):
        drawn.append((model, tuple(condition.tolist()), int(ids[0]), len(ids)))
        return torch.zeros(len(ids), 1, S.SIZE, S.SIZE)

    monkeypatch.setattr(K, "generate", generate)
    monkeypatch.setattr(S, "suspect_record", lambda name, seed: {"name": name, "seed": seed})
    monkeypatch.setattr(S, "model", lambda name, seed=0: f"model {name}")
    run = Run.from_profile("tiny")
    innocent = A.suspects(run, S.SOURCES[0], "test")[0]
    assert innocent.source is None
    for source in S.SOURCES[:2]:
        assert A.generations(run, source, innocent.name).shape == (run.n_keys_max, 1, S.SIZE, S.SIZE)
    assert len(drawn) == 1 and drawn[0][2] == A.WATERMARK_ID0 and drawn[0][3] == run.n_keys_max
    guilty = [s for s in A.suspects(run, S.SOURCES[1], "test") if s.rho > 0][0]
    A.generations(run, S.SOURCES[1], guilty.name)
    assert len(drawn) == 2 and drawn[1][0] == f"model {guilty.name}"
