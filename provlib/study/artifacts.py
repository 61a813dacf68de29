"""The embedded study's artifacts, built on demand and cached by content.

Every function takes one target of a run (:class:`provlib.study.run.Target`,
resolved once: its manifest, image sets, model and the noise stream of each
split) and builds on it: the target's generated samples, any split's images
(seeded subsets and re-encodings included), and per-image measurements in
cached chunks: the trajectory features and the peers' raw measurements.

Everything heavy is cached under ``paths.cache_dir()`` keyed by what it
depends on: the content hash of the model weights
(:func:`provlib.models.model_fingerprint`), of the input images, the
parameters, and the :func:`provlib.io.code_version` of the code that computed
it.  A re-run reuses it; a changed parameter, a retrained model or a changed
kernel recomputes only what depends on it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from .. import sampling
from ..models import interface, latent
from ..checks import positive_int
from ..acquisition import reacquire
from ..data import ImageSet, reencode
from ..io import cache_path, cached, cached_meta, code_version, tensor_sha256
from ..kernels import persample, trajectory
from ..kernels.trajectory import FEATURES, LAYERS, trajectory_features
from ..progress import progress_bar
from ..seeds import stream_seed
from . import generators
from .run import SHIFTED, Target, parse_split, subset_positions


# ----------------------------------------------------------------------------- image sets

def generated_config(target: Target) -> dict:
    """What a generated set depends on: the model's weights, the sampler's code, its settings (and for a
    text-to-image model its prompts: sample i under the caption of class i mod 10)."""
    run = target.run
    cfg = {"model": target.fingerprint, "code": code_version(sampling, trajectory), "method": "ddpm",
           "steps": run.sampler_steps, "n": run.n_generated, "seed": run.seed}
    if target.config.kind == "latent":
        cfg |= {"prompts": f"class captions of {target.config.dataset}, class = id mod {GENERATED_CLASSES}",
                "code": code_version(sampling, trajectory, latent, interface)}
    return cfg


GENERATED_CLASSES = 10   # a text-to-image target's samples cycle through the captions of its dataset's classes


def generated(target: Target, *, progress: bool = True) -> ImageSet:
    """The target model's own DDPM samples (cached); a text-to-image model's carry the class of their prompt as
    their label."""
    cfg = generated_config(target)
    size = target.config.image_size
    ids = np.arange(cfg["n"])
    labels = ids % GENERATED_CLASSES if target.config.kind == "latent" else None

    def draw():
        model = target.open()
        prompts = None if labels is None else latent.dataset_captions(target.config.dataset, labels)
        return {"images": model.generate(cfg["n"], prompts=prompts, method="ddpm", num_inference_steps=cfg["steps"],
                                         seed=stream_seed(target.run.seed, "generated"), progress=progress)}

    images = cached("samples", cfg, draw, expect={"images": (cfg["n"], 1, size, size)})["images"]
    return ImageSet("generated", images, ids, labels)


def all_sets(target: Target, *, progress: bool = True) -> dict[str, ImageSet]:
    """member, heldout, external and generated image sets of a target."""
    return {**target.image_sets, "generated": generated(target, progress=progress)}


def shifted(target: Target) -> ImageSet:
    """The subtle-shift split: a seeded subset of the target's held-out images (:attr:`Target.shifted_positions`),
    re-acquired from their source pixels through :data:`provlib.acquisition.SHIFTED_ACQUISITION` (another tone
    curve: the same content, another pipeline).  Their ids, labels and noise are the held-out
    images' own, so an attack's score on an image with and without the shift differs by the pipeline alone."""
    held = target.image_sets["heldout"].subset(target.shifted_positions, name=SHIFTED)
    images = reacquire(target.manifest.datasets["heldout"], held.ids, target.config.image_size)
    return ImageSet(SHIFTED, images, held.ids, held.labels)


def split_images(target: Target, split: str, *, progress: bool = True) -> ImageSet:
    """One split's images: ``member``, ``heldout``, ``external``, ``shifted``, ``generated``, or ``open:<generator>``,
    optionally a seeded subset of it (``<split>#<n>``) and re-encoded (``<split>@<codec>``)."""
    target.source_of(split)  # checks the name
    base, count, codec = parse_split(split)
    if base == "generated":
        images = generated(target, progress=progress)
    elif base.startswith("open:"):
        images = generators.samples(target.run, base[len("open:"):], progress=progress)
    elif base == SHIFTED:
        images = shifted(target)
    else:
        images = target.image_sets[base]
    if count is not None:
        images = images.subset(subset_positions(target.run.seed, base, len(images), count), name=split)
    if codec == "none":
        return images
    return ImageSet(split, reencode(images.images, codec), images.ids, images.labels)


# ----------------------------------------------------------------------------- what a kernel takes

@dataclass(frozen=True)
class Part:
    """A chunk of a split as the kernels take it: ``images`` is x0 (the images of a pixel model, the latents of a
    latent model: :meth:`provlib.models.interface.DiffusionModel.to_space`), ``cond`` the condition of each (None
    for an unconditional pixel model)."""

    images: torch.Tensor
    ids: np.ndarray
    cond: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)


def prompts_of(target: Target, split: str, images: ImageSet) -> list[str] | None:
    """The prompt of each image of a split, as the target conditions on it: its class caption (``prompt="caption"``;
    a generated image's is the caption it was drawn with), the empty prompt (``"empty"``), or None (a pixel
    target)."""
    if target.config.kind != "latent":
        return None
    if target.config.prompt == "empty":
        return [""] * len(images)
    source = target.source_of(split)
    return latent.dataset_captions(target.config.dataset if source.startswith("generated") else source, images.labels)


def in_space(target: Target, split: str, images: ImageSet, model: interface.DiffusionModel) -> Part:
    """``images`` (of ``split``) as the kernels of ``model`` take them."""
    prompts = prompts_of(target, split, images)
    cond = None if prompts is None else model.condition(prompts)
    return Part(model.to_space(images.images), images.ids, cond)


# ----------------------------------------------------------------------------- features

def features(target: Target, split: str, *, chunk: int = 250,
             shard: tuple[int, int] | None = None, device=None, progress: bool = True,
             seconds: bool = False, layers: bool = False) -> dict[str, torch.Tensor] | None:
    """Trajectory features of one split of a target on the profile's grid: {name: (N, T)}.

    Computed in chunks of ``chunk`` images, each cached atomically under a key
    of (model weights, kernel code, source, image content and ids, grid,
    seed): an interrupted run resumes at the first missing chunk, and chunks
    do not depend on each other.  A loaded chunk must hold exactly the rows of
    its images.  With ``shard=(rank, world_size)`` only every world_size-th
    chunk from ``rank`` is computed and nothing is returned (see
    :mod:`provlib.extract`).  ``seconds=True`` adds ``seconds_per_image``, the
    compute time recorded with the chunks; ``layers=True`` adds each layer's
    share of ||grad_theta L_t||^2 (``grad_theta_layers``, (N, T, n_layers)),
    which the same backward computes (GSA_2 reads it).
    """
    grid = target.run.grid
    seed = target.noise_seed(split)
    names = (*FEATURES, LAYERS)

    def compute(model, part, callback):
        return trajectory_features(*model, part.images, grid, seed=seed, ids=part.ids, device=device,
                                   features=names, callback=callback, cond=part.cond)

    shapes = {**{f: (len(grid),) for f in FEATURES}, LAYERS: (len(grid), None)}
    out = chunked(target, split, "features", {"grid": grid.tolist(), "features": names},
                  code_version(trajectory, persample), compute, shapes, chunk=chunk, shard=shard,
                  rows_per_image=len(grid), progress=progress)
    if out is None:
        return None
    keep = [*FEATURES, *([LAYERS] if layers else []), *(["seconds_per_image"] if seconds else [])]
    return {k: out[k] for k in keep}


def chunked(target: Target, split: str, kind: str, settings: dict, code: str, compute, shapes: dict, *,
            chunk: int = 250, shard: tuple[int, int] | None = None,
            rows_per_image: int = 1, progress: bool = True) -> dict[str, torch.Tensor] | None:
    """A per-image measurement of one split, computed in cached chunks: {name: (N, *shape)}.

    ``compute(model, part, callback)`` returns ``{name: tensor}`` for the
    :class:`Part` ``part`` (its x0, ids and condition; ``model`` is the target's ``(unet, scheduler)``,
    loaded on the first chunk missing from the cache; ``callback(n)`` advances
    the progress bar by ``n`` of the ``rows_per_image`` rows of each image).
    Each chunk is cached under (kind, model weights, ``code``, ``settings``,
    source, seed, image content and ids) and must hold the rows of its images
    (``shapes`` gives each entry's shape after the image dimension).  The
    compute time of each chunk is stored with it (``seconds_per_image``).
    """
    chunk = positive_int(chunk, "chunk")
    images = split_images(target, split, progress=progress)
    base = {"model": target.fingerprint, "code": code, "source": target.source_of(split),
            "seed": target.run.seed, **settings}
    if target.config.kind == "latent":
        base["condition"] = target.config.prompt
    starts = list(range(0, len(images), chunk))
    mine = starts if shard is None else starts[shard[0]::shard[1]]
    parts = [images.subset(np.arange(s, min(s + chunk, len(images)))) for s in mine]
    keys = [{**base, "ids_sha256": hashlib.sha256(p.ids.tobytes()).hexdigest(),
             "images_sha256": tensor_sha256(p.images)} for p in parts]
    todo = sum(len(p) * rows_per_image for p, k in zip(parts, keys) if not cache_path(kind, k).exists())
    model: list = []
    out = []
    with progress_bar(desc=f"{kind} {target.name}/{split}", total=todo, enabled=progress and todo > 0,
                      unit="row" if rows_per_image > 1 else "img") as bar:
        for part, key in zip(parts, keys):
            def run(part=part):
                if not model:
                    model.append(target.open())
                got = compute([model[0].unet, model[0].scheduler], in_space(target, split, part, model[0]),
                              bar.update)
                if rows_per_image == 1:
                    bar.update(len(part))
                return {**got, "ids": torch.as_tensor(part.ids)}

            expect = {**{name: (len(part), *shape) for name, shape in shapes.items()}, "ids": (len(part),)}
            got = cached(kind, key, run, expect=expect)
            if not torch.equal(got["ids"], torch.as_tensor(part.ids)):
                raise ValueError(f"cached {kind} {cache_path(kind, key)} hold other image ids than "
                                 "their key; delete the file to recompute it")
            got["seconds"] = torch.full((len(part),), cached_meta(kind, key)["seconds"] / len(part))
            out.append(got)
    if shard is not None:
        return None
    merged = {name: torch.cat([p[name] for p in out]) for name in [*shapes, "seconds"]}
    merged["seconds_per_image"] = float(merged.pop("seconds").mean())
    return merged
