"""What produces images: DDPMs (build, train, save and load in diffusers format)."""
from .ddpm import (ModelSourceError, TrainConfig, UNetConfig, build_unet, hub_failure, load_model, make_scheduler,
                   model_fingerprint, save_model, train_ddpm)

__all__ = ["ModelSourceError", "TrainConfig", "UNetConfig", "build_unet", "hub_failure", "load_model",
           "make_scheduler", "model_fingerprint", "save_model", "train_ddpm"]
