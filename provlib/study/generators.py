"""The open world of a target: generators whose samples model attribution must reject.

"Did *this* model generate the image?" is tested against samples the
attribution probe never saw in training, from sources of growing distance to
the target: the target itself with another sampler, a near-clone (the target
fine-tuned on other images), a DDPM of the same architecture trained with
another seed on other images, a DDPM of another architecture, and a VAE (no
diffusion at all).  Each trained generator learns from Fashion-MNIST images
disjoint from the target's members and held-out images (the real images the
study evaluates with), drawn from the run seed, and is shipped like a target
(``provlib/embedded/models/<name>/``: diffusers format, ``provlib.json`` with
its configuration, loss history and retraining command, ``splits.json``).

Every generated set, the target's own included, is drawn per sample seed and
stored as float images in [-1, 1], exactly like the real sets (see
:func:`provlib.data.reencode` for the codecs every class goes through alike).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import sampling
from ..data import ImageSet, SplitManifest
from ..io import artifact_dir, artifact_lock, cached, code_version, replace_dir
from ..kernels import trajectory
from ..models import TrainConfig, UNetConfig, ddpm, load_model, model_fingerprint, other, save_model, train_ddpm
from ..models.other import VAEConfig, load_vae, sample_vae, save_vae, train_vae
from ..seeds import stream_seed
from .targets import embedded_images, embedded_model_dir, get_target, matches, resolve, ship, target_manifest

KINDS = ("sampler", "finetune", "ddpm", "vae")


@dataclass(frozen=True)
class GeneratorConfig:
    """A source of images in a target's open world."""

    name: str
    of: str                      # the target whose open world it belongs to
    kind: str                    # one of KINDS
    description: str
    n_train: int = 0             # training images, disjoint from the target's members and held-out images
    train: TrainConfig | VAEConfig | None = None
    sampler: str = "ddpm"        # how its samples are drawn (diffusion kinds)
    steps: int | None = None     # sampler steps; None: the profile's sampler_steps

    @property
    def trained(self) -> bool:
        return self.kind != "sampler"


_TINY_UNET = UNetConfig(block_out_channels=(16, 32))
_FM_WIDE = UNetConfig(block_out_channels=(48, 96), attention=True)

GENERATORS: dict[str, GeneratorConfig] = {g.name: g for g in [
    # the open world of the fm500 target (profile cpu)
    GeneratorConfig("fm500-ddim50", "fm500", "sampler", "the target itself, DDIM sampler (50 steps, eta 0)",
                    sampler="ddim", steps=50),
    GeneratorConfig("fm500-finetune", "fm500", "finetune",
                    "near-clone: the target fine-tuned for 20 epochs on 500 other images",
                    n_train=500, train=TrainConfig(epochs=20, lr=2e-4, warmup_steps=1, ema_decay=0.99, seed=3)),
    GeneratorConfig("fm-seed1", "fm500", "ddpm",
                    "DDPM, same architecture and compute, another seed, 500 other images",
                    n_train=500, train=TrainConfig(epochs=1000, seed=1)),
    GeneratorConfig("fm-attn", "fm500", "ddpm",
                    "DDPM of another architecture (wider, self-attention at 8x8), 2,000 other images",
                    n_train=2000, train=TrainConfig(unet=_FM_WIDE, epochs=60, seed=2)),
    GeneratorConfig("fm-vae", "fm500", "vae", "VAE (diffusers AutoencoderKL, 4x4x4 latent), 2,000 other images",
                    n_train=2000, train=VAEConfig(epochs=60)),
    # the same kinds for the seconds-long tiny target (tests, nbval)
    GeneratorConfig("tiny-ddim", "tiny", "sampler", "the target itself, DDIM sampler (10 steps)",
                    sampler="ddim", steps=10),
    GeneratorConfig("tiny-finetune", "tiny", "finetune", "near-clone: the tiny target fine-tuned on other images",
                    n_train=100, train=TrainConfig(unet=_TINY_UNET, epochs=4, batch_size=50, lr=2e-4,
                                                   warmup_steps=1, ema_decay=0.9, seed=3)),
    GeneratorConfig("tiny-seed1", "tiny", "ddpm", "tiny DDPM, another seed, other images",
                    n_train=100, train=TrainConfig(unet=_TINY_UNET, epochs=40, batch_size=50, warmup_steps=20,
                                                   seed=1)),
    GeneratorConfig("tiny-vae", "tiny", "vae", "tiny VAE, other images",
                    n_train=200, train=VAEConfig(block_out_channels=(16, 32, 32), epochs=10)),
]}


def get_generator(name: str) -> GeneratorConfig:
    """The configuration of open-world generator ``name``."""
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose from {sorted(GENERATORS)}")
    return GENERATORS[name]


def open_world(target: str) -> list[str]:
    """Names of the generators in target ``target``'s open world."""
    return [g.name for g in GENERATORS.values() if g.of == target]


# ----------------------------------------------------------------------------- training images

def generator_manifest(gen: GeneratorConfig, seed: int) -> SplitManifest:
    """The generator's training images: ``n_train`` images of the target's dataset that are neither the
    target's members nor its held-out images, drawn from the run seed and the generator's name."""
    target = get_target(gen.of)
    tm = target_manifest(target, seed)
    pool = len(embedded_images(target.dataset, target.image_size))
    used = np.concatenate([tm.indices["member"], tm.indices["heldout"]])
    free = np.setdiff1d(np.arange(pool), used)
    if gen.n_train > len(free):
        raise ValueError(f"generator {gen.name!r} asks {gen.n_train} training images; {len(free)} are free")
    rng = np.random.default_rng(stream_seed(seed, f"generator:{gen.name}"))
    members = np.sort(rng.choice(free, gen.n_train, replace=False))
    return SplitManifest(seed, {"member": target.dataset}, {"member": members})


def _config_record(gen: GeneratorConfig, manifest: SplitManifest, init: str | None) -> dict:
    target = get_target(gen.of)
    rec = {"kind": gen.kind, "train": gen.train.to_dict(), "dataset": f"{target.dataset}@{target.image_size}",
           "members_sha256": hashlib.sha256(manifest.indices["member"].tobytes()).hexdigest()}
    if init is not None:
        rec["init"] = init
    return rec


def model_dir(name: str, seed: int = 0, *, retrain: bool = False, progress: bool = True) -> Path:
    """The directory of a trained generator: the shipped one if it matches, else the cache, else trained now."""
    gen = get_generator(name)
    if not gen.trained:
        raise ValueError(f"generator {name!r} is the target {gen.of!r} with another sampler: nothing to train")
    manifest = generator_manifest(gen, seed)
    init = resolve(gen.of, seed, progress=progress).fingerprint if gen.kind == "finetune" else None
    record = json.loads(json.dumps(_config_record(gen, manifest, init)))
    if not retrain and matches(embedded_model_dir(name), record):
        return embedded_model_dir(name)
    d = artifact_dir("generator", {**record, "code": code_version(ddpm, other)})
    with artifact_lock(d):
        if retrain:
            shutil.rmtree(d / "model", ignore_errors=True)
        if not (d / "model" / "provlib.json").exists():
            target = get_target(gen.of)
            images = embedded_images(target.dataset, target.image_size).subset(manifest.indices["member"]).images
            info = {"config": record, "description": gen.description,
                    "command": f"python -m provlib.train --generator {name} --retrain --embed"}
            if gen.kind == "vae":
                vae, history = train_vae(images, gen.train, progress=progress)
                write_model = lambda tmp: save_vae(vae, tmp, {**info, "loss_history": history})  # noqa: E731
            else:
                init_unet = resolve(gen.of, seed).load()[0] if gen.kind == "finetune" else None
                unet, scheduler, history = train_ddpm(images, gen.train, init=init_unet, progress=progress,
                                                      checkpoint=d / "train_state.safetensors")
                write_model = lambda tmp: save_model(unet, scheduler, tmp, {**info, "loss_history": history})  # noqa: E731

            def write(tmp: Path) -> None:
                write_model(tmp)
                manifest.save(tmp / "splits.json")

            replace_dir(d / "model", write)
    return d / "model"


def embed(name: str, seed: int = 0, *, retrain: bool = False, progress: bool = True) -> Path:
    """Train (or reuse) generator ``name`` and ship it, replacing the shipped copy only once complete."""
    return ship(model_dir(name, seed, retrain=retrain, progress=progress), embedded_model_dir(name))


def fingerprint(name: str, seed: int = 0) -> str:
    """Content hash of a generator's weights (for a sampler generator: the target's)."""
    gen = get_generator(name)
    if not gen.trained:
        return resolve(gen.of, seed).fingerprint
    d = model_dir(name, seed)
    model = load_vae(d) if gen.kind == "vae" else load_model(d)[0]
    return model_fingerprint(model)


# ----------------------------------------------------------------------------- samples

def samples(run, name: str, *, progress: bool = True) -> ImageSet:
    """``run.n_open_world`` samples of generator ``name`` (cached), float images in [-1, 1];
    ``run`` is a :class:`provlib.study.run.Run`."""
    gen = get_generator(name)
    n = run.n_open_world
    steps = gen.steps or run.sampler_steps
    key = {"generator": name, "model": fingerprint(name, run.seed), "code": code_version(sampling, trajectory, other),
           "sampler": gen.sampler, "steps": steps, "n": n, "seed": run.seed}
    seed = stream_seed(run.seed, f"generated:{name}")

    def draw():
        if gen.kind == "vae":
            return {"images": sample_vae(load_vae(model_dir(name, run.seed)), n, seed=seed)}
        d = model_dir(name, run.seed) if gen.trained else resolve(gen.of, run.seed).model_dir
        unet, scheduler = load_model(d)
        return {"images": sampling.sample(unet, scheduler, n, method=gen.sampler, num_inference_steps=steps,
                                          seed=seed, progress=progress)}

    size = get_target(gen.of).image_size
    images = cached("samples", key, draw, expect={"images": (n, 1, size, size)})["images"]
    return ImageSet(name, images, np.arange(n))
