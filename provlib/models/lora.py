"""Fine-tunes as LoRA adapters (peft format): how suspect models are made and shared.

An adapter directory is what ``peft``'s ``save_pretrained`` writes:
``adapter_config.json`` and ``adapter_model.safetensors``.  :func:`apply_lora`
injects it into a diffusers UNet and merges it, so every kernel sees a plain
UNet whose fingerprint is that of the fine-tuned model.
"""
from __future__ import annotations

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
