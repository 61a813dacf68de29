"""The embedded study's artifacts, built on demand and cached by configuration.

Each function maps a profile's parameters (see :mod:`provlib.study.profiles`) to one
artifact: the split manifest, the image sets, the target model, its generated
samples, the trajectory features.  Everything heavy is cached under
``paths.cache_dir()`` keyed by what it depends on: the content hash of the
model weights (:func:`provlib.models.model_fingerprint`), of the input images,
the parameters, and the :func:`provlib.io.code_version` of the code that
computed it.  A re-run reuses it; a changed parameter, a retrained model or a
changed kernel recomputes only what depends on it.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .. import paths, sampling
from ..checks import positive_int
from ..data import ImageSet, SplitManifest, load_embedded, make_manifest
from ..io import artifact_dir, cache_path, cached, code_version, replace_dir, tensor_sha256
from ..kernels import persample, trajectory
from ..kernels.trajectory import FEATURES, trajectory_features
from ..models import TrainConfig, ddpm, load_model, model_fingerprint, save_model, train_ddpm
from ..progress import progress_bar
from ..sampling import sample
from .profiles import MODELS

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
    return make_manifest(sizes, params["seed"], pool_sizes())


def pool_sizes() -> dict[str, int]:
    """Number of images of each embedded dataset the study draws from."""
    return {name: len(_embedded(name)) for name in (MEMBER_DATASET, EXTERNAL_DATASET)}


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


def shipped_matches(params: dict) -> bool:
    """Whether the model shipped for the profile was trained with exactly this configuration."""
    return _recorded_config(embedded_model_dir(params["profile"])) == json.loads(json.dumps(model_config(params)))


def target_model(params: dict, *, retrain: bool = False, progress: bool = True):
    """``(unet, scheduler)`` of the profile's target model.

    Uses the model shipped in ``provlib/embedded/models/<profile>`` when its
    recorded configuration matches, else the cache, else trains it (resuming
    from a checkpoint if a previous training was interrupted).
    ``retrain=True`` ignores both and trains from scratch.
    """
    if not retrain and shipped_matches(params):
        return load_model(embedded_model_dir(params["profile"]))
    return load_model(trained_model_dir(params, retrain=retrain, progress=progress))


def trained_model_dir(params: dict, *, retrain: bool = False, progress: bool = True) -> Path:
    """The cache directory of the target model trained by this code, training it first if needed.

    Keyed by the model configuration and the training code's version.  The
    directory appears complete or not at all (built beside, then renamed).
    """
    cfg = model_config(params)
    d = artifact_dir("model", {**cfg, "code": code_version(ddpm)})
    ckpt = d / "train_state.safetensors"
    if retrain:
        shutil.rmtree(d / "model", ignore_errors=True)
        ckpt.unlink(missing_ok=True)
    if not (d / "model" / "model_index.json").exists():
        members = image_sets(params)["member"]
        unet, scheduler, history = train_ddpm(members.images, train_config(params), checkpoint=ckpt,
                                              progress=progress)
        info = {"config": cfg, "loss_history": history,
                "command": f"python -m provlib.train --profile {params['profile']} --retrain --embed"}

        def write(tmp: Path) -> None:
            save_model(unet, scheduler, tmp, info)
            manifest(params).save(tmp / "splits.json")

        replace_dir(d / "model", write)
    return d / "model"


def embed_model(src: Path, profile: str) -> Path:
    """Copy a trained model directory over the shipped one, replacing it only once the copy is complete."""
    src, dst = Path(src), embedded_model_dir(profile)
    if not (src / "model_index.json").exists():
        raise FileNotFoundError(f"no trained model to embed at {src}; the shipped model {dst} is left as it is")
    if src.resolve() == dst.resolve():
        return dst
    load_model(src)  # refuse to ship what does not load
    return replace_dir(dst, lambda new: shutil.copytree(src, new))


def _recorded_config(model_dir: Path) -> dict | None:
    f = model_dir / "provlib.json"
    return json.loads(f.read_text())["config"] if f.exists() else None


# ----------------------------------------------------------------------------- generated set and features

def generated_config(params: dict, unet) -> dict:
    """What the generated set depends on: the model's weights, the sampler's code, its settings."""
    return {"model": model_fingerprint(unet), "code": code_version(sampling, trajectory), "method": "ddpm",
            "steps": params["sampler_steps"], "n": params["n_generated"], "seed": params["seed"]}


def generated(params: dict, *, progress: bool = True) -> ImageSet:
    """The target model's own DDPM samples (cached)."""
    unet, scheduler = target_model(params, progress=progress)
    cfg = generated_config(params, unet)
    shape = (cfg["n"], unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)

    def draw():
        return {"images": sample(unet, scheduler, cfg["n"], method="ddpm", num_inference_steps=cfg["steps"],
                                 seed=_stream_seed(params["seed"], "generated"), progress=progress)}

    images = cached("samples", cfg, draw, expect={"images": shape})["images"]
    return ImageSet("generated", images, np.arange(len(images)))


def all_sets(params: dict, *, progress: bool = True) -> dict[str, ImageSet]:
    """member, heldout, external and generated image sets."""
    return {**image_sets(params), "generated": generated(params, progress=progress)}


def _stream_seed(seed: int, stream: str) -> int:
    """A seed per noise stream (dataset), so that ids of different datasets never share noise."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{stream}".encode()).digest()[:7], "big")


def _source_of(params: dict, split: str) -> str:
    return "generated" if split == "generated" else manifest(params).datasets[split]


def features(params: dict, split: str, *, chunk: int = 250, shard: tuple[int, int] | None = None,
             device=None, progress: bool = True) -> dict[str, torch.Tensor] | None:
    """Trajectory features of one split on the profile's grid: {name: (N, T)}.

    Computed in chunks of ``chunk`` images, each cached atomically under a key
    of (model weights, kernel code, source, image content and ids, grid,
    seed): an interrupted run resumes at the first missing chunk, and chunks
    do not depend on each other.  A loaded chunk must hold exactly the rows of
    its images.  With ``shard=(rank, world_size)`` only every world_size-th
    chunk from ``rank`` is computed and nothing is returned (see
    :mod:`provlib.extract`).
    """
    chunk = positive_int(chunk, "chunk")
    splits = [*manifest(params).indices, "generated"]
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; choose from {splits}")
    images = generated(params, progress=progress) if split == "generated" else image_sets(params)[split]
    grid, source = timestep_grid(params), _source_of(params, split)
    unet, scheduler = target_model(params, progress=progress)
    seed = _stream_seed(params["seed"], source)
    base = {"model": model_fingerprint(unet), "code": code_version(trajectory, persample), "source": source,
            "grid": grid.tolist(), "seed": seed, "features": FEATURES}
    starts = list(range(0, len(images), chunk))
    mine = starts if shard is None else starts[shard[0]::shard[1]]
    parts = [images.subset(np.arange(s, min(s + chunk, len(images)))) for s in mine]
    keys = [{**base, "ids_sha256": hashlib.sha256(p.ids.tobytes()).hexdigest(),
             "images_sha256": tensor_sha256(p.images)} for p in parts]
    todo = sum(len(p) * len(grid) for p, k in zip(parts, keys) if not cache_path("features", k).exists())
    out = []
    with progress_bar(desc=f"features {split} ({len(grid)} timesteps)", total=todo, enabled=progress and todo > 0,
                      unit="row") as bar:
        for part, key in zip(parts, keys):
            def compute(part=part):
                feats = trajectory_features(unet, scheduler, part.images, grid, seed=seed, ids=part.ids,
                                            device=device, callback=bar.update)
                return {**feats, "ids": torch.as_tensor(part.ids)}

            shapes = {**{f: (len(part), len(grid)) for f in FEATURES}, "ids": (len(part),)}
            got = cached("features", key, compute, expect=shapes)
            if not torch.equal(got["ids"], torch.as_tensor(part.ids)):
                raise ValueError(f"cached features {cache_path('features', key)} hold other image ids than "
                                 "their key; delete the file to recompute it")
            out.append(got)
    if shard is not None:
        return None
    return {f: torch.cat([p[f] for p in out]) for f in FEATURES}


def timestep_grid(params: dict) -> np.ndarray:
    """The trajectory grid: every ``timestep_stride``-th step of 0..999."""
    return np.arange(0, 1000, positive_int(params["timestep_stride"], "timestep_stride"))


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
