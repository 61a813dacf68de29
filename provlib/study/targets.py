"""The study's target models: named configurations, their splits, and where each one's model comes from.

A target is a DDPM of the study: the dataset and member count it is trained
on, its architecture and training budget, and the images that evaluate it
(its members, same-distribution held-out images, external images).  Profiles
list targets by name; :func:`resolve` turns a name and a seed into a
:class:`TargetModel` (split manifest, model directory, weights fingerprint):
the shipped model when it was trained with exactly this configuration, else
the cache's, else one trained now.  A run's :class:`provlib.study.run.Target`
reads it.

The ``fm*`` targets span strong to weak memorisation at the same training
compute (member count x epochs = 0.5M image-steps): 500 members for 1,000
epochs, 1,000 for 500, 2,000 for 250.  (8,000 members for 60 epochs was
planned as the weak end; at 2,000 members every attack is already at chance
level, see the memorisation notebook, so the 1,000-member target took its
place in the range where methods differ.)  They are shipped in
``provlib/embedded/models/<name>/`` (diffusers format, with their
configuration, split manifest and loss history) and retrained by
``python -m provlib.train --target <name> --retrain --embed``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .. import paths
from ..data import ImageSet, SplitManifest, load_embedded, make_manifest
from ..io import artifact_dir, artifact_lock, code_version, replace_dir
from ..models import TrainConfig, UNetConfig, ddpm, latent, save_model, train_ddpm
from ..models.interface import DiffusionModel, open_model
from ..models.latent import LatentConfig, LatentTrainConfig
from ..models.other import VAEConfig
from ..runtime import default_device
from ..seeds import stream_seed


@dataclass(frozen=True)
class TargetConfig:
    """What a target model is trained on and how, and which images the study evaluates it with."""

    name: str
    n_member: int                      # training images (drawn from ``dataset``)
    n_heldout: int                     # same-distribution images it never saw
    n_external: int                    # images of another dataset
    train: TrainConfig | LatentTrainConfig = field(default_factory=TrainConfig)
    n_member_eval: int | None = None   # members the study evaluates (a seeded subset); None: all of them
    n_shifted: int = 500               # held-out images the subtle-shift setting re-acquires (provlib.acquisition.reacquire)
    dataset: str = "fashion_mnist"
    external: str = "mnist"
    image_size: int = 16
    # latent text-to-image targets only:
    n_autoencoder: int = 0             # images of ``dataset`` (in no other split) its VAE is trained on
    prompt: str = "none"               # what each image is conditioned on: "caption" (its class caption) or "empty"
    model: str = ""                    # the model's name when targets share one (one model, two conditionings)

    def __post_init__(self):
        latent_ = isinstance(self.train, LatentTrainConfig)
        if latent_ != (self.prompt in PROMPTS) or (latent_ and self.n_autoencoder < 1):
            raise ValueError(f"target {self.name!r}: a latent target needs prompt in {PROMPTS} and n_autoencoder "
                             "> 0; a pixel target neither")

    @property
    def kind(self) -> str:
        """``"pixel"`` (a DDPM on images) or ``"latent"`` (a text-to-image pipeline)."""
        return "latent" if isinstance(self.train, LatentTrainConfig) else "pixel"

    @property
    def model_name(self) -> str:
        """The name of the model this target evaluates (its shipped folder)."""
        return self.model or self.name

    @property
    def space_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of x0, the variable the diffusion runs on: the grey image, or a latent model's latent."""
        if self.kind == "pixel":
            return 1, self.image_size, self.image_size
        m = self.train.model
        return m.vae.latent_channels, m.latent_size, m.latent_size

    @property
    def members_evaluated(self) -> int:
        return self.n_member if self.n_member_eval is None else min(self.n_member_eval, self.n_member)


PROMPTS = ("caption", "empty")   # a latent target's conditioning: each image's class caption, or the empty prompt
# the latent targets' shape: provlib.models.latent's defaults (an 8x8x4 latent of 16x16 images)
_LATENT_TINY = LatentTrainConfig(
    model=LatentConfig(vae=VAEConfig(block_out_channels=(16, 32), epochs=20), unet_channels=(16, 32), text_width=16),
    epochs=40, batch_size=50, warmup_steps=20)
_LATENT = LatentTrainConfig(model=LatentConfig(vae=VAEConfig(block_out_channels=(32, 64), epochs=40)), epochs=1000)


TARGETS: dict[str, TargetConfig] = {
    "tiny": TargetConfig("tiny", n_member=100, n_heldout=300, n_external=100, n_shifted=100,
                         train=TrainConfig(unet=UNetConfig(block_out_channels=(16, 32)), epochs=40, batch_size=50,
                                           warmup_steps=20)),
    # the tiny profile's SeDID datasets: tiny's recipe on MNIST and on the 8x8 digits
    "tiny-mn": TargetConfig("tiny-mn", n_member=100, n_heldout=300, n_external=100, n_shifted=100, dataset="mnist",
                            external="fashion_mnist",
                            train=TrainConfig(unet=UNetConfig(block_out_channels=(16, 32)), epochs=40, batch_size=50,
                                              warmup_steps=20)),
    "tiny-dg": TargetConfig("tiny-dg", n_member=100, n_heldout=300, n_external=100, n_shifted=100, dataset="digits",
                            external="mnist",
                            train=TrainConfig(unet=UNetConfig(block_out_channels=(16, 32)), epochs=40, batch_size=50,
                                              warmup_steps=20)),
    "fm500": TargetConfig("fm500", n_member=500, n_heldout=2000, n_external=500, train=TrainConfig(epochs=1000)),
    "fm1000": TargetConfig("fm1000", n_member=1000, n_heldout=1000, n_external=500, n_member_eval=500,
                           train=TrainConfig(epochs=500)),
    "fm2000": TargetConfig("fm2000", n_member=2000, n_heldout=1000, n_external=500, n_member_eval=500,
                           train=TrainConfig(epochs=250)),
    # SeDID's other two datasets: fm500's recipe on MNIST and on scikit-learn's 8x8 digits (upsampled to 16x16)
    "mn500": TargetConfig("mn500", n_member=500, n_heldout=1000, n_external=500, dataset="mnist",
                          external="fashion_mnist", train=TrainConfig(epochs=1000)),
    "dg500": TargetConfig("dg500", n_member=500, n_heldout=1000, n_external=500, dataset="digits",
                          external="mnist", train=TrainConfig(epochs=1000)),
    # the latent text-to-image targets (Stable Diffusion's layout): Fashion-MNIST members captioned by class.  The
    # attacker knows each image's caption (sd1000), or conditions on the empty prompt (sd1000-empty, the same model).
    # sd1000 (1,000 members, 200 epochs, 500 of them evaluated) puts the loss attack's held-out AUC in the paper's
    # range (docs/latent_models.md: the two other sizes tried, not shipped).
    "sd1000": TargetConfig("sd1000", n_member=1000, n_heldout=1000, n_external=500, n_autoencoder=2000,
                           n_member_eval=500, prompt="caption", train=dataclasses.replace(_LATENT, epochs=200)),
    "sd1000-empty": TargetConfig("sd1000-empty", n_member=1000, n_heldout=1000, n_external=500, n_autoencoder=2000,
                                 n_member_eval=500, prompt="empty", train=dataclasses.replace(_LATENT, epochs=200),
                                 model="sd1000"),
    "tiny-sd": TargetConfig("tiny-sd", n_member=100, n_heldout=300, n_external=100, n_shifted=100, n_autoencoder=300,
                            prompt="caption", train=_LATENT_TINY),
    "tiny-sd-empty": TargetConfig("tiny-sd-empty", n_member=100, n_heldout=300, n_external=100, n_shifted=100, n_autoencoder=300,
                                  prompt="empty", train=_LATENT_TINY, model="tiny-sd"),
}


def get_target(name: str) -> TargetConfig:
    """The configuration of target ``name``."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; choose from {sorted(TARGETS)}")
    return TARGETS[name]


# ----------------------------------------------------------------------------- splits

@lru_cache(maxsize=8)
def embedded_images(name: str, size: int) -> ImageSet:
    """An embedded dataset (:func:`provlib.data.load_embedded`), loaded once per process: every caller takes
    subsets of this one object and never changes it."""
    return load_embedded(name, size)


def pool_sizes(config: TargetConfig) -> dict[str, int]:
    """Number of images of each embedded dataset a target draws from."""
    return {name: len(embedded_images(name, config.image_size)) for name in (config.dataset, config.external)}


def target_manifest(config: TargetConfig, seed: int) -> SplitManifest:
    """Member / held-out (``config.dataset``) and external (``config.external``) splits drawn from ``seed``."""
    sizes = {"member": (config.dataset, config.n_member), "heldout": (config.dataset, config.n_heldout),
             "external": (config.external, config.n_external)}
    if config.n_autoencoder:   # drawn after the others: the pixel targets' splits stay as they were
        sizes["autoencoder"] = (config.dataset, config.n_autoencoder)
    return make_manifest(sizes, seed, pool_sizes(config))


TRAINING_ONLY = ("autoencoder",)   # splits a model is trained on that the study does not evaluate


def evaluated_sets(config: TargetConfig, seed: int, manifest: SplitManifest | None = None) -> dict[str, ImageSet]:
    """The real image sets the study evaluates a target with: ``member`` (the evaluated members, a seeded
    subset when the target says so), ``heldout`` and ``external``."""
    m = manifest or target_manifest(config, seed)
    sets = {split: embedded_images(m.datasets[split], config.image_size).subset(idx, name=split)
            for split, idx in m.indices.items() if split not in TRAINING_ONLY}
    if config.members_evaluated < config.n_member:
        rng = np.random.default_rng(stream_seed(seed, f"members evaluated:{config.model_name}"))  # one model, one member subset
        keep = np.sort(rng.choice(config.n_member, config.members_evaluated, replace=False))
        sets["member"] = sets["member"].subset(keep, name="member")
    return sets


# ----------------------------------------------------------------------------- the model: shipped, cached or trained

def model_config(config: TargetConfig, manifest: SplitManifest) -> dict:
    """Everything a target model depends on (recorded beside a shipped model, and its cache key)."""
    record = {"train": config.train.to_dict(), "dataset": f"{config.dataset}@{config.image_size}",
              "members_sha256": hashlib.sha256(manifest.indices["member"].tobytes()).hexdigest()}
    if config.kind == "latent":
        record |= {"kind": "latent", "vocabulary": [config.dataset, config.external],
                   "autoencoder_sha256": hashlib.sha256(manifest.indices["autoencoder"].tobytes()).hexdigest()}
    return record


def embedded_model_dir(name: str) -> Path:
    """Where model ``name`` (a target, a generator, a model of the attribution study) is shipped."""
    return paths.EMBEDDED_MODELS_DIR / name


def recorded_config(model_dir: Path) -> dict | None:
    """The configuration a model directory records it was trained with (``provlib.json``), or None."""
    f = Path(model_dir) / "provlib.json"
    return json.loads(f.read_text())["config"] if f.exists() else None


def matches(model_dir: Path, record: dict) -> bool:
    """Whether the model in ``model_dir`` was trained with exactly the configuration ``record``."""
    return recorded_config(model_dir) == json.loads(json.dumps(record))


def shipped_matches(name: str, seed: int = 0) -> bool:
    """Whether the model shipped for target ``name`` was trained with exactly its configuration."""
    config = get_target(name)
    return matches(embedded_model_dir(config.model_name), model_config(config, target_manifest(config, seed)))


def ship(src: Path, dst: Path) -> Path:
    """Copy the model directory ``src`` over the shipped ``dst``, replacing it only once the copy is complete."""
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        return dst
    return replace_dir(dst, lambda new: shutil.copytree(src, new))


def trained_model_dir(config: TargetConfig, manifest: SplitManifest, *, retrain: bool = False,
                      progress: bool = True) -> Path:
    """The cache directory of the target model trained by this code, training it first if needed.

    Keyed by the model configuration and the training code's version.  The
    directory appears complete or not at all (built beside, then renamed).
    """
    cfg = model_config(config, manifest)
    code = code_version(ddpm) if config.kind == "pixel" else code_version(latent)
    d = artifact_dir("model", {**cfg, "code": code})
    ckpt = d / "train_state.safetensors"
    with artifact_lock(d):
        if retrain:
            shutil.rmtree(d / "model", ignore_errors=True)
            ckpt.unlink(missing_ok=True)
        if not (d / "model" / "model_index.json").exists():
            info = {"config": cfg, "command": f"python -m provlib.train --target {config.model_name} --retrain --embed",
                    "trained_on": default_device().type}
            write = (_train_pixel if config.kind == "pixel" else _train_latent)(config, manifest, info, ckpt, progress)

            def write_all(tmp: Path) -> None:
                write(tmp)
                manifest.save(tmp / "splits.json")

            replace_dir(d / "model", write_all)
    return d / "model"


def _train_pixel(config: TargetConfig, manifest: SplitManifest, info: dict, ckpt: Path, progress: bool):
    members = embedded_images(config.dataset, config.image_size).subset(manifest.indices["member"])
    unet, scheduler, history = train_ddpm(members.images, config.train, checkpoint=ckpt, progress=progress)
    return lambda tmp: save_model(unet, scheduler, tmp, {**info, "loss_history": history})


def _train_latent(config: TargetConfig, manifest: SplitManifest, info: dict, ckpt: Path, progress: bool):
    """The VAE on the autoencoder split, then the UNet on the members, each captioned by its class."""
    pool = embedded_images(config.dataset, config.image_size)
    members = pool.subset(manifest.indices["member"])
    vocabulary = [latent.caption(k, latent.CLASS_NAMES[ds]) for ds in (config.dataset, config.external)
                  for k in range(len(latent.CLASS_NAMES[ds]))]
    pipe, history = latent.train_latent(members.images, latent.dataset_captions(config.dataset, members.labels),
                                        pool.subset(manifest.indices["autoencoder"]).images, config.train,
                                        vocabulary=vocabulary, progress=progress)
    return lambda tmp: latent.save_pipeline(pipe, tmp, {**info, "loss_history": history})


@dataclass(frozen=True)
class TargetModel:
    """A target's model, resolved for one seed: its split manifest, directory and weights fingerprint."""

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
        model = self.open(device)
        return model.unet, model.scheduler

    @property
    def info(self) -> dict:
        """How the model was made (its ``provlib.json``: configuration, loss history, the command that retrains it)."""
        return json.loads((self.model_dir / "provlib.json").read_text())

    def open(self, device=None) -> DiffusionModel:
        """The target model behind the one model interface (:func:`provlib.models.interface.open_model`)."""
        return open_model(self.model_dir, device=device)


def resolve(name: str, seed: int, *, progress: bool = True) -> TargetModel:
    """Target ``name``'s model for the run seed ``seed``: the shipped model if it matches, else the cache,
    else trained.  Resolved once per process (and per shipped-model and cache folder)."""
    return _resolve(name, int(seed), progress, str(paths.EMBEDDED_MODELS_DIR), str(paths.cache_dir()))


@lru_cache(maxsize=16)
def _resolve(name: str, seed: int, progress: bool, shipped_root: str, cache_root: str) -> TargetModel:
    config = get_target(name)
    manifest = target_manifest(config, seed)
    model_dir = embedded_model_dir(config.model_name)
    if not matches(model_dir, model_config(config, manifest)):
        model_dir = trained_model_dir(config, manifest, progress=progress)
    return TargetModel(config, seed, manifest, model_dir, open_model(model_dir).fingerprint)


def forget_resolved() -> None:
    """Resolve every target again (after its shipped or cached model changed), as a new process would."""
    _resolve.cache_clear()


def retrain(name: str, seed: int = 0, *, progress: bool = True) -> Path:
    """Train target ``name`` from scratch into the cache (the shipped model is left alone)."""
    config = get_target(name)
    forget_resolved()
    return trained_model_dir(config, target_manifest(config, seed), retrain=True, progress=progress)


def embed_model(src: Path, name: str) -> Path:
    """Copy a trained model directory over target ``name``'s shipped one, only once the copy is complete."""
    src, dst = Path(src), embedded_model_dir(name)
    if not (src / "model_index.json").exists():
        raise FileNotFoundError(f"no trained model to embed at {src}; the shipped model {dst} is left as it is")
    if src.resolve() != dst.resolve():
        open_model(src)  # refuse to ship what does not load
    out = ship(src, dst)
    forget_resolved()
    return out
