"""Training-data attribution in the paper's own setting: a text-to-image base, source models fine-tuned on captioned
data, and suspects shared as diffusers LoRA files.

*Was your model secretly trained on data created by mine?* (Zhang et al., 2024)
fine-tunes Stable Diffusion.  Here the latent text-to-image target ``sd1000``
(the Stable Diffusion layout, :mod:`provlib.models.latent`) is the base, and
:mod:`provlib.study.suspects`' design is repeated with prompts where that
study has class labels:

- **sources**: the IP owners' models, the base's UNet fine-tuned (all weights)
  on each owner's own 1,000 captioned images: ``sd-src-a`` on Fashion-MNIST
  images (the base's and everyone's real data distribution), ``sd-src-b`` on
  MNIST digits (distinctive data);
- **captions** (:func:`captions`) name the class and, for two thirds of the
  images, their size ("a photo of a large sneaker", "a photo of a little digit
  seven", "a photo of a sneaker"), so that a prompt says more than a class label;
- **releases**: 1,500 generations of each source (DDIM 50 steps, 50 per prompt
  over the 30 prompts of its data set), each carrying the owner's watermark,
  stored as 8-bit pixels with their prompts: prompt -> image pairs;
- **suspects**: the base fine-tuned through a LoRA on every attention
  projection (diffusers' text-to-image default), on 500 captioned images of
  which a share ``rho`` is drawn from one source's release (with its prompts)
  and the rest from a pool of real captioned images; ``rho = 0`` are the
  innocent models; :data:`PER_ROLE` per ``rho`` in each of the roles
  ``shadow`` (calibration) and ``test`` (every reported number), never mixed.
  Each is saved as diffusers' ``pytorch_lora_weights.safetensors`` and loads
  with ``pipe.load_lora_weights``.

Every image pool is a seeded draw from the embedded images that are in no split
of the base (:func:`pools`).  ``python -m provlib.train --attribution-text``
trains (or reuses) and ships them all.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .. import paths, sampling
from ..attribution import watermark
from ..data import SplitManifest, to_model_range, to_uint8
from ..io import artifact_dir, artifact_lock, atomic_write, cached, code_version, replace_dir
from ..models import latent as latent_mod
from ..models import lora as lora_mod
from ..models.interface import DiffusionModel, open_model
from ..models.latent import CLASS_NAMES, LatentTrainConfig
from ..models.lora import ATTENTION_PROJECTIONS, LoraTrainConfig, save_diffusers_lora, train_lora
from ..runtime import default_device
from ..seeds import stream_seed
from . import suspects as class_setting
from .suspects import Registry, Suspect
from .targets import embedded_images, embedded_model_dir, ship

SETTING = "text prompts"
SIZE = 16
NUM_CLASSES = 10
BASE = "sd1000"
SOURCES = ("sd-src-a", "sd-src-b")
# name: (dataset, images), drawn in this order from the images of each dataset in no split of the base
POOLS = {"sd-src-a": ("fashion_mnist", 1000), "real": ("fashion_mnist", 3000), "sd-src-b": ("mnist", 1000)}
SOURCE_TRAIN = LatentTrainConfig(epochs=100, batch_size=64, lr=2e-4, warmup_steps=50)
RELEASE = {"n": 1500, "method": "ddim", "steps": 50}
N_SUSPECT = 500      # fine-tuning images of a suspect
RHOS, ROLES, PER_ROLE = class_setting.RHOS, class_setting.ROLES, class_setting.PER_ROLE   # the class-label design
SUSPECT_TRAIN = LoraTrainConfig(rank=4, alpha=4, target_modules=ATTENTION_PROJECTIONS, epochs=60, batch_size=64,
                                lr=1e-3)
LORA_FILE = "pytorch_lora_weights.safetensors"
RECONSTRUCT_T = 420   # noise level of the training-data keys' "reconstruct" query, in the latent: Stable Diffusion's
                      # scaled-linear betas reach abar = 0.39 at t = 420, the class-conditional setting's level at 300
# a caption's size word, by the image's ink coverage among the images of its class: lowest third, middle, top third
SIZE_WORDS = ("little", "", "large")


REGISTRY = Registry("text-to-image suspect", SOURCES, "sd-innocent")
SUSPECTS: dict[str, Suspect] = REGISTRY.suspects
get_suspect, suspects_of = REGISTRY.get, REGISTRY.of


def study_seed(stream: str, seed: int = 0) -> int:
    """The seed of one of this setting's draws (``attribution-text:<stream>``)."""
    return stream_seed(seed, f"attribution-text:{stream}", nbytes=8, byteorder="little")


# ----------------------------------------------------------------------------- captions

def coverage(images: torch.Tensor) -> np.ndarray:
    """(N,) share of each image's pixels brighter than mid-grey: how much of the frame the object fills."""
    return (images > 0).double().flatten(1).mean(1).numpy()


@lru_cache(maxsize=4)
def size_thresholds(dataset: str) -> np.ndarray:
    """(classes, 2): the thirds of ink coverage within each class over every embedded image of ``dataset``."""
    d = embedded_images(dataset, SIZE)
    cov, labels = coverage(d.images), np.asarray(d.labels)
    return np.stack([np.quantile(cov[labels == k], [1 / 3, 2 / 3]) for k in range(NUM_CLASSES)])


def captions(images: torch.Tensor, labels, dataset: str) -> list[str]:
    """Each image's caption: its class, and its size word where its coverage is in the lowest or top third of
    its class (:data:`SIZE_WORDS`): "a photo of a large sneaker", "a photo of an ankle boot"."""
    th, cov = size_thresholds(dataset), coverage(images)
    labels = np.asarray(labels)
    out = []
    for c, k in zip(cov, labels):
        word = SIZE_WORDS[0] if c < th[k, 0] else SIZE_WORDS[2] if c > th[k, 1] else SIZE_WORDS[1]
        out.append(prompt(int(k), word, dataset))
    return out


def prompt(label: int, word: str, dataset: str) -> str:
    """The caption of class ``label`` with size ``word`` ("" for none)."""
    return latent_mod.caption(label, CLASS_NAMES[dataset]) if not word else \
        f"a photo of a {word} {CLASS_NAMES[dataset][label]}"


def prompt_grid(n: int, dataset: str) -> tuple[torch.Tensor, list[str]]:
    """``(labels, prompts)`` of ``n`` generations balanced over the 30 prompts of ``dataset``: sample i is of
    class i mod 10 and size word (i // 10) mod 3."""
    labels = torch.arange(n) % NUM_CLASSES
    return labels, [prompt(int(k), SIZE_WORDS[(i // NUM_CLASSES) % 3], dataset) for i, k in enumerate(labels)]


# ----------------------------------------------------------------------------- data

def _base_splits() -> dict[str, set]:
    """Per dataset, the indices the base's manifest uses (members, held-out, external, autoencoder)."""
    rec = json.loads((base_dir() / "splits.json").read_text())
    out: dict[str, set] = {}
    for split, idx in rec["indices"].items():
        out.setdefault(rec["datasets"][split], set()).update(int(i) for i in idx)
    return out


@lru_cache(maxsize=2)
def pools(seed: int = 0) -> SplitManifest:
    """Disjoint pools (:data:`POOLS`), each a seeded draw from the images in no split of the base."""
    used, indices = _base_splits(), {}
    for ds in sorted({d for d, _ in POOLS.values()}):
        free = np.setdiff1d(np.arange(len(embedded_images(ds, SIZE))), sorted(used.get(ds, ())))
        free = np.random.default_rng(study_seed(f"pools:{ds}", seed)).permutation(free)
        start = 0
        for name, (d, n) in POOLS.items():
            if d == ds:
                indices[name] = np.sort(free[start:start + n])
                start += n
    return SplitManifest(seed, {k: d for k, (d, _) in POOLS.items()}, indices)


def pool_images(name: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(images, labels, captions)`` of one pool."""
    if name not in POOLS:
        raise ValueError(f"unknown pool {name!r}; choose from {sorted(POOLS)}")
    ds = POOLS[name][0]
    d = embedded_images(ds, SIZE).subset(pools(seed).indices[name])
    labels = torch.as_tensor(d.labels)
    return d.images, labels, captions(d.images, labels, ds)


def source_data(source: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(images, labels, captions)``: a source's own captioned training images."""
    if source not in SOURCES:
        raise ValueError(f"unknown text-to-image source {source!r}; choose from {SOURCES}")
    return pool_images(source, seed)


def conditions(source: str, n: int) -> tuple[torch.Tensor, list[str]]:
    """``(labels, prompts)`` of ``n`` generations balanced over the prompts of ``source``'s data set
    (:func:`prompt_grid`)."""
    return prompt_grid(n, POOLS[source][0])


# ----------------------------------------------------------------------------- base and sources

def base_dir() -> Path:
    return embedded_model_dir(BASE)


@lru_cache(maxsize=1)
def _base_fingerprint() -> str:
    return open_model(base_dir()).fingerprint


def _source_record(name: str, seed: int) -> dict:
    m = pools(seed)
    train = {k: v for k, v in SOURCE_TRAIN.to_dict().items() if k != "model"}   # the base's shape is kept
    return {"kind": "latent text-to-image fine-tune", "init": BASE, "init_model": _base_fingerprint(),
            "dataset": f"{POOLS[name][0]}@{SIZE}", "pool": name,
            "pool_sha256": hashlib.sha256(m.indices[name].tobytes()).hexdigest(),
            "captions": "class and size word (provlib.study.suspects_text.captions)", "train": train}


def source_dir(name: str, seed: int = 0, *, retrain: bool = False, progress: bool = True) -> Path:
    """A source model's pipeline directory: the shipped one if it matches its configuration, else the cache,
    else trained now (the base's UNet fine-tuned on the source's captioned pool; VAE and text encoder kept)."""
    from .targets import matches

    if name not in SOURCES:
        raise ValueError(f"unknown text-to-image source {name!r}; choose from {SOURCES}")
    record = json.loads(json.dumps(_source_record(name, seed)))
    if not retrain and matches(embedded_model_dir(name), record):
        return embedded_model_dir(name)
    d = artifact_dir("attribution-text-source", {**record, "code": code_version(latent_mod)})
    with artifact_lock(d):
        if retrain:
            shutil.rmtree(d / "model", ignore_errors=True)
        if not (d / "model" / "provlib.json").exists():
            base = open_model(base_dir())
            images, _, caps = pool_images(name, seed)
            z0 = base.to_space(images)
            table = sorted(set(caps)) + [""]
            embeds = base.condition(table)
            index = torch.tensor([table.index(c) for c in caps])
            unet = base.unet.requires_grad_(True)
            history = latent_mod.train_unet(unet, base.scheduler, z0, embeds, index, SOURCE_TRAIN, progress)
            info = {"config": record, "loss_history": {"unet": history}, "trained_on": default_device().type,
                    "command": "python -m provlib.train --attribution-text --retrain --embed"}
            replace_dir(d / "model", lambda tmp: latent_mod.save_pipeline(base.pipeline, tmp, info))
    return d / "model"


def model(name: str, seed: int = 0) -> DiffusionModel:
    """The base, a source, or a suspect (its LoRA fused into the base), computing in float32."""
    if name == BASE:
        return open_model(base_dir())
    if name in SOURCES:
        return open_model(source_dir(name, seed))
    return open_model(base_dir(), lora=suspect_dir(name, seed) / LORA_FILE)


# ----------------------------------------------------------------------------- releases

def watermark_key(source: str) -> int:
    return study_seed(f"watermark:{source}") % (2 ** 31)


def release_prompts(source: str) -> tuple[torch.Tensor, list[str]]:
    """The classes and prompts of a release, in order: balanced over the source's 30 prompts."""
    return conditions(source, RELEASE["n"])


def _release_record(source: str, seed: int) -> dict:
    return {"source": source, "model": model(source, seed).fingerprint, **RELEASE,
            "watermark_key": watermark_key(source), "seed": seed}


def embedded_release_path(source: str) -> Path:
    return paths.EMBEDDED_RELEASES_DIR / f"{source}.npz"


def release(source: str, seed: int = 0, *, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """What ``source`` publishes: ``(images, labels, prompts)``: its generations of each prompt, carrying its
    watermark, 8-bit.  Shipped (``provlib/embedded/releases/<source>.npz``) so that every suspect's fine-tuning
    set is the same bytes on every machine; drawn again (and cached) only when the shipped file does not match."""
    if source not in SOURCES:
        raise ValueError(f"unknown text-to-image source {source!r}; choose from {SOURCES}")
    record = _release_record(source, seed)
    labels, prompts = release_prompts(source)
    f = embedded_release_path(source)
    if f.exists():
        with np.load(f) as z:
            if json.loads(str(z["config"])) == record:
                return to_model_range(z["images"]), labels, prompts

    def draw():
        m = model(source, seed)
        z = sampling.sample(m.unet, m.scheduler, RELEASE["n"], method=RELEASE["method"],
                            num_inference_steps=RELEASE["steps"], seed=study_seed(f"release:{source}", seed),
                            cond=m.condition(prompts), progress=progress)
        x = m.from_space(z)
        return {"pixels": torch.from_numpy(to_uint8(watermark.embed(x, watermark_key(source))))}

    pixels = cached("attribution-text-release", {**record, "code": code_version(sampling, watermark)}, draw,
                    expect={"pixels": (RELEASE["n"], 1, SIZE, SIZE)})["pixels"]
    return to_model_range(pixels.numpy()), labels, prompts


def embed_release(source: str, seed: int = 0) -> Path:
    """Ship ``source``'s release (uint8 pixels, labels, prompts, and the record it matches)."""
    images, labels, prompts = release(source, seed)
    record = json.dumps(_release_record(source, seed))
    f = embedded_release_path(source)
    f.parent.mkdir(parents=True, exist_ok=True)

    def write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.savez_compressed(fh, images=to_uint8(images), labels=labels.numpy(), prompts=np.array(prompts),
                                config=np.array(record))

    atomic_write(f, write)
    return f


# ----------------------------------------------------------------------------- suspects

def suspect_data(name: str, seed: int = 0) -> dict:
    """A suspect's fine-tuning set: ``{"images", "labels", "prompts", "generated" (bool per image),
    "release_index", "real_index"}``: ``rho * 500`` prompt -> image pairs of its source's release, the rest
    real captioned images."""
    s = get_suspect(name)
    rng = np.random.default_rng(study_seed(f"suspect:{name}", seed))
    real_x, real_y, real_c = pool_images("real", seed)
    real_idx = np.sort(rng.choice(len(real_x), N_SUSPECT - s.generated(N_SUSPECT), replace=False))
    xs, ys, cs = [real_x[real_idx]], [real_y[real_idx]], [real_c[i] for i in real_idx]
    rel_idx = np.zeros(0, dtype=np.int64)
    if s.generated(N_SUSPECT):
        rel_x, rel_y, rel_c = release(s.source, seed, progress=False)
        rel_idx = np.sort(rng.choice(len(rel_x), s.generated(N_SUSPECT), replace=False))
        xs.insert(0, rel_x[rel_idx])
        ys.insert(0, rel_y[rel_idx])
        cs = [rel_c[i] for i in rel_idx] + cs
    return {"images": torch.cat(xs), "labels": torch.cat(ys), "prompts": cs,
            "generated": np.r_[np.ones(s.generated(N_SUSPECT), bool), np.zeros(N_SUSPECT - s.generated(N_SUSPECT), bool)],
            "release_index": rel_idx, "real_index": real_idx}


def suspect_record(name: str, seed: int) -> dict:
    s = get_suspect(name)
    d = suspect_data(name, seed)
    h = hashlib.sha256(d["images"].numpy().tobytes())
    h.update("\n".join(d["prompts"]).encode())
    return {"kind": "LoRA fine-tune (diffusers format)", "base": BASE, "source": s.source, "rho": s.rho,
            "role": s.role, "index": s.index, "n_generated": s.generated(N_SUSPECT), "n_real": N_SUSPECT - s.generated(N_SUSPECT),
            "data_sha256": h.hexdigest(),
            "train": {**SUSPECT_TRAIN.to_dict(), "seed": study_seed(f"lora:{name}", seed) % (2 ** 31)}}


def embedded_suspect_dir(name: str) -> Path:
    return paths.EMBEDDED_SUSPECTS_DIR / name


def suspect_dir(name: str, seed: int = 0, *, retrain: bool = False, progress: bool = False) -> Path:
    """A suspect's LoRA directory (diffusers' ``pytorch_lora_weights.safetensors``): shipped if it matches, else
    cached, else trained now."""
    record = json.loads(json.dumps(suspect_record(name, seed)))
    shipped = embedded_suspect_dir(name)
    if not retrain and (shipped / "provlib.json").exists() \
            and json.loads((shipped / "provlib.json").read_text())["config"] == record:
        return shipped
    d = artifact_dir("attribution-text-suspect", {**record, "code": code_version(lora_mod)})
    with artifact_lock(d):
        if retrain:
            shutil.rmtree(d / "lora", ignore_errors=True)
        if not (d / "lora" / "provlib.json").exists():
            data = suspect_data(name, seed)
            base = open_model(base_dir())
            cfg = replace(SUSPECT_TRAIN, seed=record["train"]["seed"])
            state, config, history = train_lora(base.unet, base.scheduler, base.to_space(data["images"]), cfg,
                                                cond=base.condition(data["prompts"]), progress=progress)
            state = {k: v.half() for k, v in state.items()}   # shipped in float16, as the base
            info = {"config": record, "loss_history": history, "trained_on": default_device().type,
                    "command": "python -m provlib.train --attribution-text --retrain --embed"}
            replace_dir(d / "lora", lambda tmp: save_diffusers_lora(tmp, state, config, info))
    return d / "lora"


def embed_all(seed: int = 0, *, retrain: bool = False, progress: bool = True, names=None, models: bool = True) -> None:
    """Train (or reuse) and ship the sources and their releases (``models``), then the suspects ``names``
    (default: all)."""
    for name in SOURCES if models else ():
        ship(source_dir(name, seed, retrain=retrain, progress=progress), embedded_model_dir(name))
    for source in SOURCES if models else ():
        embed_release(source, seed)
    for name in SUSPECTS if names is None else names:
        ship(suspect_dir(name, seed, retrain=retrain, progress=progress), embedded_suspect_dir(name))
