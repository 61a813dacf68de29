"""The training-data attribution study: was a suspect model fine-tuned on a source model's generations?

Zhang et al., 2024 (*Was your model secretly trained on data created by
mine?*), on the setting of :mod:`provlib.study.suspects`.  For each source
model and each suspect of the profile (``suspects_per_role`` models per ``rho``
and role), one cached query (:func:`query`) gives

- the suspect's distance to each of ``n_keys_max`` key samples of every
  strategy (:data:`STRATEGIES`: generation-based and training-data-based keys,
  ours; random selection, the baseline), in the keys' order of preference;
- the watermark baseline's bit accuracy on ``n_keys_max`` of the suspect's own
  generations (balanced classes, seeds disjoint from the keys').

Calibration uses **shadow** models only: delta_0 (and the watermark's bit
accuracy threshold tau) is the threshold at which at most
:data:`~provlib.attribution.keys.INNOCENT_KEY_RATE` of the shadow innocent
models' keys count, with the best share of shadow infringing models' keys (all
``rho > 0`` pooled), and the statistical-level discriminator is fit on shadow
models.  Every reported number
is on **test** models.  A model's conf uses its first ``n`` keys (or ``n``
generations): ``n_keys`` by default, 10 to ``n_keys_max`` in Figure 7.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from .. import sampling
from ..attribution import keys as K
from ..attribution import watermark
from ..io import cached, code_version
from ..metrics import binary_report, best_threshold, threshold_at_fpr
from ..probe import LinearProbe
from ..progress import progress_bar
from . import suspects as S
from . import suspects_text as T
from .run import Run

STRATEGIES = ("generation", "training", "random")   # ours, ours, baseline 2
METHODS = (*STRATEGIES, "watermark")                # baseline 1 last
LABELS = {"generation": "ours: generation-based keys", "training": "ours: training-data keys",
          "random": "random selection", "watermark": "watermark", "ours": "ours: both strategies"}
CANDIDATES_PER_KEY = 5   # key candidates examined per key kept (generation-based: source generations;
                         # training-data keys: the first 5 n source training images)
WATERMARK_ID0 = 100_000  # seeds of the watermark query's generations: disjoint from every key's


# ----------------------------------------------------------------------------- models of the profile

SETTINGS = (S, T)   # class labels (class-conditional pixel DDPMs), text prompts (a latent text-to-image base)
RHOS = S.RHOS       # the shares of generated data, the same in both settings
assert T.RHOS == RHOS and T.ROLES == S.ROLES


def setting(source: str):
    """The module of the setting ``source`` belongs to (:mod:`~provlib.study.suspects` or
    :mod:`~provlib.study.suspects_text`): its base, pools, releases and suspects."""
    for st in SETTINGS:
        if source in st.SOURCES:
            return st
    raise ValueError(f"unknown source model {source!r}; choose from {[s for st in SETTINGS for s in st.SOURCES]}")


# each class-label source and the text-prompt source fine-tuned on the same kind of data (the settings' comparison)
COUNTERPARTS = dict(zip(S.SOURCES, T.SOURCES))


def title(source: str) -> str:
    """A source named with its setting, for figure titles: ``"sd-src-b (text prompts)"``."""
    return f"{source} ({setting(source).SETTING})"


def suspects(run: Run, source: str, role: str) -> list:
    """The profile's suspects of ``source`` in ``role``: ``suspects_per_role`` per ``rho``, innocents first."""
    return [s for s in setting(source).suspects_of(source, role) if s.index < run.suspects_per_role]


@lru_cache(maxsize=8)
def _fingerprint(name: str, source: str, seed: int) -> str:
    return setting(source).model(name, seed).fingerprint


# ----------------------------------------------------------------------------- key samples

def _key_config(run: Run, source: str, strategy: str) -> dict:
    st = setting(source)
    return {"source": source, "source_model": _fingerprint(source, source, run.seed),
           "base_model": _fingerprint(st.BASE, source, run.seed), "strategy": strategy, "n": run.n_keys_max,
           "candidates": CANDIDATES_PER_KEY * run.n_keys_max, "seed": run.seed, "setting": st.SETTING,
           "reconstruct_t": st.RECONSTRUCT_T, "code": code_version(K, st)}


def _prompts(source: str, strategy: str, ids, candidates: int):
    """The prompt of each key (None in the class-label setting): a generation key's is that of its id in the
    candidates' prompt grid, a training image's is its caption."""
    st = setting(source)
    if st is not T:
        return None
    table = T.conditions(source, candidates)[1] if strategy == "generation" else T.source_data(source)[2]
    return [table[int(i)] for i in ids]


def keyset(run: Run, source: str, strategy: str) -> K.KeySet:
    """``n_keys_max`` key samples of ``source`` by ``strategy``, best first (cached)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    st = setting(source)
    cfg = _key_config(run, source, strategy)
    n, seed, c = cfg["n"], run.seed, cfg["candidates"]

    def compute():
        own_x, own_y, own_p = st.source_data(source, seed)
        ids = np.arange(len(own_x))
        if strategy == "generation":
            labels, prompts = st.conditions(source, c)
            ks = K.generation_keys(st.model(source, seed), st.model(st.BASE, seed), n, labels=labels,
                                   prompts=prompts, seed=seed)
        elif strategy == "training":
            m = min(c, len(own_x))
            ks = K.training_keys(st.model(source, seed), st.model(st.BASE, seed), own_x[:m], own_y[:m], ids[:m], n,
                                 seed=seed, prompts=None if own_p is None else own_p[:m], t=st.RECONSTRUCT_T)
        else:
            ks = K.random_keys(own_x, own_y, ids, n, seed=seed, prompts=own_p)
        return {"images": ks.images.float(), "labels": ks.labels.long(), "ids": torch.as_tensor(ks.ids).long()}

    t = cached("attribution-keys", cfg, compute, expect={"images": (n, 1, st.SIZE, st.SIZE), "labels": (n,),
                                                          "ids": (n,)})
    query = "seed" if strategy == "generation" else "reconstruct"
    ids = t["ids"].numpy()
    return K.KeySet(strategy, query, t["images"], t["labels"], ids, _prompts(source, strategy, ids, c))


# ----------------------------------------------------------------------------- queries

def query(run: Run, source: str, suspect: str) -> dict[str, np.ndarray]:
    """One suspect's answers to ``source``'s keys (cached): ``{strategy: (n_keys_max,) distances,
    "watermark": (n_keys_max,) bit accuracies of its own generations}``."""
    n, seed, st = run.n_keys_max, run.seed, setting(source)
    cfg = {"source": source, "suspect": suspect, "suspect_model": st.suspect_record(suspect, seed),
           "keys": {s: _key_config(run, source, s) for s in STRATEGIES}, "n": n, "seed": seed,
           "watermark_key": st.watermark_key(source), "code": code_version(K, watermark)}

    def compute():   # the key sets are read only when the answers are not cached yet
        m = st.model(suspect, seed)
        out = {s: torch.from_numpy(K.query(m, keyset(run, source, s), seed=seed, reconstruct_t=st.RECONSTRUCT_T))
               for s in STRATEGIES}
        gen = generations(run, source, suspect, m)
        out["watermark"] = torch.from_numpy(watermark.bit_accuracy(gen, st.watermark_key(source)))
        return out

    t = cached("attribution-query", cfg, compute, expect={m: (n,) for m in METHODS})
    return {m: t[m].numpy() for m in METHODS}


def generations(run: Run, source: str, suspect: str, model=None) -> torch.Tensor:
    """The ``n_keys_max`` generations of ``suspect`` that the watermark baseline reads for ``source`` (cached):
    balanced over ``source``'s conditions, from seeds disjoint from every key's.  Cached apart from the
    answers and keyed by what they are drawn from (the suspect, the conditions, the seeds), not by the
    source: in the class-label setting every source's conditions are the same classes, so an innocent
    model's generations are drawn once for all sources.  ``model``: the suspect, when already loaded."""
    n, seed, st = run.n_keys_max, run.seed, setting(source)
    labels, prompts = st.conditions(source, n)
    condition = labels if prompts is None else prompts
    cfg = {"suspect": suspect, "suspect_model": st.suspect_record(suspect, seed), "setting": st.SETTING,
           "condition": labels.tolist() if prompts is None else list(prompts), "first_id": WATERMARK_ID0,
           "n": n, "seed": seed, "steps": K.SEED_STEPS, "code": code_version(K, sampling)}

    def compute():
        m = model if model is not None else st.model(suspect, seed)
        return {"images": K.generate(m, condition, np.arange(WATERMARK_ID0, WATERMARK_ID0 + n), seed=seed)}

    return cached("attribution-generations", cfg, compute, expect={"images": (n, 1, st.SIZE, st.SIZE)})["images"]


def answers(run: Run, source: str, *, progress: bool = True) -> pd.DataFrame:
    """Every profile suspect's answers to ``source``: one row per (model, method) with the scores array.

    Columns: ``model, source, rho, role, index, infringing, method, scores`` (distances for the key
    strategies, lower = counts; bit accuracies for the watermark, higher = counts).
    """
    models = [s for role in setting(source).ROLES for s in suspects(run, source, role)]
    rows = []
    for s in progress_bar(models, desc=f"querying suspects of {source}", enabled=progress):
        for method, scores in query(run, source, s.name).items():
            rows.append({"model": s.name, "source": source, "setting": setting(source).SETTING, "rho": s.rho,
                         "role": s.role, "index": s.index,
                         "infringing": s.rho > 0, "method": method, "scores": scores})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- instance level

def counts_high(method: str) -> bool:
    """Whether a higher score makes a key count (the watermark's bit accuracy) or a lower one (distances)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method == "watermark"


@dataclass(frozen=True)
class Threshold:
    """delta_0 (distances) or tau (bit accuracy), chosen on shadow models with their first ``n`` keys."""

    method: str
    n: int
    value: float

    def conf(self, scores) -> float:
        s = np.asarray(scores, dtype=float)[:self.n]
        return watermark.conf(s, self.value) if counts_high(self.method) else K.conf(s, self.value)


def _rows(table: pd.DataFrame, method: str, role: str) -> pd.DataFrame:
    return table[(table.method == method) & (table.role == role)]


def choose_threshold(table: pd.DataFrame, method: str, n: int) -> Threshold:
    """delta_0 (or tau) from the shadow models of ``table`` only: the per-key threshold at which at most
    ``INNOCENT_KEY_RATE`` of the shadow innocent models' keys count (:func:`~provlib.attribution.keys.choose_delta0`)."""
    shadow = _rows(table, method, "shadow")
    if shadow.infringing.all() or not shadow.infringing.any():
        raise ValueError(f"choosing a threshold for {method} needs innocent and infringing shadow models")
    neg = [np.asarray(s)[:n] for s in shadow[~shadow.infringing].scores]
    pos = [np.asarray(s)[:n] for s in shadow[shadow.infringing].scores]
    if counts_high(method):
        y = np.r_[np.ones(sum(map(len, pos)), int), np.zeros(sum(map(len, neg)), int)]
        return Threshold(method, n, float(threshold_at_fpr(y, np.concatenate(pos + neg), K.INNOCENT_KEY_RATE)))
    return Threshold(method, n, K.choose_delta0(neg, pos))


def confs(table: pd.DataFrame, n: int, role: str = "test") -> pd.DataFrame:
    """conf of every ``role`` model by every method with its first ``n`` keys, thresholds from shadow models:
    columns ``model, rho, role, infringing, method, n, threshold, conf``."""
    out = []
    for method in METHODS:
        th = choose_threshold(table, method, n)
        for r in _rows(table, method, role).itertuples():
            out.append({"model": r.model, "source": r.source, "setting": r.setting, "rho": r.rho, "role": role,
                        "infringing": r.infringing,
                        "method": method, "n": n, "threshold": th.value, "conf": th.conf(r.scores)})
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- statistical level

DISCRIMINATORS = {"ours": ("generation", "training"), "generation": ("generation",), "training": ("training",),
                  "random": ("random",), "watermark": ("watermark",)}


def features(table: pd.DataFrame, methods, n: int, role: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(X, y, models)``: per ``role`` model, its first ``n`` scores of each method side by side;
    ``y`` = infringing."""
    parts, y, models = [], None, None
    for m in methods:
        rows = _rows(table, m, role).sort_values("model")
        parts.append(np.stack([np.asarray(s)[:n] for s in rows.scores]))
        y, models = rows.infringing.to_numpy().astype(int), list(rows.model)
    return np.concatenate(parts, axis=1), y, models


def discriminator_scores(table: pd.DataFrame, name: str, n: int, *, seed: int) -> dict:
    """The statistical-level discriminator ``name`` (:data:`DISCRIMINATORS`) fit on shadow models, and its
    scores on the test models: ``{"labels", "scores", "models"}`` (test models sorted by name, the same order
    for every discriminator: paired comparisons), its decision ``threshold`` (best balanced accuracy on the
    shadow models) and the number of ``shadow models``."""
    Xs, ys, _ = features(table, DISCRIMINATORS[name], n, "shadow")
    Xt, yt, models = features(table, DISCRIMINATORS[name], n, "test")
    cv = int(min(5, np.bincount(ys).min()))
    if cv < 2:
        raise ValueError("the discriminator needs at least 2 shadow models of each class (suspects_per_role >= 2)")
    probe = LinearProbe(seed=seed, cv=cv).fit(Xs, ys)
    return {"labels": yt, "scores": probe.decision_function(Xt), "models": models,
            "threshold": best_threshold(ys, probe.decision_function(Xs)), "shadow models": len(ys)}


def discriminate(table: pd.DataFrame, name: str, n: int, *, n_boot: int, seed: int) -> dict:
    """The statistical-level discriminator ``name`` (:data:`DISCRIMINATORS`): a linear probe over the keys'
    scores, fit on shadow models (its decision threshold too), reported on test models: balanced accuracy,
    AUC and TPR at 10% FPR with bootstrap intervals over test models (:func:`discriminator_scores`)."""
    d = discriminator_scores(table, name, n, seed=seed)
    rep = binary_report(d["labels"], d["scores"], threshold=d["threshold"], fprs=(0.1,), n_boot=n_boot, seed=seed)
    return {"discriminator": name, "features": " + ".join(DISCRIMINATORS[name]), "n_keys": n,
            "shadow models": d["shadow models"], **rep}


# ----------------------------------------------------------------------------- one suspect's decision

OURS = ("generation", "training")   # the strategies behind provlib attribute's decision


def decisions(table: pd.DataFrame, n: int, *, alpha: float | None = None) -> pd.DataFrame:
    """``provlib attribute``'s decision for every test model of ``table``, with its first ``n`` keys of each of
    our strategies: delta_0 and the conformal null from the shadow models
    (:func:`provlib.attribution.decision.calibrate`), at false-positive rate ``alpha`` (default: the smallest the
    shadow innocents certify, 1/(M+1)).  Columns: ``model, source, setting, rho, infringing, statistic, p_value,
    alpha, declared``."""
    from ..attribution import decision

    def by_model(role: str) -> dict[str, tuple[pd.Series, dict]]:
        rows = table[(table.role == role) & table.method.isin(OURS)]
        return {m: (g.iloc[0], {r.method: np.asarray(r.scores)[:n] for r in g.itertuples()})
                for m, g in rows.groupby("model", sort=True)}

    shadow = by_model("shadow")
    cal = decision.calibrate([d for r, d in shadow.values() if not r.infringing],
                             [d for r, d in shadow.values() if r.infringing])
    alpha = cal.smallest_alpha if alpha is None else alpha
    out = []
    for m, (r, d) in by_model("test").items():
        a = decision.decide(cal, d, alpha=alpha)
        out.append({"model": m, "source": r.source, "setting": r.setting, "rho": r.rho, "infringing": r.infringing,
                    "statistic": a["statistic"], "p_value": a["p_value"], "alpha": alpha, "declared": a["infringing"]})
    return pd.DataFrame(out)
