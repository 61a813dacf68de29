"""Unconditional and class-conditional DDPMs: build, train (with EMA), save and load in diffusers format.

A model this project trains is stored exactly like a hub checkpoint
(``DDPMPipeline.save_pretrained``: ``model_index.json``, ``unet/`` and
``scheduler/`` with ``config.json`` + safetensors), so :func:`load_model`
serves a local directory and a hub id such as ``google/ddpm-cifar10-32``
alike.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel

from ..data import check_images
from ..io import atomic_write_text, load_state, save_state, tensor_sha256
from ..kernels.condition import unet_kwargs
from ..runtime import default_device
from ..progress import progress_bar


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a small UNet2DModel (diffusers)."""

    sample_size: int = 16
    channels: int = 1
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention: bool = False   # self-attention blocks at the lowest resolution
    num_class_embeds: int = 0  # > 0: class-conditional (a class embedding added to the time embedding)


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
        d = asdict(self)
        for key in ("attention", "num_class_embeds"):  # recorded only when set: shipped configs predate them
            if not getattr(self.unet, key):
                del d["unet"][key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        u = dict(d.pop("unet"))
        u["block_out_channels"] = tuple(u["block_out_channels"])
        return cls(unet=UNetConfig(**u), **d)


def build_unet(cfg: UNetConfig) -> UNet2DModel:
    n = len(cfg.block_out_channels)
    down, up = ["DownBlock2D"] * n, ["UpBlock2D"] * n
    if cfg.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=cfg.sample_size, in_channels=cfg.channels, out_channels=cfg.channels,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=cfg.norm_num_groups,
        num_class_embeds=cfg.num_class_embeds or None)


def make_scheduler(cfg: TrainConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                         beta_end=cfg.beta_end, beta_schedule="linear", clip_sample=True)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def train_ddpm(images: torch.Tensor, cfg: TrainConfig, *, labels: torch.Tensor | None = None,
               checkpoint: Path | None = None, checkpoint_every: int = 50, init: UNet2DModel | None = None,
               progress: bool = True, device=None) -> tuple[UNet2DModel, DDPMScheduler, list]:
    """Train a DDPM on ``images`` (in [-1, 1]); return its EMA UNet, scheduler and loss history.

    ``init`` starts from that model's weights (a fine-tune; its architecture
    must be ``cfg.unet``) instead of a fresh initialisation.  A class-conditional
    UNet (``cfg.unet.num_class_embeds > 0``) needs the images' class ``labels``.

    With ``checkpoint`` (a ``.safetensors`` path), the training state is saved
    atomically every ``checkpoint_every`` epochs and a re-run resumes from it:
    the result is the same as an uninterrupted run (the RNG state is part of
    the checkpoint, which is stored pickle-free, see :func:`provlib.io.save_state`).

    Runs on ``device`` (default: CUDA when present, else the CPU).  The batch
    order, timesteps and noise are drawn on the CPU whatever the device, so a
    GPU run sees the same random stream as a CPU run (its weights still differ
    in the last bits).  The returned model is on the CPU.
    """
    check_images(images, what="training images")
    labels = check_labels(labels, len(images), cfg.unet.num_class_embeds)
    scheduler = make_scheduler(cfg)
    if tuple(images.shape[1:]) != (cfg.unet.channels, cfg.unet.sample_size, cfg.unet.sample_size):
        raise ValueError(f"training images have shape {tuple(images.shape[1:])}, the UNet expects "
                         f"{(cfg.unet.channels, cfg.unet.sample_size, cfg.unet.sample_size)}")
    torch.manual_seed(cfg.seed)
    device = torch.device(device) if device is not None else default_device()
    unet = build_unet(cfg.unet)
    if init is not None:
        unet.load_state_dict(init.state_dict())
    unet.to(device)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = {"epoch": 0, "step": 0, "history": []}
    if checkpoint is not None and Path(checkpoint).exists():
        ck = load_state(checkpoint)
        unet.load_state_dict(ck["unet"]); ema.load_state_dict(ck["ema"]); opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"]); state = ck["state"]
    acp = scheduler.alphas_cumprod.to(device)
    images = images.to(device)
    labels = labels.to(device) if labels is not None else None
    n, bs = len(images), cfg.batch_size
    bar = progress_bar(range(state["epoch"], cfg.epochs), desc="train DDPM (epochs)", enabled=progress,
                       initial=state["epoch"], total=cfg.epochs)
    unet.train()
    for epoch in bar:
        perm, total = torch.randperm(n, generator=gen), 0.0
        for b in range(0, n, bs):
            idx = perm[b:b + bs].to(device)
            loss = denoising_loss(unet, images[idx], None if labels is None else labels[idx], acp, gen,
                                  cfg.num_train_timesteps)
            for g in opt.param_groups:
                g["lr"] = _lr_at(state["step"], cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
            opt.step(); ema.step(unet.parameters())
            state["step"] += 1
            total += loss.item() * len(idx)
        state["history"].append(total / n)
        state["epoch"] = epoch + 1
        bar.set_postfix(loss=f"{state['history'][-1]:.4f}")
        if checkpoint is not None and (state["epoch"] % checkpoint_every == 0 or state["epoch"] == cfg.epochs):
            save_state(Path(checkpoint), {"unet": unet.state_dict(), "ema": ema.state_dict(),
                                          "opt": opt.state_dict(), "gen": gen.get_state(), "state": state})
    ema.copy_to(unet.parameters())
    unet.cpu().eval()
    return unet, scheduler, state["history"]


def denoising_loss(unet, x0: torch.Tensor, labels: torch.Tensor | None, acp: torch.Tensor, gen: torch.Generator,
                   num_train_timesteps: int) -> torch.Tensor:
    """The DDPM training loss of one batch: timesteps and noise drawn from ``gen`` on the CPU.  ``labels`` is the
    batch's condition: class labels, a text-to-image UNet's text embeddings, or None."""
    t = torch.randint(0, num_train_timesteps, (len(x0),), generator=gen).to(x0.device)
    eps = torch.randn(x0.shape, generator=gen).to(x0.device)
    a = acp[t].view(-1, 1, 1, 1)
    return torch.nn.functional.mse_loss(unet(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, **unet_kwargs(labels)).sample,
                                        eps)


def check_labels(labels, n: int, num_classes: int) -> torch.Tensor | None:
    """``labels`` as a (n,) long tensor in ``0..num_classes-1`` for a class-conditional model, else ``None``
    (and an error if labels were given to an unconditional one, or are missing for a conditional one)."""
    if not num_classes:
        if labels is not None:
            raise ValueError("class labels given to an unconditional model (num_class_embeds = 0)")
        return None
    if labels is None:
        raise ValueError(f"a class-conditional model ({num_classes} classes) needs class labels")
    labels = torch.as_tensor(labels).long()
    if labels.shape != (n,):
        raise ValueError(f"need one class label per image: {n} images, labels of shape {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"class labels must lie in 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
    return labels



def save_model(unet: UNet2DModel, scheduler: DDPMScheduler, directory: str | Path, info: dict | None = None) -> Path:
    """Save in the diffusers pipeline layout, plus ``provlib.json`` (how it was made)."""
    directory = Path(directory)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(directory)
    if info is not None:
        atomic_write_text(directory / "provlib.json", json.dumps(info, indent=1, default=str))
    return directory


def model_fingerprint(unet: torch.nn.Module) -> str:
    """Content hash of a model: its configuration and every weight's name, dtype, shape and bytes.

    Equal fingerprints mean the same function; every artifact computed from a
    model is cached under its fingerprint, so a retrained model never reuses
    another's features.
    """
    h = hashlib.sha256()
    config = getattr(unet, "config", {})
    config = config if isinstance(config, dict) else config.to_dict()   # a transformers model's config
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, t in sorted(unet.state_dict().items()):
        h.update(name.encode())
        h.update(tensor_sha256(t).encode())
    return h.hexdigest()[:16]


class ModelSourceError(FileNotFoundError):
    """A model source that is neither a usable local directory nor a reachable hub checkpoint."""


def load_model(source: str | Path, *, scheduler: DDPMScheduler | None = None,
               device: str | torch.device | None = None, **hub_kwargs) -> tuple[UNet2DModel, DDPMScheduler]:
    """Load ``(unet, scheduler)`` from a local directory or a hub id.

    A local directory holds a pipeline (``unet/`` and ``scheduler/``, as written
    by :func:`save_model` or found on the hub) or a bare UNet (``config.json``
    and weights).  A bare UNet has no noise schedule: pass ``scheduler``.  A
    pipeline without ``scheduler/scheduler_config.json`` is an error, never
    silently given a default schedule.  A string that is not an existing path
    but has the form ``owner/name`` is a hub id; ``hub_kwargs`` (``revision``,
    ``cache_dir``, ``local_files_only``, ...) go to diffusers' ``from_pretrained``.
    """
    source = str(source)
    local = Path(source).expanduser()
    if local.exists() or not _is_hub_id(source):
        unet, sched = _load_local(local, source)
    else:
        unet, sched = _load_hub(source, hub_kwargs)
    if scheduler is not None:
        sched = scheduler
    elif sched is None:
        raise ValueError(f"{local} holds a bare UNet (config.json and weights) but no noise schedule: pass "
                         "scheduler=DDPMScheduler(...) with the schedule it was trained with, or load the "
                         "pipeline directory that holds unet/ and scheduler/")
    unet.eval().requires_grad_(False)
    if device is not None:
        unet.to(device)
    return unet, sched


def _is_hub_id(source: str) -> bool:
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(source)
    except Exception:
        return False
    return not source.startswith((".", "~"))


def _load_local(local: Path, source: str) -> tuple[UNet2DModel, DDPMScheduler | None]:
    if not local.exists():
        raise ModelSourceError(f"model directory not found: {source} (resolved to {local.resolve()})")
    if not local.is_dir():
        raise ModelSourceError(f"{source} is a file; a model is a directory in diffusers format "
                               "(unet/ and scheduler/, or a bare UNet's config.json and weights)")
    if (local / "unet").is_dir() or (local / "model_index.json").exists():
        sched_file = local / "scheduler" / "scheduler_config.json"
        if not (local / "unet").is_dir():
            raise ModelSourceError(f"{local} has a model_index.json but no unet/ folder")
        if not sched_file.exists():
            raise ModelSourceError(f"pipeline directory {local} has no scheduler ({sched_file} is missing): "
                                   "a model's noise schedule is part of the model; copy its scheduler/ "
                                   "folder, or pass scheduler=... explicitly")
        try:
            sched = DDPMScheduler.from_pretrained(local / "scheduler")
        except Exception as err:
            raise ValueError(f"unreadable scheduler config {sched_file}: {err}") from err
        return _load_unet(local / "unet"), sched
    if (local / "config.json").exists():
        return _load_unet(local), None
    raise ModelSourceError(f"{local} holds no diffusers UNet (no unet/ folder and no config.json)")


def _load_hub(source: str, hub_kwargs: dict) -> tuple[UNet2DModel, DDPMScheduler]:
    try:
        unet = UNet2DModel.from_pretrained(source, subfolder="unet", **hub_kwargs)
        sched = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **hub_kwargs)
    except OSError as err:
        raise ModelSourceError(
            f"{source!r} is not a local directory (no such path: {Path(source).resolve()}), so it was "
            f"looked up as a hub id, and {hub_failure(err)}. For a local model, give an existing path "
            f"(e.g. ./{source} from the right folder).") from err
    return unet, sched


def hub_failure(err: BaseException) -> str:
    """Why a hub lookup failed, from the chain of exceptions diffusers and huggingface_hub raise."""
    from huggingface_hub import errors

    chain, seen = [], err
    while seen is not None and len(chain) < 20:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(e, errors.RepositoryNotFoundError) for e in chain):
        return "the hub has no such repository (or it is private or gated)"
    if any(isinstance(e, (errors.RevisionNotFoundError,)) for e in chain):
        return "the hub has no such revision of it"
    if any(isinstance(e, errors.LocalEntryNotFoundError) for e in chain):
        return ("the hub could not be reached (offline, or HF_HUB_OFFLINE / local_files_only set) and it "
                "is not in the local hub cache")
    if any(isinstance(e, errors.EntryNotFoundError) for e in chain):
        return "the hub repository has no diffusers UNet (no unet/config.json): not a diffusers pipeline"
    return f"the hub lookup failed: {err}"


def _load_unet(directory: Path) -> UNet2DModel:
    weights = [p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin")]
    if not weights:
        raise ModelSourceError(f"no weights (.safetensors or .bin) in {directory}")
    try:  # .bin files are read by diffusers with torch.load(weights_only=True): no code runs either way
        return UNet2DModel.from_pretrained(directory)
    except Exception as err:
        raise ValueError(f"corrupt or incompatible checkpoint in {directory}: {err}") from err
