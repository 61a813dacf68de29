"""Fine-tunes as LoRA adapters: how suspect models are made and shared.

Two formats, as they are shared:

- **peft** (a class-conditional pixel model's suspects): what ``peft``'s
  ``save_pretrained`` writes, ``adapter_config.json`` and
  ``adapter_model.safetensors``.  :func:`apply_lora` injects it into a
  diffusers UNet and merges it, so every kernel sees a plain UNet whose
  fingerprint is that of the fine-tuned model;
- **diffusers** (a text-to-image pipeline's suspects, as Stable Diffusion
  LoRAs are shared): ``pytorch_lora_weights.safetensors`` written by
  ``StableDiffusionPipeline.save_lora_weights`` (:func:`save_diffusers_lora`),
  read back by ``pipe.load_lora_weights``
  (:func:`provlib.models.interface.open_model` with ``lora=``).

:func:`train_lora` fine-tunes either kind of UNet through an adapter.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..io import ArtifactError


def apply_lora(unet: torch.nn.Module, adapter_dir: str | Path) -> torch.nn.Module:
    """``unet`` with the LoRA adapter of ``adapter_dir`` merged into its weights (a new module; the
    argument is left untouched)."""
    import copy

    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    d = Path(adapter_dir)
    cfg_file, weights = d / "adapter_config.json", d / "adapter_model.safetensors"
    if not cfg_file.exists() or not weights.exists():
        raise ArtifactError(f"{d} is not a LoRA adapter in peft format (adapter_config.json and "
                            "adapter_model.safetensors expected; .bin adapters are refused)")
    try:
        config = LoraConfig.from_pretrained(str(d))
        state = load_file(str(weights))
    except Exception as err:
        raise ArtifactError(f"unreadable LoRA adapter {d}: {err}") from err
    model = copy.deepcopy(unet)
    try:
        model = inject_adapter_in_model(config, model)
        result = set_peft_model_state_dict(model, state)
    except Exception as err:
        raise ValueError(f"the LoRA adapter {d} does not fit this model: {err}") from err
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ValueError(f"the LoRA adapter {d} has weights for modules this model lacks: {unexpected[:3]}")
    return _merge(model)


def _merge(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every LoRA layer into its base layer and put the base layer back in its place."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], module.get_base_layer())
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- training an adapter

RESNET_CONVOLUTIONS = ("conv1", "conv2")                    # the ResNet blocks' 3x3 convolutions
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")   # diffusers' text-to-image LoRA default: every
                                                               # attention's projections, cross-attention included


@dataclass(frozen=True)
class LoraTrainConfig:
    """How a LoRA fine-tune of a diffusion UNet is trained; every field enters the cache key."""

    rank: int = 4
    alpha: int = 4
    target_modules: tuple[str, ...] = RESNET_CONVOLUTIONS
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def train_lora(unet: torch.nn.Module, scheduler, images: torch.Tensor, cfg: LoraTrainConfig, *,
               labels: torch.Tensor | None = None, cond: torch.Tensor | None = None, device=None,
               progress: bool = False) -> tuple[dict, object, list]:
    """Fine-tune ``unet`` on ``images`` through a LoRA adapter; the base weights stay frozen and untouched.

    A pixel model's ``images`` are in [-1, 1] (with class ``labels`` for a
    class-conditional one); a text-to-image UNet's are the latents x0 of the
    images (:meth:`~provlib.models.interface.DiffusionModel.to_space`), each with
    its caption's text embeddings in ``cond`` (:meth:`~provlib.models.interface.DiffusionModel.condition`).
    Returns ``(adapter_state, lora_config, loss_history)``: the adapter's weights
    as peft names them, ready for :func:`save_lora` or :func:`save_diffusers_lora`.
    The same denoising loss and random-stream layout as
    :func:`provlib.models.ddpm.train_ddpm` (no EMA: the adapter is the last step's).
    """
    import copy

    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    from ..kernels.condition import check_condition, check_input, is_latent
    from ..runtime import default_device
    from ..progress import progress_bar
    from .ddpm import check_labels, denoising_loss

    check_input(images, unet, what="fine-tuning images")
    if is_latent(unet):
        if labels is not None or cond is None:
            raise ValueError("a text-to-image UNet is fine-tuned on its images' text embeddings (cond), not labels")
        labels = check_condition(cond, len(images))
    elif cond is not None:
        raise ValueError("a pixel-space UNet takes class labels (or nothing), not text embeddings")
    else:
        labels = check_labels(labels, len(images), getattr(unet.config, "num_class_embeds", None) or 0)
    device = torch.device(device) if device is not None else default_device()
    config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.target_modules), lora_dropout=0.0,
                        init_lora_weights=True)
    torch.manual_seed(cfg.seed)   # peft draws lora_A's initialisation from the global generator
    model = inject_adapter_in_model(config, copy.deepcopy(unet)).to(device).train()
    trainable = [p for n, p in model.named_parameters() if "lora_" in n]
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    opt = torch.optim.AdamW(trainable, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    acp = scheduler.alphas_cumprod.to(device)
    x_all = images.to(device)
    y_all = None if labels is None else labels.to(device)
    history = []
    for _ in progress_bar(range(cfg.epochs), desc="LoRA fine-tune (epochs)", enabled=progress):
        perm, total = torch.randperm(len(x_all), generator=gen), 0.0
        for b in range(0, len(x_all), cfg.batch_size):
            idx = perm[b:b + cfg.batch_size].to(device)
            loss = denoising_loss(model, x_all[idx], None if y_all is None else y_all[idx], acp, gen,
                                  scheduler.config.num_train_timesteps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / len(x_all))
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    return state, config, history


def save_diffusers_lora(directory: str | Path, state: dict, config, info: dict | None = None) -> Path:
    """Write a text-to-image UNet's adapter as Stable Diffusion LoRAs are shared: diffusers'
    ``pytorch_lora_weights.safetensors`` (``StableDiffusionPipeline.save_lora_weights``, with the rank and alpha as
    its adapter metadata), plus ``provlib.json`` (how it was made) when ``info`` is given."""
    import json

    from diffusers import StableDiffusionPipeline

    from ..io import atomic_write_text

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    metadata = {"r": config.r, "lora_alpha": config.lora_alpha, "target_modules": sorted(config.target_modules)}
    StableDiffusionPipeline.save_lora_weights(d, unet_lora_layers=state, safe_serialization=True,
                                              unet_lora_adapter_metadata=metadata)
    if info is not None:
        atomic_write_text(d / "provlib.json", json.dumps(info, indent=1, default=str))
    return d


def save_lora(directory: str | Path, state: dict, config, info: dict | None = None) -> Path:
    """Write an adapter in peft's format (``adapter_config.json``, ``adapter_model.safetensors``), plus
    ``provlib.json`` (how it was made) when ``info`` is given."""
    import json

    from safetensors.torch import save_file

    from ..io import atomic_write_text

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(d))
    save_file(state, str(d / "adapter_model.safetensors"))
    if info is not None:
        atomic_write_text(d / "provlib.json", json.dumps(info, indent=1, default=str))
    return d
