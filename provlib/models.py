"""Unconditional DDPMs: build, train (with EMA), save and load in diffusers format.

A model this project trains is stored exactly like a hub checkpoint
(``DDPMPipeline.save_pretrained``: ``model_index.json``, ``unet/`` and
``scheduler/`` with ``config.json`` + safetensors), so :func:`load_model`
serves a local directory and a hub id such as ``google/ddpm-cifar10-32``
alike.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel
from tqdm import tqdm

from .data import check_images
from .io import atomic_torch_save, atomic_write_text, torch_load


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a small UNet2DModel (diffusers)."""

    sample_size: int = 16
    channels: int = 1
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8


@dataclass(frozen=True)
class TrainConfig:
    """How a DDPM is trained; every field enters the cache key."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    epochs: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        u = dict(d.pop("unet"))
        u["block_out_channels"] = tuple(u["block_out_channels"])
        return cls(unet=UNetConfig(**u), **d)


def build_unet(cfg: UNetConfig) -> UNet2DModel:
    n = len(cfg.block_out_channels)
    return UNet2DModel(
        sample_size=cfg.sample_size, in_channels=cfg.channels, out_channels=cfg.channels,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
        norm_num_groups=cfg.norm_num_groups)


def make_scheduler(cfg: TrainConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                         beta_end=cfg.beta_end, beta_schedule="linear", clip_sample=True)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def train_ddpm(images: torch.Tensor, cfg: TrainConfig, *, checkpoint: Path | None = None,
               checkpoint_every: int = 50, progress: bool = True) -> tuple[UNet2DModel, DDPMScheduler, list]:
    """Train a DDPM on ``images`` (in [-1, 1]); return its EMA UNet, scheduler and loss history.

    With ``checkpoint``, the training state is saved atomically every
    ``checkpoint_every`` epochs and a re-run resumes from it: the result is the
    same as an uninterrupted run (the RNG state is part of the checkpoint).
    """
    check_images(images, what="training images")
    scheduler = make_scheduler(cfg)
    if tuple(images.shape[1:]) != (cfg.unet.channels, cfg.unet.sample_size, cfg.unet.sample_size):
        raise ValueError(f"training images have shape {tuple(images.shape[1:])}, the UNet expects "
                         f"{(cfg.unet.channels, cfg.unet.sample_size, cfg.unet.sample_size)}")
    torch.manual_seed(cfg.seed)
    unet = build_unet(cfg.unet)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = {"epoch": 0, "step": 0, "history": []}
    if checkpoint is not None and Path(checkpoint).exists():
        ck = torch_load(checkpoint)
        unet.load_state_dict(ck["unet"]); ema.load_state_dict(ck["ema"]); opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"]); state = ck["state"]
    acp = scheduler.alphas_cumprod
    n, bs = len(images), cfg.batch_size
    bar = tqdm(range(state["epoch"], cfg.epochs), desc="train DDPM", disable=not progress,
               initial=state["epoch"], total=cfg.epochs)
    unet.train()
    for epoch in bar:
        perm, total = torch.randperm(n, generator=gen), 0.0
        for b in range(0, n, bs):
            x0 = images[perm[b:b + bs]]
            t = torch.randint(0, cfg.num_train_timesteps, (len(x0),), generator=gen)
            eps = torch.randn(x0.shape, generator=gen)
            a = acp[t].view(-1, 1, 1, 1)
            loss = torch.nn.functional.mse_loss(unet(a.sqrt() * x0 + (1 - a).sqrt() * eps, t).sample, eps)
            for g in opt.param_groups:
                g["lr"] = _lr_at(state["step"], cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
            opt.step(); ema.step(unet.parameters())
            state["step"] += 1
            total += loss.item() * len(x0)
        state["history"].append(total / n)
        state["epoch"] = epoch + 1
        bar.set_postfix(loss=f"{state['history'][-1]:.4f}")
        if checkpoint is not None and (state["epoch"] % checkpoint_every == 0 or state["epoch"] == cfg.epochs):
            atomic_torch_save({"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                               "gen": gen.get_state(), "state": state}, Path(checkpoint))
    ema.copy_to(unet.parameters())
    unet.eval()
    return unet, scheduler, state["history"]


def save_model(unet: UNet2DModel, scheduler: DDPMScheduler, directory: str | Path, info: dict | None = None) -> Path:
    """Save in the diffusers pipeline layout, plus ``provlib.json`` (how it was made)."""
    directory = Path(directory)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(directory)
    if info is not None:
        atomic_write_text(directory / "provlib.json", json.dumps(info, indent=1, default=str))
    return directory


def load_model(source: str | Path, *, device: str | torch.device | None = None,
               **hub_kwargs) -> tuple[UNet2DModel, DDPMScheduler]:
    """Load ``(unet, scheduler)`` from a local directory or a hub id.

    ``hub_kwargs`` (``revision``, ``cache_dir``, ``local_files_only``, ...) go
    to diffusers' ``from_pretrained`` for hub ids.
    A directory may hold a pipeline (``unet/`` + ``scheduler/``, as written by
    :func:`save_model` or found on the hub) or a bare UNet (``config.json`` and
    weights), which then gets the standard linear DDPM scheduler.
    """
    source = str(source)
    local = Path(source)
    looks_local = local.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1
    if looks_local:
        if not local.is_dir():
            raise FileNotFoundError(f"model directory not found: {local}")
        if (local / "unet").is_dir():
            unet_dir, sched_dir = local / "unet", local / "scheduler"
        elif (local / "config.json").exists():
            unet_dir, sched_dir = local, None
        else:
            raise FileNotFoundError(f"{local} holds no diffusers UNet (no unet/ folder and no config.json)")
        unet = _load_unet(unet_dir)
        if sched_dir is not None and (sched_dir / "scheduler_config.json").exists():
            scheduler = DDPMScheduler.from_pretrained(sched_dir)
        else:
            scheduler = make_scheduler(TrainConfig())
    else:  # a hub id: diffusers resolves and caches it (needs a network the first time)
        unet = UNet2DModel.from_pretrained(source, subfolder="unet", **hub_kwargs)
        scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **hub_kwargs)
    unet.eval().requires_grad_(False)
    if device is not None:
        unet.to(device)
    return unet, scheduler


def _load_unet(directory: Path) -> UNet2DModel:
    weights = [p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin")]
    if not weights:
        raise FileNotFoundError(f"no weights (.safetensors or .bin) in {directory}")
    try:
        return UNet2DModel.from_pretrained(directory)
    except Exception as err:
        raise ValueError(f"corrupt or incompatible checkpoint in {directory}: {err}") from err
