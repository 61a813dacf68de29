"""Do a shipped probe's certified false-positive rates hold on images nobody tuned on? (notebook 16)

``provlib verdict`` states, per decision ("member", "generated") and per kind
of negative, a false-positive rate certified on the probe's calibration rows
(:mod:`provlib.detector.calibration`).  The guarantee is about **fresh** images
like each kind's calibration negatives, so this module draws them, never
seen by the probe, and measures what the decisions do on them:

- a real kind (``split:T/heldout...``, ``split:T/external...``): images of the
  same embedded dataset that none of the target's splits holds.  A target's
  splits are consecutive chunks of one seeded permutation of the dataset
  (:func:`provlib.data.draw_splits`), so the rest of the dataset is a uniform
  draw from the same pool: exchangeable with the split;
- ``generated``: new samples of the model, drawn as ``provlib fit`` draws them
  (DDPM, :data:`~provlib.detector.origin_probe.GENERATED_STEPS` steps, the
  probe's seed) from ids no fit uses (:data:`FRESH_IDS` on);
- ``member``: training images of the target outside the split the probe was
  fitted on (the study evaluates a seeded subset of some targets' members);
  a target whose every member went into the fit has none, and says so.

A fresh image whose 8-bit pixels equal those of any image of the target's
splits (the datasets hold a few exact duplicates) is left out, counted.
Each realised rate comes with its two-sided 95% Clopper-Pearson interval, judged
against the certified rate in one of three outcomes (:func:`bound_outcome`): the
bound *holds* when the whole interval lies at or under it, *does not hold* when
the interval's lower end is above it, and the fresh images cannot tell
(*inconclusive*) otherwise.  (``holds``, the older point of view, only says that
the realised rate is not significantly above the bound.)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import beta

from .. import paths, sampling
from ..attacks import pia, secmi, sima
from ..data import reencode
from ..detector import columns
from ..detector import origin_probe as origin
from ..io import cached, code_version, tensor_sha256
from ..kernels import ddim, persample, trajectory
from ..sampling import sample
from ..seeds import stream_seed
from .run import Run, Target, parse_split
from .targets import embedded_images

FRESH_IDS = 2 * 10 ** 9      # ids of the fresh samples; provlib fit draws its own from 10**9
RATES = (0.1, 0.01, 0.001)   # the --max-fpr values of the report
_SPLIT_KIND = re.compile(r"^split:(?P<target>[^/]+)/(?P<split>.+)$")


@dataclass(frozen=True)
class FreshKind:
    """Fresh images of one of a probe's kinds, or why there are none."""

    kind: str                      # the probe's name of the kind ("member", "generated", "split:fm500/heldout#1000")
    cls: str                       # its class: member, generated or external
    images: torch.Tensor | None    # None: no fresh image of this kind exists
    source: str                    # where they come from, in words
    duplicates: int = 0            # fresh candidates left out: same pixels as an image of the target's splits


def probe_dir(name: str) -> Path:
    """The directory of shipped probe ``name`` (a target's name)."""
    return paths.EMBEDDED_PROBES_DIR / name


def load_shipped(run: Run, name: str) -> tuple[origin.OriginProbe, Target]:
    """The shipped probe of target ``name`` and the target (its model checked against the probe)."""
    probe = origin.OriginProbe.load(probe_dir(name))
    target = run.target(name)
    unet, _ = target.load()
    probe.check_model(unet)
    return probe, target


def _split_content_ids(target: Target) -> set[int]:
    """Content ids of every image of the target's splits (all members included)."""
    m = target.manifest
    ids = set()
    for split, idx in m.indices.items():
        x = embedded_images(m.datasets[split], target.config.image_size).images[torch.as_tensor(idx)]
        ids |= set(origin.content_ids(reencode(x, origin.DEFAULT_CODEC)).tolist())
    return ids


def _draw(pool_images: torch.Tensor, candidates: np.ndarray, n: int, taken: set[int], seed: int, stream: str):
    """Up to ``n`` of the ``candidates`` (positions into ``pool_images``), in a seeded order, leaving out those
    whose content is in ``taken``: ``(images, duplicates left out)``."""
    rng = np.random.default_rng(stream_seed(seed, stream))
    order = candidates[rng.permutation(len(candidates))]
    chosen, dup = [], 0
    for start in range(0, len(order), 4 * n):
        block = order[start:start + 4 * n]
        ids = origin.content_ids(reencode(pool_images[torch.as_tensor(block)], origin.DEFAULT_CODEC))
        for pos, cid in zip(block, ids):
            if cid in taken:
                dup += 1
            elif len(chosen) < n:
                chosen.append(pos)
        if len(chosen) >= n:
            break
    return (pool_images[torch.as_tensor(np.sort(chosen))] if chosen else None), dup


def fresh_real(target: Target, split: str, n: int, taken: set[int]) -> tuple[torch.Tensor | None, str, int]:
    """Up to ``n`` images of the dataset of the target's ``split`` that none of its splits holds."""
    m = target.manifest
    dataset = m.datasets[split]
    pool = embedded_images(dataset, target.config.image_size)
    used = np.concatenate([idx for s, idx in m.indices.items() if m.datasets[s] == dataset])
    rest = np.setdiff1d(np.arange(len(pool)), used)
    images, dup = _draw(pool.images, rest, n, taken, target.run.seed, f"fresh {target.name} {split}")
    return images, f"{dataset} images in none of {target.name}'s splits ({len(rest)} in the pool)", dup


def fresh_members(target: Target, n: int, taken: set[int]) -> tuple[torch.Tensor | None, str]:
    """Up to ``n`` training images of the target outside the member split the study evaluates (and fits),
    leaving out those whose content is in ``taken``."""
    m = target.manifest
    pool = embedded_images(m.datasets["member"], target.config.image_size)
    rest = np.setdiff1d(m.indices["member"], target.image_sets["member"].ids)
    if len(rest) == 0:
        return None, (f"none: all {len(m.indices['member'])} members of {target.name} are in the split the "
                      "probe was fitted on")
    images, _ = _draw(pool.images, rest, n, taken, target.run.seed, f"fresh {target.name} member")
    return images, f"members of {target.name} outside its evaluated member split ({len(rest)})"


def fresh_generated(target: Target, probe: origin.OriginProbe, n: int) -> tuple[torch.Tensor, str]:
    """``n`` new samples of the target model, drawn as ``provlib fit`` draws its generated kind (cached)."""
    cfg = {"model": target.fingerprint, "code": code_version(sampling, trajectory), "method": "ddpm",
           "steps": origin.GENERATED_STEPS, "n": int(n), "seed": int(probe.seed), "first_id": FRESH_IDS}

    def draw():
        unet, scheduler = target.load()
        return {"images": sample(unet, scheduler, n, method="ddpm", num_inference_steps=cfg["steps"],
                                 seed=cfg["seed"], ids=np.arange(n) + FRESH_IDS, progress=True)}

    size = target.config.image_size
    images = cached("samples", cfg, draw, expect={"images": (n, 1, size, size)})["images"]
    return images, f"new DDPM samples ({cfg['steps']} steps, ids {FRESH_IDS:.0e} on)"


def fresh_kinds(target: Target, probe: origin.OriginProbe, n: int) -> list[FreshKind]:
    """Fresh images of every kind of the probe (see the module docstring)."""
    taken = _split_content_ids(target)
    seen = set(origin.content_ids(reencode(torch.cat([s.images for s in target.image_sets.values()]),
                                           origin.DEFAULT_CODEC)).tolist())   # what a probe of the splits could see
    out = []
    for kind, cls in probe.kinds:
        dup = 0
        if kind == "member":
            images, source = fresh_members(target, n, seen)
        elif kind == "generated":
            images, source = fresh_generated(target, probe, n)
        else:
            match = _SPLIT_KIND.match(kind)
            if not match or match["target"] != target.name:
                raise ValueError(f"kind {kind!r} of the {target.name} probe is not a split of {target.name}: "
                                 "no fresh images of it can be drawn")
            images, source, dup = fresh_real(target, parse_split(match["split"])[0], n, taken)
        out.append(FreshKind(kind, cls, images, source, dup))
    return out


def probabilities(target: Target, probe: origin.OriginProbe, images: torch.Tensor) -> np.ndarray:
    """(n, 3) class probabilities of ``images`` under ``probe`` (its columns' features cached)."""
    code = code_version(origin, columns, trajectory, persample, ddim, pia, secmi, sima)
    cfg = {"model": target.fingerprint, "code": code, "columns": [list(c) for c in probe.columns],
           "seed": int(probe.seed), "images_sha256": tensor_sha256(images)}

    def compute():
        unet, scheduler = target.load()
        X, _ = origin.origin_features(unet, scheduler, images, probe.columns, seed=probe.seed, progress=True)
        return {"features": torch.as_tensor(X)}

    X = cached("probe_features", cfg, compute, expect={"features": (len(images), len(probe.columns))})["features"]
    return probe.probabilities(X.numpy())


def rate_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a rate with ``k`` events among ``n``."""
    a = (1 - confidence) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"   # as provlib.report.verdicts


def bound_outcome(lo: float, hi: float, certified: float) -> str:
    """A certified rate judged by the two-sided interval [``lo``, ``hi``] of the realised one: ``holds`` when
    the interval lies at or under ``certified`` (upper end <= certified), ``does not hold`` when its lower end
    is above it, ``inconclusive`` otherwise."""
    if hi <= certified:
        return HOLDS
    return FAILS if lo > certified else INCONCLUSIVE


def realised_rates(probe: origin.OriginProbe, fresh: list[FreshKind], probs: dict[str, np.ndarray],
                   rates=RATES) -> list[dict]:
    """One row per decision, rate and kind of negative: the calibration behind the threshold, the rate it
    certifies, and the realised rate on the fresh negatives of that kind with its interval.  ``probs`` maps a
    kind to the probabilities of its fresh images (:func:`probabilities`).  ``outcome``: the certified rate
    judged by the realised rate's interval (:func:`bound_outcome`); ``holds``: the realised rate is not
    significantly above it (the interval's lower end at or under it); both ``None`` where nothing was measured."""
    source = {f.kind: f for f in fresh}
    rows = []
    for cls in ("member", "generated"):
        c = origin.CLASSES.index(cls)
        for rate in rates:
            dec = probe.decision(cls, rate)
            for bound in dec.kinds:
                f = source[bound.kind]
                row = {"decision": cls, "max_fpr": rate, "kind": bound.kind, "calibration_negatives": bound.negatives,
                       "refused": dec.refused, "reason": dec.reason(), "calibration_above": bound.above,
                       "certified_fpr": bound.certified, "fresh_source": f.source, "duplicates_left_out": f.duplicates,
                       "fresh_negatives": 0 if f.images is None else len(f.images), "fresh_above": None,
                       "realised_fpr": None, "realised_lo": None, "realised_hi": None, "holds": None,
                       "outcome": None}
                if not dec.refused and f.images is not None:
                    above = int(dec.apply(probs[f.kind][:, c]).sum())
                    n = len(f.images)
                    lo, hi = rate_interval(above, n)
                    row.update(fresh_above=above, realised_fpr=above / n, realised_lo=lo, realised_hi=hi,
                               holds=bool(lo <= bound.certified), outcome=bound_outcome(lo, hi, bound.certified))
                rows.append(row)
    return rows


__all__ = ["FRESH_IDS", "RATES", "FreshKind", "bound_outcome", "fresh_kinds", "load_shipped", "probabilities", "rate_interval",
           "realised_rates"]
