"""The embedded study's artifacts, built on demand and cached by content.

A profile (see :mod:`.profiles`) names its targets (see :mod:`.targets`).
:func:`resolve` turns a target name and the run seed into a :class:`Target`
once: its split manifest, the directory of its model (shipped, cached, or
trained now) and the fingerprint of its weights.  Every other function takes
the profile's parameters and a target name (default: the profile's first
target) and reads that resolved target: the image sets, the target's
generated samples, the trajectory features.

Everything heavy is cached under ``paths.cache_dir()`` keyed by what it
depends on: the content hash of the model weights
(:func:`provlib.models.model_fingerprint`), of the input images, the
parameters, and the :func:`provlib.io.code_version` of the code that computed
it.  A re-run reuses it; a changed parameter, a retrained model or a changed
kernel recomputes only what depends on it.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .. import paths, sampling
from ..checks import positive_int
from ..data import CODECS, ImageSet, SplitManifest, load_embedded, make_manifest, reencode
from ..io import (artifact_dir, artifact_lock, cache_path, cached, cached_meta, code_version, replace_dir,
                  tensor_sha256)
from ..kernels import persample, trajectory
from ..kernels.trajectory import FEATURES, LAYERS, trajectory_features
from ..models import ddpm, load_model, model_fingerprint, save_model, train_ddpm
from ..progress import progress_bar
from ..runtime import default_device
from ..seeds import stream_seed
from ..sampling import sample
from .targets import TargetConfig, get_target


@lru_cache(maxsize=8)
def _embedded(name: str, size: int) -> ImageSet:
    return load_embedded(name, size)


def pool_sizes(config: TargetConfig) -> dict[str, int]:
    """Number of images of each embedded dataset a target draws from."""
    return {name: len(_embedded(name, config.image_size)) for name in (config.dataset, config.external)}


def make_target_manifest(config: TargetConfig, seed: int) -> SplitManifest:
    """Member / held-out (``config.dataset``) and external (``config.external``) splits drawn from ``seed``."""
    sizes = {"member": (config.dataset, config.n_member), "heldout": (config.dataset, config.n_heldout),
             "external": (config.external, config.n_external)}
    return make_manifest(sizes, seed, pool_sizes(config))


def model_config(config: TargetConfig, manifest: SplitManifest) -> dict:
    """Everything a target model depends on (recorded beside a shipped model, and its cache key)."""
    return {"train": config.train.to_dict(), "dataset": f"{config.dataset}@{config.image_size}",
            "members_sha256": hashlib.sha256(manifest.indices["member"].tobytes()).hexdigest()}


@dataclass(frozen=True)
class Target:
    """A target resolved for one run: its manifest, its model's directory and weights fingerprint."""

    config: TargetConfig
    seed: int
    manifest: SplitManifest
    model_dir: Path
    fingerprint: str

    @property
    def name(self) -> str:
        return self.config.name

    def load(self, device=None):
        """``(unet, scheduler)`` of the target model."""
        return load_model(self.model_dir, device=device)


def resolve(name: str, seed: int, *, progress: bool = True) -> Target:
    """Target ``name`` for the run seed ``seed``: the shipped model if it matches, else the cache, else trained.

    Resolved once per process (and per shipped-model and cache folder).
    """
    return _resolve(name, int(seed), progress, str(paths.EMBEDDED_MODELS_DIR), str(paths.cache_dir()))


@lru_cache(maxsize=16)
def _resolve(name: str, seed: int, progress: bool, shipped_root: str, cache_root: str) -> Target:
    config = get_target(name)
    manifest = make_target_manifest(config, seed)
    model_dir = embedded_model_dir(name)
    if _recorded_config(model_dir) != json.loads(json.dumps(model_config(config, manifest))):
        model_dir = trained_model_dir(config, manifest, progress=progress)
    unet, _ = load_model(model_dir)
    return Target(config, seed, manifest, model_dir, model_fingerprint(unet))


def _target(params: dict, target: str | None, progress: bool = True) -> Target:
    return resolve(target or params["targets"][0], params["seed"], progress=progress)


def embedded_model_dir(name: str) -> Path:
    """Where target ``name``'s model is shipped."""
    return paths.EMBEDDED_MODELS_DIR / name


def shipped_matches(name: str, seed: int = 0) -> bool:
    """Whether the model shipped for target ``name`` was trained with exactly its configuration."""
    config = get_target(name)
    expected = model_config(config, make_target_manifest(config, seed))
    return _recorded_config(embedded_model_dir(name)) == json.loads(json.dumps(expected))


def trained_model_dir(config: TargetConfig, manifest: SplitManifest, *, retrain: bool = False,
                      progress: bool = True) -> Path:
    """The cache directory of the target model trained by this code, training it first if needed.

    Keyed by the model configuration and the training code's version.  The
    directory appears complete or not at all (built beside, then renamed).
    """
    cfg = model_config(config, manifest)
    d = artifact_dir("model", {**cfg, "code": code_version(ddpm)})
    ckpt = d / "train_state.safetensors"
    with artifact_lock(d):
        if retrain:
            shutil.rmtree(d / "model", ignore_errors=True)
            ckpt.unlink(missing_ok=True)
        if not (d / "model" / "model_index.json").exists():
            members = _embedded(config.dataset, config.image_size).subset(manifest.indices["member"])
            unet, scheduler, history = train_ddpm(members.images, config.train, checkpoint=ckpt, progress=progress)
            info = {"config": cfg, "loss_history": history,
                    "command": f"python -m provlib.train --target {config.name} --retrain --embed",
                    "trained_on": default_device().type}

            def write(tmp: Path) -> None:
                save_model(unet, scheduler, tmp, info)
                manifest.save(tmp / "splits.json")

            replace_dir(d / "model", write)
    return d / "model"


def retrain(name: str, seed: int = 0, *, progress: bool = True) -> Path:
    """Train target ``name`` from scratch into the cache (the shipped model is left alone)."""
    config = get_target(name)
    _resolve.cache_clear()
    return trained_model_dir(config, make_target_manifest(config, seed), retrain=True, progress=progress)


def embed_model(src: Path, name: str) -> Path:
    """Copy a trained model directory over target ``name``'s shipped one, only once the copy is complete."""
    src, dst = Path(src), embedded_model_dir(name)
    if not (src / "model_index.json").exists():
        raise FileNotFoundError(f"no trained model to embed at {src}; the shipped model {dst} is left as it is")
    if src.resolve() == dst.resolve():
        return dst
    load_model(src)  # refuse to ship what does not load
    out = replace_dir(dst, lambda new: shutil.copytree(src, new))
    _resolve.cache_clear()
    return out


def _recorded_config(model_dir: Path) -> dict | None:
    f = model_dir / "provlib.json"
    return json.loads(f.read_text())["config"] if f.exists() else None


# ----------------------------------------------------------------------------- image sets

def target_model(params: dict, target: str | None = None, *, progress: bool = True):
    """``(unet, scheduler)`` of a target of the profile (default: its first)."""
    return _target(params, target, progress).load()


def manifest(params: dict, target: str | None = None) -> SplitManifest:
    """The split manifest of a target of the profile (default: its first)."""
    config = get_target(target or params["targets"][0])
    return make_target_manifest(config, params["seed"])


def image_sets(params: dict, target: str | None = None) -> dict[str, ImageSet]:
    """The real image sets the study evaluates a target with: ``member`` (the evaluated members, a
    seeded subset when the target says so), ``heldout`` and ``external``."""
    config = get_target(target or params["targets"][0])
    m = make_target_manifest(config, params["seed"])
    sets = {split: _embedded(m.datasets[split], config.image_size).subset(idx, name=split)
            for split, idx in m.indices.items()}
    if config.members_evaluated < config.n_member:
        rng = np.random.default_rng(stream_seed(params["seed"], f"members evaluated:{config.name}"))
        keep = np.sort(rng.choice(config.n_member, config.members_evaluated, replace=False))
        sets["member"] = sets["member"].subset(keep, name="member")
    return sets


def generated_config(params: dict, target: Target) -> dict:
    """What a generated set depends on: the model's weights, the sampler's code, its settings."""
    return {"model": target.fingerprint, "code": code_version(sampling, trajectory), "method": "ddpm",
            "steps": params["sampler_steps"], "n": params["n_generated"], "seed": params["seed"]}


def generated(params: dict, target: str | None = None, *, progress: bool = True) -> ImageSet:
    """The target model's own DDPM samples (cached)."""
    t = _target(params, target, progress)
    cfg = generated_config(params, t)
    shape = (cfg["n"], 1, t.config.image_size, t.config.image_size)

    def draw():
        unet, scheduler = t.load()
        return {"images": sample(unet, scheduler, cfg["n"], method="ddpm", num_inference_steps=cfg["steps"],
                                 seed=stream_seed(params["seed"], "generated"), progress=progress)}

    images = cached("samples", cfg, draw, expect={"images": shape})["images"]
    return ImageSet("generated", images, np.arange(len(images)))


def all_sets(params: dict, target: str | None = None, *, progress: bool = True) -> dict[str, ImageSet]:
    """member, heldout, external and generated image sets of a target."""
    return {**image_sets(params, target), "generated": generated(params, target, progress=progress)}


def parse_split(split: str) -> tuple[str, int | None, str]:
    """``"heldout#150@jpeg75"`` -> ``("heldout", 150, "jpeg75")``: the base split, the size of a seeded
    subset of it (``None``: all of it) and the codec (``"none"`` without ``@``)."""
    rest, _, codec = split.partition("@")
    base, _, count = rest.partition("#")
    if codec and codec not in CODECS:
        raise ValueError(f"split {split!r}: unknown codec {codec!r}; choose from {CODECS}")
    if count and (not count.isdigit() or int(count) < 1):
        raise ValueError(f"split {split!r}: the subset size after '#' must be a positive integer")
    return base, int(count) if count else None, codec or "none"


def split_name(base: str, count: int | None = None, codec: str = "none") -> str:
    """The inverse of :func:`parse_split`: ``("heldout", 150, "jpeg75")`` -> ``"heldout#150@jpeg75"``."""
    return base + (f"#{count}" if count else "") + (f"@{codec}" if codec != "none" else "")


def subset_positions(seed: int, base: str, total: int, n: int) -> np.ndarray:
    """Sorted positions of the seeded ``n``-image subset of split ``base`` (of ``total`` images)."""
    rng = np.random.default_rng(stream_seed(seed, f"subset:{base}"))
    return np.sort(rng.choice(total, min(n, total), replace=False))


def source_of(params: dict, split: str, target: str | None = None) -> str:
    """The dataset a split's images come from (its noise stream); ``generated`` for the model's samples,
    ``generated:<name>`` for an open-world generator's (split ``open:<name>``).

    A split may carry a codec (``member@jpeg75``: the member images after JPEG at
    quality 75, see :func:`provlib.data.reencode`); it keeps its images' ids and noise stream.
    """
    base, _, _ = parse_split(split)
    datasets = manifest(params, target).datasets
    if base.startswith("open:"):
        from .generators import get_generator
        get_generator(base[len("open:"):])
        return "generated:" + base[len("open:"):]
    if base not in [*datasets, "generated"]:
        raise ValueError(f"unknown split {split!r}; choose from {[*datasets, 'generated']} or open:<generator>")
    return "generated" if base == "generated" else datasets[base]


def split_images(params: dict, split: str, target: str | None = None, *, progress: bool = True) -> ImageSet:
    """One split's images: ``member``, ``heldout``, ``external``, ``generated``, or ``open:<generator>``,
    optionally a seeded subset of it (``<split>#<n>``) and re-encoded (``<split>@<codec>``)."""
    source_of(params, split, target)  # checks the name
    base, count, codec = parse_split(split)
    if base == "generated":
        images = generated(params, target, progress=progress)
    elif base.startswith("open:"):
        from .generators import samples
        images = samples(params, base[len("open:"):], progress=progress)
    else:
        images = image_sets(params, target)[base]
    if count is not None:
        images = images.subset(subset_positions(params["seed"], base, len(images), count), name=split)
    if codec == "none":
        return images
    return ImageSet(split, reencode(images.images, codec), images.ids, images.labels)


# ----------------------------------------------------------------------------- features

def features(params: dict, split: str, *, target: str | None = None, chunk: int = 250,
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
    grid = timestep_grid(params)
    seed = stream_seed(params["seed"], source_of(params, split, target))
    names = (*FEATURES, LAYERS)

    def compute(model, part, callback):
        return trajectory_features(*model, part.images, grid, seed=seed, ids=part.ids, device=device,
                                   features=names, callback=callback)

    shapes = {**{f: (len(grid),) for f in FEATURES}, LAYERS: (len(grid), None)}
    out = chunked(params, split, "features", {"grid": grid.tolist(), "features": names},
                  code_version(trajectory, persample), compute, shapes,
                  target=target, chunk=chunk, shard=shard, rows_per_image=len(grid), progress=progress)
    if out is None:
        return None
    keep = [*FEATURES, *([LAYERS] if layers else []), *(["seconds_per_image"] if seconds else [])]
    return {k: out[k] for k in keep}


def chunked(params: dict, split: str, kind: str, settings: dict, code: str, compute, shapes: dict, *,
            target: str | None = None, chunk: int = 250, shard: tuple[int, int] | None = None,
            rows_per_image: int = 1, progress: bool = True) -> dict[str, torch.Tensor] | None:
    """A per-image measurement of one split, computed in cached chunks: {name: (N, *shape)}.

    ``compute(model, part, callback)`` returns ``{name: tensor}`` for the
    :class:`ImageSet` ``part`` (``model`` is the target's ``(unet, scheduler)``,
    loaded on the first chunk missing from the cache; ``callback(n)`` advances
    the progress bar by ``n`` of the ``rows_per_image`` rows of each image).
    Each chunk is cached under (kind, model weights, ``code``, ``settings``,
    source, seed, image content and ids) and must hold the rows of its images
    (``shapes`` gives each entry's shape after the image dimension).  The
    compute time of each chunk is stored with it (``seconds_per_image``).
    """
    chunk = positive_int(chunk, "chunk")
    images = split_images(params, split, target, progress=progress)
    t = _target(params, target, progress)
    base = {"model": t.fingerprint, "code": code, "source": source_of(params, split, target),
            "seed": params["seed"], **settings}
    starts = list(range(0, len(images), chunk))
    mine = starts if shard is None else starts[shard[0]::shard[1]]
    parts = [images.subset(np.arange(s, min(s + chunk, len(images)))) for s in mine]
    keys = [{**base, "ids_sha256": hashlib.sha256(p.ids.tobytes()).hexdigest(),
             "images_sha256": tensor_sha256(p.images)} for p in parts]
    todo = sum(len(p) * rows_per_image for p, k in zip(parts, keys) if not cache_path(kind, k).exists())
    model: list = []
    out = []
    with progress_bar(desc=f"{kind} {t.name}/{split}", total=todo, enabled=progress and todo > 0,
                      unit="row" if rows_per_image > 1 else "img") as bar:
        for part, key in zip(parts, keys):
            def run(part=part):
                if not model:
                    model.extend(t.load())
                got = compute(model, part, bar.update)
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
    mask[np.random.default_rng(stream_seed(seed, stream)).permutation(n)[:n_train]] = True
    return mask
