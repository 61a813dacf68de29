"""The embedded study's artifacts, built on demand and cached by configuration.

Each function maps a profile's parameters (see :mod:`provlib.profiles`) to one
artifact: the split manifest, the image sets, the target model, its generated
samples, the trajectory features.  Everything heavy is cached under
``paths.cache_dir()`` keyed by the configuration it depends on, so a re-run
reuses it and a changed parameter recomputes only what depends on it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import paths
from .data import ImageSet, SplitManifest, load_embedded, make_manifest
from .io import artifact_dir, cached_tensors
from .models import TrainConfig, load_model, save_model, train_ddpm
from .profiles import MODELS
from .sampling import sample
from .trajectory import FEATURES, trajectory_features

IMAGE_SIZE = 16
MEMBER_DATASET = "fashion_mnist"
EXTERNAL_DATASET = "mnist"


@lru_cache(maxsize=4)
def _embedded(name: str) -> ImageSet:
    return load_embedded(name, IMAGE_SIZE)


def manifest(params: dict) -> SplitManifest:
    """Member / held-out (Fashion-MNIST) and external (MNIST) splits, drawn from ``params['seed']``."""
    sizes = {"member": (MEMBER_DATASET, params["n_member"]),
             "heldout": (MEMBER_DATASET, params["n_heldout"]),
             "external": (EXTERNAL_DATASET, params["n_external"])}
    pools = {name: len(_embedded(name)) for name in (MEMBER_DATASET, EXTERNAL_DATASET)}
    return make_manifest(sizes, params["seed"], pools)


def image_sets(params: dict) -> dict[str, ImageSet]:
    """The real image sets of the study, by split name."""
    m = manifest(params)
    return {split: _embedded(m.datasets[split]).subset(idx, name=split) for split, idx in m.indices.items()}


def model_config(params: dict) -> dict:
    """Everything the target model depends on (its cache key)."""
    members = manifest(params).indices["member"]
    return {"train": train_config(params).to_dict(), "dataset": f"{MEMBER_DATASET}@{IMAGE_SIZE}",
            "members_sha256": hashlib.sha256(members.tobytes()).hexdigest()}


def train_config(params: dict) -> TrainConfig:
    return MODELS[params["profile"]]


def embedded_model_dir(profile: str) -> Path:
    return paths.EMBEDDED_MODELS_DIR / profile


def target_model(params: dict, *, retrain: bool = False, progress: bool = True):
    """``(unet, scheduler)`` of the profile's target model.

    Uses the model shipped in ``provlib/embedded/models/<profile>`` when its
    recorded configuration matches, else the cache, else trains it (resuming
    from a checkpoint if a previous training was interrupted).
    ``retrain=True`` ignores both and trains from scratch.
    """
    cfg = model_config(params)
    shipped = embedded_model_dir(params["profile"])
    if not retrain and _recorded_config(shipped) == json.loads(json.dumps(cfg)):
        return load_model(shipped)
    d = artifact_dir("model", cfg)
    if retrain:
        for stale in (d / "model", d / "train_state.pt"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    if not (d / "model" / "model_index.json").exists():
        members = image_sets(params)["member"]
        unet, scheduler, history = train_ddpm(members.images, train_config(params),
                                              checkpoint=d / "train_state.pt", progress=progress)
        info = {"config": cfg, "loss_history": history,
                "command": f"python -m provlib.train --profile {params['profile']} --retrain --embed"}
        tmp = d / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(unet, scheduler, tmp, info)
        manifest(params).save(tmp / "splits.json")
        os.replace(tmp, d / "model")
    return load_model(d / "model")


def _recorded_config(model_dir: Path) -> dict | None:
    f = model_dir / "provlib.json"
    return json.loads(f.read_text())["config"] if f.exists() else None



# ----------------------------------------------------------------------------- generated set and features

def generated_config(params: dict) -> dict:
    return {"model": model_config(params), "method": "ddpm", "steps": params["sampler_steps"],
            "n": params["n_generated"], "seed": params["seed"]}


def generated(params: dict, *, progress: bool = True) -> ImageSet:
    """The target model's own DDPM samples (cached)."""
    cfg = generated_config(params)

    def draw():
        unet, scheduler = target_model(params, progress=progress)
        return sample(unet, scheduler, cfg["n"], method="ddpm", num_inference_steps=cfg["steps"],
                      seed=_stream_seed(params["seed"], "generated"), progress=progress)

    images = cached_tensors("samples", cfg, draw)
    return ImageSet("generated", images, np.arange(len(images)))


def all_sets(params: dict, *, progress: bool = True) -> dict[str, ImageSet]:
    """member, heldout, external and generated image sets."""
    return {**image_sets(params), "generated": generated(params, progress=progress)}


def timestep_grid(params: dict) -> np.ndarray:
    """The trajectory grid: every ``timestep_stride``-th step of 0..999."""
    return np.arange(0, 1000, params["timestep_stride"])


def _stream_seed(seed: int, stream: str) -> int:
    """A seed per noise stream (dataset), so that ids of different datasets never share noise."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{stream}".encode()).digest()[:7], "big")


def _source_of(params: dict, split: str) -> str:
    return "generated" if split == "generated" else manifest(params).datasets[split]


def features(params: dict, split: str, *, chunk: int = 250, shard: tuple[int, int] | None = None,
             device=None, progress: bool = True) -> dict[str, torch.Tensor] | None:
    """Trajectory features of one split on the profile's grid: {name: (N, T)}.

    Computed in chunks of ``chunk`` images, each cached atomically under a key
    of (model, source, image ids, grid, seed): an interrupted run resumes at
    the first missing chunk, and chunks do not depend on each other.  With
    ``shard=(rank, world_size)`` only every world_size-th chunk from ``rank``
    is computed and nothing is returned (see :mod:`provlib.extract`).
    """
    sets = all_sets(params, progress=progress) if split == "generated" else image_sets(params)
    if split not in sets:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(sets) + ['generated']}")
    images, grid = sets[split], timestep_grid(params)
    source = _source_of(params, split)
    seed = _stream_seed(params["seed"], source)
    base = {"model": model_config(params), "source": source, "grid": grid.tolist(), "seed": seed,
            "features": FEATURES}
    model = []  # loaded on the first chunk missing from the cache, then reused

    def compute(part: ImageSet) -> dict[str, torch.Tensor]:
        if not model:
            model.extend(target_model(params, progress=False))
        return trajectory_features(*model, part.images, grid, seed=seed, ids=part.ids, device=device)

    starts = list(range(0, len(images), chunk))
    mine = starts if shard is None else starts[shard[0]::shard[1]]
    parts = []
    for start in tqdm(mine, desc=f"features {split}", disable=not progress):
        part = images.subset(np.arange(start, min(start + chunk, len(images))))
        cfg = {**base, "ids_sha256": hashlib.sha256(part.ids.tobytes()).hexdigest()}
        parts.append(cached_tensors("features", cfg, lambda: compute(part)))
    if shard is not None:
        return None
    return {f: torch.cat([p[f] for p in parts]) for f in FEATURES}


def train_mask(n: int, frac: float, seed: int, stream: str) -> np.ndarray:
    """Boolean mask of the rows (of one class) that train probes and thresholds; the rest evaluate."""
    if not 0 < frac < 1:
        raise ValueError(f"probe_train_frac must lie in (0, 1), got {frac}")
    n_train = int(round(frac * n))
    if n_train == 0 or n_train == n:
        raise ValueError(f"{n} rows split at {frac} leave an empty train or evaluation split")
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(_stream_seed(seed, stream)).permutation(n)[:n_train]] = True
    return mask
