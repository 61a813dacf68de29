"""The embedded study: named targets (:mod:`.targets`), parameter sets (:mod:`.profiles`), a run resolved once
(:mod:`.run`) and the cached artifacts built from it (:mod:`.artifacts`: image sets, generated samples,
features).

    from provlib import study
    run = study.Run.from_profile("tiny")
    feats = study.features(run.target(), "member")      # the first target's members
"""
from .artifacts import all_sets, chunked, features, generated, generated_config, split_images
from .run import Run, Target, parse_split, split_name, subset_positions, train_mask
from .targets import (TARGETS, TargetConfig, TargetModel, embed_model, embedded_model_dir, get_target, resolve,
                      retrain, shipped_matches, target_manifest, trained_model_dir)

__all__ = ["TARGETS", "Run", "Target", "TargetConfig", "TargetModel", "all_sets", "chunked", "embed_model",
           "embedded_model_dir", "features", "generated", "generated_config", "get_target", "parse_split", "resolve",
           "retrain", "shipped_matches", "split_images", "split_name", "subset_positions", "target_manifest",
           "train_mask", "trained_model_dir"]
