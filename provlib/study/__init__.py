"""The embedded study: named targets (:mod:`.targets`), parameter sets (:mod:`.profiles`) and the cached
artifacts built from them (:mod:`.artifacts`: resolved targets, image sets, generated samples, features).

``from provlib import study`` gives the artifact functions (``study.features(params, split, target=...)``, ...).
"""
from .artifacts import (Target, all_sets, embed_model, embedded_model_dir, features, generated, generated_config,
                        image_sets, manifest, resolve, retrain, shipped_matches, source_of, split_images,
                        target_model, timestep_grid, train_mask, trained_model_dir)
from .targets import TARGETS, TargetConfig, get_target

__all__ = ["TARGETS", "Target", "TargetConfig", "all_sets", "embed_model", "embedded_model_dir", "features",
           "generated", "generated_config", "get_target", "image_sets", "manifest", "resolve", "retrain",
           "shipped_matches", "source_of", "split_images", "target_model", "timestep_grid", "train_mask",
           "trained_model_dir"]
