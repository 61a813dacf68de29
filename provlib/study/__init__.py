"""The embedded study: named parameter sets (:mod:`.profiles`) and the cached artifacts built from
them (:mod:`.artifacts`: splits, image sets, target model, generated samples, features).

``from provlib import study`` gives the artifact functions (``study.features(params, split)``, ...).
"""
from .artifacts import (all_sets, embed_model, embedded_model_dir, features, generated, generated_config,
                        image_sets, manifest, model_config, pool_sizes, shipped_matches, target_model,
                        timestep_grid, train_config, train_mask, trained_model_dir)

__all__ = ["all_sets", "embed_model", "embedded_model_dir", "features", "generated", "generated_config",
           "image_sets", "manifest", "model_config", "pool_sizes", "shipped_matches", "target_model",
           "timestep_grid", "train_config", "train_mask", "trained_model_dir"]
