"""One interface for the models provlib audits: pixel-space DDPMs and latent text-to-image pipelines.

A :class:`DiffusionModel` says where the diffusion runs and how the denoiser is
called, whatever the kind of model:

- :meth:`~DiffusionModel.to_space`: images (N, C, H, W) in [-1, 1] to the clean
  diffusion variable x0: the images themselves for a pixel model; for a latent
  model the VAE posterior's **mean** times ``vae.config.scaling_factor``
  (deterministic, as the peers' attacks on Stable Diffusion use it);
- :meth:`~DiffusionModel.condition`: what the denoiser is conditioned on: the
  text encoder's hidden states of each prompt, encoded by the pipeline's own
  ``encode_prompt`` (the empty prompt is the unconditional model), class labels
  for a class-conditional pixel model, or nothing;
- :meth:`~DiffusionModel.eps`: the noise prediction eps_theta(x_t, t, cond);
- ``unet`` and ``scheduler``: the denoiser (whose parameters the gradient
  kernels differentiate) and the noise schedule.

:func:`open_model` reads a pipeline directory by the class its
``model_index.json`` names (:data:`KINDS`); a pipeline of any other class is
refused, naming the class found and the kinds handled.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..kernels.condition import unet_kwargs
from .ddpm import ModelSourceError, load_model, model_fingerprint

# the pipeline classes provlib reads, and the kind of model each is
KINDS = {"DDPMPipeline": "pixel", "StableDiffusionPipeline": "latent"}


@dataclass
class DiffusionModel:
    """A diffusion model of either kind (see the module docstring)."""

    kind: str                      # "pixel" or "latent"
    unet: torch.nn.Module
    scheduler: Any
    pipeline: Any = None           # the StableDiffusionPipeline of a latent model (its VAE, tokenizer, text encoder)
    source: str = ""
    info: dict = field(default_factory=dict)

    @property
    def vae(self):
        return None if self.pipeline is None else self.pipeline.vae

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model takes."""
        if self.kind == "pixel":
            c = self.unet.config
            return c.in_channels, c.sample_size, c.sample_size
        c = self.vae.config
        factor = 2 ** (len(c.block_out_channels) - 1)
        return c.in_channels, self.unet.config.sample_size * factor, self.unet.config.sample_size * factor

    @property
    def space_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of x0, the variable the diffusion runs on (the latent of a latent model)."""
        c = self.unet.config
        return c.in_channels, c.sample_size, c.sample_size

    @property
    def fingerprint(self) -> str:
        """Content hash of every module that maps an image to eps: the UNet, and a latent model's VAE and
        text encoder."""
        if self.kind == "pixel":
            return model_fingerprint(self.unet)
        return _combine([model_fingerprint(m) for m in (self.unet, self.vae, self.pipeline.text_encoder)])

    @torch.no_grad()
    def to_space(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """x0 of ``images`` (N, C, H, W) in [-1, 1]: themselves, or the scaled VAE posterior mean."""
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images of shape {tuple(images.shape[1:])}; this {self.kind} model takes "
                             f"{self.image_shape} (C, H, W)")
        if self.kind == "pixel":
            return images
        vae = self.vae
        p = next(vae.parameters())
        out = [vae.encode(b.to(p.device, p.dtype)).latent_dist.mean for b in images.split(batch_size)]
        return torch.cat(out) * vae.config.scaling_factor

    @torch.no_grad()
    def condition(self, prompts: Sequence[str] | None = None, labels=None, n: int | None = None):
        """What eps is conditioned on for ``n`` images: the text embeddings of ``prompts`` (one per image; for a
        latent model None means the empty prompt), class ``labels``, or None (an unconditional pixel model)."""
        if self.kind == "pixel":
            if prompts is not None:
                raise ValueError("a pixel-space model takes no prompts (class labels, or nothing)")
            return None if labels is None else torch.as_tensor(labels, dtype=torch.long)
        if labels is not None:
            raise ValueError("a text-to-image model is conditioned on prompts, not class labels")
        if prompts is None:
            if n is None:
                raise ValueError("give the prompts, or the number of images n for the empty prompt")
            prompts = [""] * n
        if isinstance(prompts, str):
            raise TypeError("prompts is a list with one prompt per image, not a string")
        device = next(self.unet.parameters()).device
        embeds, _ = self.pipeline.encode_prompt(list(prompts), device, 1, False)
        return embeds

    @torch.no_grad()
    def from_space(self, x0: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Images in [-1, 1] of diffusion variables ``x0``: themselves, or the VAE's decoding of the unscaled
        latents."""
        if self.kind == "pixel":
            return x0.clamp(-1, 1)
        vae = self.vae
        p = next(vae.parameters())
        out = [vae.decode(b.to(p.device, p.dtype) / vae.config.scaling_factor).sample.cpu()
               for b in x0.split(batch_size)]
        return torch.cat(out).clamp(-1, 1)

    def generate(self, n: int, *, prompts: Sequence[str] | None = None, labels=None, **sample_kwargs) -> torch.Tensor:
        """``n`` images in [-1, 1] drawn by :func:`provlib.sampling.sample` (per-sample seeded noise) under each
        sample's prompt (a latent model; None: the empty prompt) or class label, decoded to images."""
        from ..sampling import sample

        if self.kind == "pixel":
            return sample(self.unet, self.scheduler, n, class_labels=labels, **sample_kwargs)
        cond = self.condition(prompts, labels, n=n)
        return self.from_space(sample(self.unet, self.scheduler, n, cond=cond, **sample_kwargs))

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        """eps_theta(x_t, t, cond)."""
        if self.kind == "latent" and cond is None:
            raise ValueError("a text-to-image model needs its condition (model.condition(prompts) or the empty "
                             "prompt's)")
        return self.unet(x_t, t, **unet_kwargs(cond)).sample


def _combine(fingerprints: list[str]) -> str:
    import hashlib

    return hashlib.sha256("/".join(fingerprints).encode()).hexdigest()[:16]


def pipeline_class(directory: Path) -> str | None:
    """The ``_class_name`` a pipeline directory's ``model_index.json`` names (None without one)."""
    index = directory / "model_index.json"
    if not index.is_file():
        return None
    try:
        return json.loads(index.read_text())["_class_name"]
    except (ValueError, KeyError) as err:
        raise ModelSourceError(f"{index} is not a diffusers model index ({err})") from err


def open_model(source: str | Path, *, lora: str | Path | None = None, device=None) -> DiffusionModel:
    """The model of a pipeline directory (or a bare UNet, or a hub id of a pixel model), with a LoRA fine-tune
    applied when ``lora`` is given (peft adapter folder, or diffusers' ``pytorch_lora_weights.safetensors``
    or its folder, for a latent model)."""
    local = Path(source).expanduser()
    cls = pipeline_class(local) if local.is_dir() else None
    if cls is not None and cls not in KINDS:
        raise ModelSourceError(f"{source}: a {cls}; provlib handles "
                               + ", ".join(f"{k} ({v})" for k, v in KINDS.items()))
    if cls == "StableDiffusionPipeline":
        return _open_latent(local, lora, device)
    unet, scheduler = load_model(source, device=device)
    if lora is not None:
        from .lora import apply_lora
        unet = apply_lora(unet, lora)
    return DiffusionModel("pixel", unet, scheduler, source=str(source))


def _open_latent(directory: Path, lora, device) -> DiffusionModel:
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (directory / part).is_dir():
            raise ModelSourceError(f"{directory}: a StableDiffusionPipeline without its {part}/ folder")
    with quiet_loading():
        try:
            pipe = StableDiffusionPipeline.from_pretrained(directory, safety_checker=None,
                                                           requires_safety_checker=False, dtype=torch.float32)
        except Exception as err:
            raise ModelSourceError(f"{directory}: unreadable StableDiffusionPipeline ({type(err).__name__}: "
                                   f"{err})") from err
        pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        if lora is not None:
            _load_lora(pipe, Path(lora))
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval().requires_grad_(False)
    if device is not None:
        pipe.to(device)
    return DiffusionModel("latent", pipe.unet, pipe.scheduler, pipeline=pipe, source=str(directory))


@contextmanager
def quiet_loading():
    """diffusers' and transformers' loading progress bars and notes off while a pipeline (and its LoRA) loads: a
    study loads dozens of suspects, and each would print them; their settings are restored after."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    saved = [(m, m.is_progress_bar_enabled(), m.get_verbosity()) for m in (diffusers_logging, transformers_logging)]
    for m, _, _ in saved:
        m.disable_progress_bar()
        m.set_verbosity_error()
    try:
        yield
    finally:
        for m, bar, verbosity in saved:
            (m.enable_progress_bar if bar else m.disable_progress_bar)()
            m.set_verbosity(verbosity)


def _load_lora(pipe, lora: Path) -> None:
    """A LoRA fine-tune folded into the pipeline's UNet: diffusers' format through ``load_lora_weights``, a peft
    adapter folder through peft (:func:`provlib.models.lora.apply_lora`)."""
    diffusers_file = lora if lora.suffix == ".safetensors" else lora / "pytorch_lora_weights.safetensors"
    if diffusers_file.is_file():
        try:
            pipe.load_lora_weights(str(diffusers_file.parent), weight_name=diffusers_file.name)
        except Exception as err:
            raise ValueError(f"the LoRA weights {diffusers_file} do not fit this pipeline: {err}") from err
        pipe.fuse_lora()
        pipe.unload_lora_weights()
        return
    from .lora import apply_lora
    pipe.unet = apply_lora(pipe.unet, lora)


__all__ = ["DiffusionModel", "KINDS", "open_model", "pipeline_class", "quiet_loading"]
