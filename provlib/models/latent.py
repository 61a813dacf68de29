"""Latent text-to-image models in the Stable Diffusion layout, built small enough for a CPU.

A pipeline directory holds ``model_index.json`` naming ``StableDiffusionPipeline``
and the folders ``vae/`` (an ``AutoencoderKL``), ``text_encoder/`` (a
``CLIPTextModel``), ``tokenizer/`` (a ``CLIPTokenizer``), ``unet/`` (a
``UNet2DConditionModel`` with cross-attention) and ``scheduler/`` (DDPM), so
that ``diffusers.StableDiffusionPipeline.from_pretrained(dir)`` loads it and
generates an image from a prompt.  :func:`build_pipeline` makes one:

- **tokenizer**: a byte-pair encoding trained by Hugging Face ``tokenizers`` on
  the captions it will read (:func:`train_tokenizer`), written in CLIP's format
  (``vocab.json`` + ``merges.txt``, a word ends in ``</w>``);
- **text encoder**: a small ``CLIPTextModel`` at a seeded initialisation, frozen
  (Stable Diffusion freezes its pretrained encoder too; ours is not pretrained:
  the captions are a handful of short phrases, and the UNet's cross-attention
  learns to read their fixed embeddings);
- **VAE**: a small ``AutoencoderKL`` (16×16 images, an 8×8 latent;
  :mod:`provlib.models.other`'s VAE), trained before the UNet;
- **UNet**: a ``UNet2DConditionModel`` whose cross-attention reads the text
  encoder's last hidden states;
- **scheduler**: DDPM with Stable Diffusion's schedule (scaled linear betas
  from 0.00085 to 0.012 over 1,000 steps).

Everything is seeded by :attr:`LatentConfig.seed`.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .other import VAEConfig, build_vae

# Fashion-MNIST's classes, as a caption names them ("a photo of a sneaker")
FASHION_MNIST_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                         "ankle boot")
DIGIT_CLASSES = tuple(f"digit {d}" for d in ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                              "nine"))
# the class names of each embedded dataset, as its captions name them
CLASS_NAMES = {"fashion_mnist": FASHION_MNIST_CLASSES, "mnist": DIGIT_CLASSES, "digits": DIGIT_CLASSES}
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def caption(label: int, classes: Sequence[str] = FASHION_MNIST_CLASSES) -> str:
    """The caption of an image of class ``label``: ``"a photo of a sneaker"`` (``an`` before a vowel)."""
    name = classes[int(label)]
    return f"a photo of {'an' if name[0] in 'aeiou' else 'a'} {name}"


def dataset_captions(dataset: str, labels) -> list[str]:
    """The caption of each image of an embedded ``dataset`` from its class ``labels``."""
    if dataset not in CLASS_NAMES:
        raise ValueError(f"no class names for dataset {dataset!r}; known: {sorted(CLASS_NAMES)}")
    return [caption(int(k), CLASS_NAMES[dataset]) for k in labels]


@dataclass(frozen=True)
class LatentConfig:
    """The shape of a small latent text-to-image model (see the module docstring)."""

    # the autoencoder (provlib.models.other's VAE): two blocks, so a 16x16 image has an 8x8 latent
    vae: VAEConfig = field(default_factory=lambda: VAEConfig(block_out_channels=(32, 64)))
    unet_channels: tuple = (32, 64)
    attention_head_dim: int = 8
    text_width: int = 32                 # the text encoder's hidden size = the UNet's cross_attention_dim
    text_layers: int = 2
    max_length: int = 16                 # tokens per caption, start and end included
    vocab_size: int = 256
    norm_num_groups: int = 8
    seed: int = 0

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @property
    def latent_size(self) -> int:
        return self.vae.sample_size // 2 ** (len(self.vae.block_out_channels) - 1)


def train_tokenizer(captions: Sequence[str], vocab_size: int, max_length: int):
    """A ``CLIPTokenizer`` whose byte-pair vocabulary ``tokenizers`` trained on ``captions``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    if not captions:
        raise ValueError("a tokenizer needs captions to learn its vocabulary from")
    bpe = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS[1], end_of_word_suffix="</w>"))
    bpe.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), end_of_word_suffix="</w>",
                                  show_progress=False)
    bpe.train_from_iterator(sorted(set(captions)), trainer)
    model = json.loads(bpe.to_str())["model"]
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab.write_text(json.dumps(model["vocab"]))
        lines = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
        merges.write_text("\n".join(["#version: 0.2", *lines]) + "\n")
        return CLIPTokenizer(str(vocab), str(merges), model_max_length=max_length)


def build_pipeline(config: LatentConfig, captions: Sequence[str]):
    """A ``StableDiffusionPipeline`` of ``config``'s shape at a seeded initialisation, its tokenizer trained on
    ``captions`` and its text encoder frozen."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = train_tokenizer(captions, config.vocab_size, config.max_length)
    torch.manual_seed(config.seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=config.text_width, intermediate_size=2 * config.text_width,
        num_hidden_layers=config.text_layers, num_attention_heads=max(1, config.text_width // 16),
        max_position_embeddings=config.max_length, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)).eval().requires_grad_(False)
    vae = build_vae(config.vae)
    n_unet = len(config.unet_channels)
    latent_channels = config.vae.latent_channels
    unet = UNet2DConditionModel(
        sample_size=config.latent_size, in_channels=latent_channels, out_channels=latent_channels,
        block_out_channels=tuple(config.unet_channels), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * (n_unet - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n_unet - 1),
        cross_attention_dim=config.text_width, attention_head_dim=config.attention_head_dim,
        norm_num_groups=config.norm_num_groups)
    # Stable Diffusion's noise schedule and scheduler settings
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class LatentTrainConfig:
    """How a latent text-to-image model is trained; every field enters its cache key."""

    model: LatentConfig = field(default_factory=LatentConfig)
    epochs: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    caption_dropout: float = 0.1   # share of training images seen with the empty prompt (Stable Diffusion's 10%)
    seed: int = 0

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


@torch.no_grad()
def fit_scaling_factor(vae, images: torch.Tensor, batch_size: int = 256) -> float:
    """1 / the standard deviation of the VAE's posterior means over ``images``: how Stable Diffusion's
    0.18215 was set, so that the scaled latents have unit variance like the diffusion's noise."""
    means = torch.cat([vae.encode(b).latent_dist.mean for b in images.split(batch_size)])
    return float(1.0 / means.std())


def train_latent(images: torch.Tensor, prompts: Sequence[str], vae_images: torch.Tensor, cfg: LatentTrainConfig,
                 *, vocabulary: Sequence[str] = (), progress: bool = True) -> tuple:
    """Train a latent text-to-image model: its VAE on ``vae_images``, then its UNet on ``images`` (in [-1, 1])
    conditioned on their ``prompts`` (one each; a share ``caption_dropout`` of each batch on the empty
    prompt).  The tokenizer learns its vocabulary from the prompts and ``vocabulary`` (other captions the model
    will read).  Returns the pipeline (EMA UNet, on the CPU) and ``{"vae": [...], "unet": [...]}`` loss
    histories."""
    from .other import train_vae

    if len(prompts) != len(images):
        raise ValueError(f"one prompt per training image: {len(images)} images, {len(prompts)} prompts")
    pipe = build_pipeline(cfg.model, sorted(set(prompts) | set(vocabulary)))
    vae, vae_history = train_vae(vae_images, cfg.model.vae, progress=progress)
    vae.register_to_config(scaling_factor=fit_scaling_factor(vae, vae_images))
    pipe.register_modules(vae=vae)
    with torch.no_grad():
        z0 = torch.cat([vae.encode(b).latent_dist.mean for b in images.split(256)]) * vae.config.scaling_factor
        table = sorted(set(prompts)) + [""]
        embeds, _ = pipe.encode_prompt(table, "cpu", 1, False)
    index = torch.tensor([table.index(p) for p in prompts])
    unet_history = train_unet(pipe.unet, pipe.scheduler, z0, embeds, index, cfg, progress)
    return pipe, {"vae": vae_history, "unet": unet_history}


def train_unet(unet, scheduler, z0, embeds, index, cfg: LatentTrainConfig, progress: bool) -> list:
    """The denoising objective on latents ``z0``, image i conditioned on ``embeds[index[i]]`` (the last row of
    ``embeds`` is the empty prompt); EMA weights copied into ``unet`` at the end."""
    from diffusers.training_utils import EMAModel

    from ..progress import progress_bar

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr)
    acp = scheduler.alphas_cumprod
    n, step, history = len(z0), 0, []
    unet.train()
    for _ in progress_bar(range(cfg.epochs), desc="train latent UNet (epochs)", enabled=progress):
        perm, total = torch.randperm(n, generator=gen), 0.0
        for b in range(0, n, cfg.batch_size):
            idx = perm[b:b + cfg.batch_size]
            x0 = z0[idx]
            which = torch.where(torch.rand(len(idx), generator=gen) < cfg.caption_dropout, len(embeds) - 1, index[idx])
            t = torch.randint(0, len(acp), (len(idx),), generator=gen)
            eps = torch.randn(x0.shape, generator=gen)
            a = acp[t].view(-1, 1, 1, 1)
            pred = unet(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, encoder_hidden_states=embeds[which]).sample
            loss = torch.nn.functional.mse_loss(pred, eps)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
            opt.step()
            ema.step(unet.parameters())
            step += 1
            total += loss.item() * len(idx)
        history.append(total / n)
    ema.copy_to(unet.parameters())
    unet.eval().requires_grad_(False)
    return history


def save_pipeline(pipe, directory: str | Path, info: dict | None = None) -> Path:
    """Write a latent pipeline in the Stable Diffusion layout with half-precision weights (what is shipped is
    what every study reads: :func:`provlib.models.interface.open_model` computes in float32 from them), plus
    ``provlib.json`` (how it was made)."""
    from ..io import atomic_write_text

    directory = Path(directory)
    pipe.to(torch.float16).save_pretrained(directory, safe_serialization=True)
    pipe.to(torch.float32)
    if info is not None:
        atomic_write_text(directory / "provlib.json", json.dumps(info, indent=1, default=str))
    return directory


__all__ = ["CLASS_NAMES", "FASHION_MNIST_CLASSES", "LatentConfig", "LatentTrainConfig", "build_pipeline", "caption",
           "dataset_captions", "fit_scaling_factor", "save_pipeline", "train_latent", "train_tokenizer",
           "train_unet"]
