"""A non-diffusion generator for the open world: a variational autoencoder (VAE).

Model attribution must reject images that no diffusion model made.  The VAE
is diffusers' :class:`~diffusers.AutoencoderKL` (the autoencoder of latent
diffusion) trained as a plain VAE on the images themselves: the evidence
lower bound with a Gaussian decoder of fixed standard deviation
``decoder_std`` (reconstruction ``||x - x_hat||^2 / (2 sigma^2)`` plus the KL
of the encoder's posterior to N(0, I), both summed per image).  Samples are
``decode(z)`` for ``z ~ N(0, I)`` at the latent shape, one seeded generator
per sample id (like :mod:`provlib.sampling`).  Saved with diffusers'
``save_pretrained`` (``config.json`` + safetensors) and ``provlib.json``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from diffusers import AutoencoderKL

from ..data import check_images
from ..io import atomic_write_text
from ..seeds import noise_seed
from ..progress import progress_bar


@dataclass(frozen=True)
class VAEConfig:
    """Architecture and training of a small VAE; every field enters the cache key."""

    sample_size: int = 16
    channels: int = 1
    block_out_channels: tuple[int, ...] = (32, 64, 64)   # 16x16 -> 4x4 latent
    latent_channels: int = 4
    norm_num_groups: int = 8
    decoder_std: float = 0.1     # sigma of the Gaussian decoder, images in [-1, 1]
    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        d = dict(d)
        d["block_out_channels"] = tuple(d["block_out_channels"])
        return cls(**d)


def build_vae(cfg: VAEConfig) -> AutoencoderKL:
    n = len(cfg.block_out_channels)
    return AutoencoderKL(in_channels=cfg.channels, out_channels=cfg.channels,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         block_out_channels=tuple(cfg.block_out_channels), layers_per_block=1,
                         latent_channels=cfg.latent_channels, norm_num_groups=cfg.norm_num_groups,
                         sample_size=cfg.sample_size, mid_block_add_attention=False)


def elbo_loss(vae: AutoencoderKL, x: torch.Tensor, decoder_std: float, generator: torch.Generator) -> torch.Tensor:
    """Negative ELBO per image (mean over the batch), in nats up to a constant."""
    post = vae.encode(x).latent_dist
    z = post.mean + post.std * torch.randn(post.mean.shape, generator=generator)
    recon = vae.decode(z).sample
    nll = ((recon - x) ** 2).flatten(1).sum(1) / (2 * decoder_std ** 2)
    kl = 0.5 * (post.mean ** 2 + post.var - post.logvar - 1).flatten(1).sum(1)
    return (nll + kl).mean()


def train_vae(images: torch.Tensor, cfg: VAEConfig, *, progress: bool = True) -> tuple[AutoencoderKL, list]:
    """Train a VAE on ``images`` in [-1, 1]; return it (eval mode) and the per-epoch loss history."""
    check_images(images, what="training images")
    if tuple(images.shape[1:]) != (cfg.channels, cfg.sample_size, cfg.sample_size):
        raise ValueError(f"training images have shape {tuple(images.shape[1:])}, the VAE expects "
                         f"{(cfg.channels, cfg.sample_size, cfg.sample_size)}")
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    for _ in progress_bar(range(cfg.epochs), desc="train VAE (epochs)", enabled=progress):
        perm, total = torch.randperm(len(images), generator=gen), 0.0
        for b in range(0, len(images), cfg.batch_size):
            x = images[perm[b:b + cfg.batch_size]]
            loss = elbo_loss(vae, x, cfg.decoder_std, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
        history.append(total / len(images))
    return vae.eval().requires_grad_(False), history


def latent_shape(vae: AutoencoderKL) -> tuple[int, int, int]:
    """(channels, height, width) of the VAE's latent."""
    cfg = vae.config
    side = cfg.sample_size // 2 ** (len(cfg.block_out_channels) - 1)
    return (cfg.latent_channels, side, side)


@torch.inference_mode()
def sample_vae(vae: AutoencoderKL, n: int, *, seed: int = 0, ids: Sequence[int] | None = None,
               batch_size: int = 250, device=None) -> torch.Tensor:
    """``n`` images in [-1, 1] (N, C, H, W): ``decode(z)``, ``z`` from one generator per sample id."""
    from ..sampling import sample_args

    n, ids, batch_size, device = sample_args(n, ids, batch_size, device)
    vae.to(device).eval()
    shape = latent_shape(vae)
    out = []
    for s in range(0, n, batch_size):
        z = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(noise_seed(seed, int(i), -1)))
                         for i in ids[s:s + batch_size]])
        out.append(vae.decode(z.to(device)).sample.clamp(-1, 1).cpu())
    return torch.cat(out)


def save_vae(vae: AutoencoderKL, directory: str | Path, info: dict | None = None) -> Path:
    """Save in diffusers format (``config.json`` + safetensors), plus ``provlib.json``."""
    directory = Path(directory)
    vae.save_pretrained(directory)
    if info is not None:
        atomic_write_text(directory / "provlib.json", json.dumps(info, indent=1, default=str))
    return directory


def load_vae(directory: str | Path, device=None) -> AutoencoderKL:
    """A VAE saved by :func:`save_vae` (safetensors: loading runs no code)."""
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise FileNotFoundError(f"no VAE at {directory} (config.json missing)")
    try:
        vae = AutoencoderKL.from_pretrained(directory)
    except Exception as err:
        raise ValueError(f"corrupt or incompatible VAE checkpoint in {directory}: {err}") from err
    vae.eval().requires_grad_(False)
    return vae.to(device) if device is not None else vae
