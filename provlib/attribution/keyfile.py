"""A key set on disk: an auditor's key samples, how to query them, and their calibration on shadow models.

``provlib keys`` writes one and ``provlib attribute`` reads it.  It is a sealed
bundle (:mod:`provlib.sealed`): ``keys.safetensors`` holds, per strategy, the key
images (``<strategy>.images``, (n, C, H, W) in [-1, 1]), their class labels and
ids (the seed of a generation-based key; the source image's index for a
training-data key); ``keys.json`` holds each strategy's query and prompts (a
text-to-image source's keys carry the prompt or caption they were drawn
under), the source's and base's fingerprints, the seed of every query's noise,
the query settings, and the calibration on shadow models
(:class:`provlib.attribution.decision.Calibration`), all sealed by a digest.
Nothing in it executes; an edited number is refused.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import sealed
from ..io import ArtifactError
from .decision import Calibration
from .keys import QUERIES, KeySet

FORMAT = "provlib-keys/1"
KEYS = sealed.Kind(noun="key set", what="a key set", stem="keys", format=FORMAT,
                   remedy="write it again with provlib keys", make="make one with provlib keys")


def write(directory: str | Path, keysets: dict[str, KeySet], calibration: Calibration, meta: dict) -> Path:
    """Write ``keysets`` (by strategy), their ``calibration`` and ``meta`` (source, base, seed, query settings)."""
    if not keysets:
        raise ValueError("a key set needs at least one strategy's keys")
    arrays, strategies = {}, {}
    for name, ks in keysets.items():
        arrays[f"{name}.images"] = ks.images.detach().cpu().float().numpy()
        arrays[f"{name}.labels"] = torch.as_tensor(ks.labels).long().numpy()
        arrays[f"{name}.ids"] = np.asarray(ks.ids, np.int64)
        strategies[name] = {"query": ks.query, "prompts": None if ks.prompts is None else list(ks.prompts)}
    return sealed.write(directory, arrays, {**meta, "strategies": strategies,
                                            "calibration": calibration.to_dict()}, KEYS)


def read(directory: str | Path) -> tuple[dict[str, KeySet], Calibration, dict]:
    """``(keysets, calibration, meta)`` of a key set whose digest matches; anything else is refused, naming it."""
    arrays, meta = sealed.read(directory, KEYS)
    try:
        strategies = meta["strategies"]
        keysets = {}
        for name, info in strategies.items():
            if info["query"] not in QUERIES:
                raise ValueError(f"unknown query {info['query']!r}")
            keysets[name] = KeySet(name, info["query"], torch.from_numpy(arrays[f"{name}.images"]),
                                   torch.from_numpy(arrays[f"{name}.labels"]), arrays[f"{name}.ids"],
                                   info["prompts"])
        calibration = Calibration.from_dict(meta["calibration"])
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{directory}: not a usable key set ({type(err).__name__}: {err})") from err
    if set(calibration.delta0) != set(keysets):
        raise ArtifactError(f"{directory}: calibrated for strategies {sorted(calibration.delta0)}, holds "
                            f"{sorted(keysets)}")
    return keysets, calibration, meta
