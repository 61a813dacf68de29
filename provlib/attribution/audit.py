"""An auditor's workflow: key samples from a source model, calibration on shadow models, one suspect's answer.

``provlib keys`` and ``provlib attribute`` (:mod:`provlib.cli.attribution`) are thin
wrappers of these functions:

- :func:`make_keys`: the generation-based and training-data keys of a source
  (:mod:`provlib.attribution.keys`), conditioned on prompts for a text-to-image
  source (each candidate generation on one of the source's captions, each
  training image on its own caption) or on class labels;
- :func:`answers`: a model's distances to every key;
- :func:`calibrate_on`: the shadow models' answers, then delta_0 and the
  innocent models' null statistics (:func:`provlib.attribution.decision.calibrate`);
- :func:`study_audit`: the same inputs for a source of the embedded study (its
  base, own captioned images and shipped shadow suspects).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from . import keys as K
from .decision import Calibration, calibrate

STRATEGIES = ("generation", "training")   # the method's two key kinds (random selection is the baseline)
CANDIDATES_PER_KEY = 5                     # as in the study (provlib.study.training_data)


@dataclass
class AuditInputs:
    """What making a key set needs: the source and base models, the source's own training images (with their
    class labels and, for a text-to-image source, captions), the conditions of candidate generations, the
    shadow models (loaders, so that one model is in memory at a time) and the reconstruction query's t."""

    source: object
    base: object
    own_images: torch.Tensor
    own_labels: torch.Tensor
    own_prompts: list[str] | None
    conditions: Callable[[int], tuple[torch.Tensor, list[str] | None]]
    shadow_innocent: Sequence[Callable[[], object]]
    shadow_infringing: Sequence[Callable[[], object]]
    reconstruct_t: int = K.RECONSTRUCT_T
    names: dict | None = None      # what the key set records of where each model came from


def make_keys(inputs: AuditInputs, n: int, *, seed: int) -> dict[str, K.KeySet]:
    """``n`` keys of each strategy (of ``5 n`` candidates each), best first."""
    c = CANDIDATES_PER_KEY * n
    labels, prompts = inputs.conditions(c)
    gen = K.generation_keys(inputs.source, inputs.base, n, labels=labels, prompts=prompts, seed=seed)
    m = min(c, len(inputs.own_images))
    if m < n:
        raise ValueError(f"{n} training-data keys need at least {n} of the source's training images, got {m}")
    own_p = None if inputs.own_prompts is None else list(inputs.own_prompts[:m])
    train = K.training_keys(inputs.source, inputs.base, inputs.own_images[:m], inputs.own_labels[:m], np.arange(m), n,
                            seed=seed, prompts=own_p, t=inputs.reconstruct_t)
    return {"generation": gen, "training": train}


def answers(model, keysets: dict[str, K.KeySet], *, seed: int, reconstruct_t: int) -> dict[str, np.ndarray]:
    """A model's distance to every key, per strategy."""
    return {s: K.query(model, ks, seed=seed, reconstruct_t=reconstruct_t) for s, ks in keysets.items()}


def calibrate_on(inputs: AuditInputs, keysets: dict[str, K.KeySet], *, seed: int) -> Calibration:
    """Query every shadow model and calibrate (:func:`provlib.attribution.decision.calibrate`)."""
    if not inputs.shadow_innocent or not inputs.shadow_infringing:
        raise ValueError("calibration needs innocent and infringing shadow models (at least one of each)")

    def run(loaders):
        return [answers(load(), keysets, seed=seed, reconstruct_t=inputs.reconstruct_t) for load in loaders]

    return calibrate(run(inputs.shadow_innocent), run(inputs.shadow_infringing))


def study_audit(source: str, seed: int = 0) -> AuditInputs:
    """The inputs for a source of the embedded study (``fmc-src-*`` or ``sd-src-*``): its base, its own training
    images (with captions in the text setting), the conditions of its generations and every shipped shadow
    suspect of that source (innocent: rho = 0; infringing: every rho > 0)."""
    from ..study import training_data as A

    st = A.setting(source)
    x, y, p = st.source_data(source, seed)
    shadow = st.suspects_of(source, "shadow")

    def loader(name):
        return lambda: st.model(name, seed)

    return AuditInputs(
        source=st.model(source, seed), base=st.model(st.BASE, seed), own_images=x, own_labels=y, own_prompts=p,
        conditions=lambda c: st.conditions(source, c),
        shadow_innocent=[loader(s.name) for s in shadow if s.rho == 0],
        shadow_infringing=[loader(s.name) for s in shadow if s.rho > 0],
        reconstruct_t=st.RECONSTRUCT_T,
        names={"study_source": source, "setting": st.SETTING, "base": st.BASE,
               "shadow_innocent": [s.name for s in shadow if s.rho == 0],
               "shadow_infringing": [s.name for s in shadow if s.rho > 0]})


def caption_conditions(prompts: Sequence[str]) -> Callable[[int], tuple[torch.Tensor, list[str]]]:
    """Candidate generations' conditions from a text-to-image source's captions: its distinct captions in turn
    (sorted), the class label unknown (-1)."""
    table = sorted(set(prompts))
    if not table:
        raise ValueError("a text-to-image source's keys need its training images' captions")
    return lambda c: (torch.full((c,), -1, dtype=torch.long), [table[i % len(table)] for i in range(c)])
