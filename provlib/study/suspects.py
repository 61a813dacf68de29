"""Training-data attribution at embedded scale: a base model, source models, and suspects fine-tuned on their output.

*Was your model secretly trained on data created by mine?* (Zhang et al., 2024)
uses text-to-image Stable Diffusion; here class-conditional DDPMs stand in (the
class label plays the prompt; Fashion-MNIST at 16x16):

- **base** (``fmc-base``): a class-conditional DDPM pretrained on 4,000 images;
- **sources**: the IP owners' models, the base fine-tuned (all weights) on each
  owner's own 1,000 images: ``fmc-src-a`` on Fashion-MNIST images (the same
  distribution as everyone else's real images), ``fmc-src-b`` on MNIST digits
  (distinctive data, as the paper's sources fine-tuned on CelebA or CC3M);
- **releases**: what each source publishes: 1,500 of its generations (150 per
  class, DDIM 50 steps), every one carrying the owner's 32-bit watermark
  (:mod:`provlib.attribution.watermark`; the watermark baseline reads it back);
- **suspects**: the base fine-tuned through a LoRA adapter (peft format) on 500
  labelled images of which a share ``rho`` is drawn from one source's release
  and the rest from a pool of real images; ``rho = 0`` are the innocent models
  (shared by both sources).  Each ``rho`` has :data:`PER_ROLE` models in each of
  two roles that are never mixed: ``shadow`` (calibration: delta_0, the
  discriminator) and ``test`` (every reported number).

Every image pool is a disjoint draw from the embedded Fashion-MNIST or MNIST
images (:func:`pools`).  Models are shipped under ``provlib/embedded/models/`` (base,
sources) and ``provlib/embedded/suspects/`` (adapters, float16), each with the
configuration it was trained with; ``python -m provlib.train --attribution``
retrains and ships them all.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch

from .. import paths, sampling
from ..attribution import watermark
from ..data import SplitManifest, make_manifest, to_model_range, to_uint8
from ..io import artifact_dir, artifact_lock, atomic_write, cached, code_version, replace_dir
from ..models import ddpm, load_model, model_fingerprint, save_model, train_ddpm
from ..models import lora as lora_mod
from ..models.ddpm import TrainConfig, UNetConfig
from ..models.interface import DiffusionModel
from ..models.lora import LoraTrainConfig, apply_lora, save_lora, train_lora
from ..runtime import default_device
from ..seeds import stream_seed
from .targets import embedded_images, embedded_model_dir, matches, ship

SETTING = "class labels"
DATASET = "fashion_mnist"
SIZE = 16
NUM_CLASSES = 10
# name: (dataset, images).  Splits of one dataset are consecutive chunks of one seeded permutation, in this
# order: "reserve" holds the 1,000 Fashion-MNIST images fmc-src-b was fine-tuned on before it moved to MNIST,
# kept so that "real" (and every suspect trained on it) stays the same draw.
POOLS = {"base": (DATASET, 4000), "fmc-src-a": (DATASET, 1000), "reserve": (DATASET, 1000), "real": (DATASET, 3000),
         "fmc-src-b": ("mnist", 1000)}
BASE = "fmc-base"
SOURCES = ("fmc-src-a", "fmc-src-b")
UNET = UNetConfig(num_class_embeds=NUM_CLASSES)
BASE_TRAIN = TrainConfig(unet=UNET, epochs=100, batch_size=128, lr=1e-3, warmup_steps=100)
SOURCE_TRAIN = TrainConfig(unet=UNET, epochs=100, batch_size=64, lr=2e-4, warmup_steps=50)
RELEASE = {"n": 1500, "method": "ddim", "steps": 50}
RHOS = (0.0, 0.3, 0.5, 0.7, 1.0)
ROLES = ("shadow", "test")
PER_ROLE = 5
N_SUSPECT = 500
SUSPECT_TRAIN = LoraTrainConfig(rank=4, alpha=4, epochs=60, batch_size=64, lr=1e-3)
RECONSTRUCT_T = 300   # noise level of the training-data keys' "reconstruct" query (linear betas: abar = 0.39)


@dataclass(frozen=True)
class Suspect:
    """A suspect model: which source's release it drew from, the share ``rho``, its role and index."""

    name: str
    source: str | None      # None for the innocent models (rho = 0)
    rho: float
    role: str
    index: int

    def generated(self, n: int) -> int:
        """How many of its ``n`` fine-tuning images come from its source's release."""
        return int(round(self.rho * n))


@dataclass(frozen=True)
class Registry:
    """Every suspect of a setting, by name: per role and index, the innocent model ``<innocent>-<role><i>``
    (rho = 0, shared by every source), then ``<source>-r<100 rho>-<role><i>`` per source and rho > 0."""

    what: str                  # how an unknown name is refused: "unknown <what> 'x'"
    sources: tuple[str, ...]
    innocent: str

    @cached_property
    def suspects(self) -> dict[str, Suspect]:   # built once: get() and of() read it on every call
        out: dict[str, Suspect] = {}
        for role in ROLES:
            for i in range(PER_ROLE):
                for src, rho in [(None, 0.0)] + [(s, r) for s in self.sources for r in RHOS[1:]]:
                    name = f"{self.innocent}-{role}{i}" if src is None else f"{src}-r{round(100 * rho):03d}-{role}{i}"
                    out[name] = Suspect(name, src, rho, role, i)
        return out

    def get(self, name: str) -> Suspect:
        every = self.suspects
        if name not in every:
            raise ValueError(f"unknown {self.what} {name!r}; choose from {sorted(every)[:4]}... ({len(every)} in all)")
        return every[name]

    def of(self, source: str, role: str) -> list[Suspect]:
        """The innocent models and the models that drew from ``source``, in one role (rho ascending)."""
        if source not in self.sources or role not in ROLES:
            raise ValueError(f"source must be one of {self.sources} and role one of {ROLES}, got {source!r}, "
                             f"{role!r}")
        return sorted((s for s in self.suspects.values() if s.role == role and s.source in (None, source)),
                      key=lambda s: (s.rho, s.index))


REGISTRY = Registry("suspect model", SOURCES, "fmc-innocent")
SUSPECTS: dict[str, Suspect] = REGISTRY.suspects
get_suspect, suspects_of = REGISTRY.get, REGISTRY.of


# ----------------------------------------------------------------------------- data

def study_seed(stream: str, seed: int = 0) -> int:
    """The seed of one of this study's draws: :func:`provlib.seeds.stream_seed` of ``attribution:<stream>``, in
    the layout the shipped pools, releases and suspects were drawn with (8 bytes, little-endian)."""
    return stream_seed(seed, f"attribution:{stream}", nbytes=8, byteorder="little")


@lru_cache(maxsize=2)
def pools(seed: int = 0) -> SplitManifest:
    """Disjoint Fashion-MNIST pools: the base's, each source's own, and the real images suspects use."""
    datasets = sorted({ds for ds, _ in POOLS.values()})
    return make_manifest(dict(POOLS), study_seed("pools", seed), {ds: len(embedded_images(ds, SIZE)) for ds in datasets})


def pool_images(name: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of one pool."""
    if name not in POOLS:
        raise ValueError(f"unknown pool {name!r}; choose from {sorted(POOLS)}")
    d = embedded_images(POOLS[name][0], SIZE).subset(pools(seed).indices[name])
    return d.images, torch.as_tensor(d.labels)


# ----------------------------------------------------------------------------- base and sources

def _record(name: str, seed: int) -> dict:
    m = pools(seed)
    pool = "base" if name == BASE else name
    rec = {"kind": "class-conditional DDPM", "dataset": f"{POOLS[pool][0]}@{SIZE}", "pool": pool,
           "pool_sha256": hashlib.sha256(m.indices[pool].tobytes()).hexdigest(),
           "train": (BASE_TRAIN if name == BASE else SOURCE_TRAIN).to_dict()}
    if name != BASE:
        rec["init"] = BASE
    return rec


def model_dir(name: str, seed: int = 0, *, retrain: bool = False, progress: bool = True) -> Path:
    """The base or a source model: the shipped one if it matches its configuration, else the cache, else trained."""
    if name not in (BASE, *SOURCES):
        raise ValueError(f"unknown model {name!r}; choose from {[BASE, *SOURCES]}")
    record = json.loads(json.dumps(_record(name, seed)))
    if not retrain and matches(embedded_model_dir(name), record):
        return embedded_model_dir(name)
    d = artifact_dir("attribution-model", {**record, "code": code_version(ddpm)})
    with artifact_lock(d):
        if retrain:
            shutil.rmtree(d / "model", ignore_errors=True)
        if not (d / "model" / "provlib.json").exists():
            init = None if name == BASE else load_model(model_dir(BASE, seed, progress=progress))[0]
            images, labels = pool_images(record["pool"], seed)
            cfg = BASE_TRAIN if name == BASE else SOURCE_TRAIN
            unet, scheduler, history = train_ddpm(images, cfg, labels=labels, init=init, progress=progress,
                                                  checkpoint=d / "train_state.safetensors")
            info = {"config": record, "loss_history": history,
                    "trained_on": default_device().type,
                    "command": "python -m provlib.train --attribution --retrain --embed"}
            replace_dir(d / "model", lambda tmp: save_model(unet, scheduler, tmp, info))
    return d / "model"


def load(name: str, seed: int = 0):
    """``(unet, scheduler)`` of the base, a source, or a suspect (its adapter merged into the base)."""
    if name in SUSPECTS:
        unet, scheduler = load(BASE, seed)
        return apply_lora(unet, suspect_dir(name, seed)), scheduler
    return load_model(model_dir(name, seed))


def model(name: str, seed: int = 0) -> DiffusionModel:
    """The base, a source or a suspect as the interface the key queries take."""
    return DiffusionModel("pixel", *load(name, seed), source=name)


def source_data(source: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, None]:
    """``(images, labels, None)``: a source's own training images (no captions in this setting)."""
    return (*pool_images(source, seed), None)


def conditions(source: str, n: int) -> tuple[torch.Tensor, None]:
    """The conditions of ``n`` generations balanced over the classes: ``(labels, None)`` (no prompts)."""
    return torch.arange(n) % NUM_CLASSES, None


# ----------------------------------------------------------------------------- releases

def release_labels() -> torch.Tensor:
    """The classes of a release: :data:`RELEASE` ``n`` images, balanced, in order."""
    return torch.arange(RELEASE["n"]) % NUM_CLASSES


def watermark_key(source: str) -> int:
    return study_seed(f"watermark:{source}") % (2 ** 31)


def _release_record(source: str, seed: int) -> dict:
    return {"source": source, "model": model_fingerprint(load(source, seed)[0]), **RELEASE,
            "watermark_key": watermark_key(source), "seed": seed}


def embedded_release_path(source: str) -> Path:
    return paths.EMBEDDED_RELEASES_DIR / f"{source}.npz"


def release(source: str, seed: int = 0, *, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``source`` publishes: ``(images, labels)``, its generations carrying its watermark, 8-bit.

    Shipped (``provlib/embedded/releases/<source>.npz``, uint8 pixels) so that the
    suspects' fine-tuning sets are the same bytes on every machine; drawn again
    (and cached) only when the shipped file does not match the source's weights.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose from {SOURCES}")
    record = _release_record(source, seed)
    labels = release_labels()
    f = embedded_release_path(source)
    if f.exists():
        with np.load(f) as z:
            if json.loads(str(z["config"])) == record:
                return to_model_range(z["images"]), labels

    def draw():
        unet, scheduler = load(source, seed)
        x = sampling.sample(unet, scheduler, RELEASE["n"], method=RELEASE["method"],
                            num_inference_steps=RELEASE["steps"], seed=study_seed(f"release:{source}", seed),
                            class_labels=labels, progress=progress)
        return {"pixels": torch.from_numpy(to_uint8(watermark.embed(x, watermark_key(source))))}

    pixels = cached("attribution-release", {**record, "code": code_version(sampling, watermark)}, draw,
                    expect={"pixels": (RELEASE["n"], 1, SIZE, SIZE)})["pixels"]
    return to_model_range(pixels.numpy()), labels


def embed_release(source: str, seed: int = 0) -> Path:
    """Ship ``source``'s release (uint8 pixels, labels, and the record it matches)."""
    images, labels = release(source, seed)
    record = json.dumps(_release_record(source, seed))
    f = embedded_release_path(source)
    f.parent.mkdir(parents=True, exist_ok=True)

    def write(p: Path) -> None:
        with open(p, "wb") as fh:   # a file object: numpy would append ".npz" to a path
            np.savez_compressed(fh, images=to_uint8(images), labels=labels.numpy(), config=np.array(record))

    atomic_write(f, write)
    return f


# ----------------------------------------------------------------------------- suspects

def suspect_data(name: str, seed: int = 0) -> dict:
    """A suspect's fine-tuning set: ``{"images", "labels", "generated" (bool per image), "release_index",
    "real_index"}``: ``rho * 500`` images of its source's release and the rest from the real pool."""
    s = get_suspect(name)
    rng = np.random.default_rng(study_seed(f"suspect:{name}", seed))
    real_x, real_y = pool_images("real", seed)
    real_idx = np.sort(rng.choice(len(real_x), N_SUSPECT - s.generated(N_SUSPECT), replace=False))
    parts_x, parts_y = [real_x[real_idx]], [real_y[real_idx]]
    rel_idx = np.zeros(0, dtype=np.int64)
    if s.generated(N_SUSPECT):
        rel_x, rel_y = release(s.source, seed, progress=False)
        rel_idx = np.sort(rng.choice(len(rel_x), s.generated(N_SUSPECT), replace=False))
        parts_x.insert(0, rel_x[rel_idx])
        parts_y.insert(0, rel_y[rel_idx])
    return {"images": torch.cat(parts_x), "labels": torch.cat(parts_y),
            "generated": np.r_[np.ones(s.generated(N_SUSPECT), bool), np.zeros(N_SUSPECT - s.generated(N_SUSPECT), bool)],
            "release_index": rel_idx, "real_index": real_idx}


def suspect_record(name: str, seed: int) -> dict:
    s = get_suspect(name)
    d = suspect_data(name, seed)
    return {"kind": "LoRA fine-tune", "base": BASE, "source": s.source, "rho": s.rho, "role": s.role,
            "index": s.index, "n_generated": s.generated(N_SUSPECT), "n_real": N_SUSPECT - s.generated(N_SUSPECT),
            "data_sha256": hashlib.sha256(d["images"].numpy().tobytes()).hexdigest(),
            "train": {**SUSPECT_TRAIN.to_dict(), "seed": study_seed(f"lora:{name}", seed) % (2 ** 31)}}


def embedded_suspect_dir(name: str) -> Path:
    return paths.EMBEDDED_SUSPECTS_DIR / name


def suspect_dir(name: str, seed: int = 0, *, retrain: bool = False, progress: bool = False) -> Path:
    """A suspect's adapter directory (peft format): shipped if it matches, else cached, else trained now."""
    record = json.loads(json.dumps(suspect_record(name, seed)))
    shipped = embedded_suspect_dir(name)
    if not retrain and (shipped / "provlib.json").exists() \
            and json.loads((shipped / "provlib.json").read_text())["config"] == record:
        return shipped
    d = artifact_dir("attribution-suspect", {**record, "code": code_version(lora_mod, ddpm)})
    with artifact_lock(d):
        if retrain:
            shutil.rmtree(d / "adapter", ignore_errors=True)
        if not (d / "adapter" / "provlib.json").exists():
            data = suspect_data(name, seed)
            base, scheduler = load(BASE, seed)
            cfg = replace(SUSPECT_TRAIN, seed=record["train"]["seed"])
            state, config, history = train_lora(base, scheduler, data["images"], cfg, labels=data["labels"],
                                                progress=progress)
            state = {k: v.half() for k, v in state.items()}   # shipped in float16: dozens of suspects stay small
            info = {"config": record, "loss_history": history,
                    "trained_on": default_device().type,
                    "command": "python -m provlib.train --attribution --retrain --embed"}
            replace_dir(d / "adapter", lambda tmp: save_lora(tmp, state, config, info))
    return d / "adapter"


def embed_all(seed: int = 0, *, retrain: bool = False, progress: bool = True, names=None, models: bool = True) -> None:
    """Train (or reuse) and ship the base, the sources and their releases (``models``), then the suspects
    ``names`` (default: all)."""
    for name in (BASE, *SOURCES) if models else ():
        ship(model_dir(name, seed, retrain=retrain, progress=progress), embedded_model_dir(name))
    for source in SOURCES if models else ():
        embed_release(source, seed)
    for name in SUSPECTS if names is None else names:
        ship(suspect_dir(name, seed, retrain=retrain, progress=progress), embedded_suspect_dir(name))
