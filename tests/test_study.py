"""The cached study pipeline on the tiny profile (embedded tiny model)."""
import os

import numpy as np
import pytest
import torch

from provlib import paths, study
from provlib.study import artifacts
from provlib.study.profiles import get_profile


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVLIB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_unknown_profile_or_parameter_is_an_error():
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("huge")
    with pytest.raises(ValueError, match="unknown parameter"):
        get_profile("tiny", n_members=3)


def test_the_tiny_profile_uses_the_shipped_model_without_training(cache):
    unet, _ = study.target_model(get_profile("tiny"))
    assert not (cache / "model").exists()
    assert sum(p.numel() for p in unet.parameters()) > 0


def test_features_are_cached_per_chunk_and_a_rerun_resumes(cache):
    params = get_profile("tiny", timestep_stride=250)
    first = study.features(params, "heldout", chunk=100, progress=False)
    chunks = sorted((cache / "features").glob("*/result.safetensors"))
    assert len(chunks) == 3
    stamps = {c: c.stat().st_mtime_ns for c in chunks}
    chunks[1].unlink()  # as if the run had been killed before this chunk was written
    again = study.features(params, "heldout", chunk=100, progress=False)
    for f in first:
        assert torch.equal(first[f], again[f])
    assert chunks[0].stat().st_mtime_ns == stamps[chunks[0]]  # untouched chunks are reused
    assert chunks[2].stat().st_mtime_ns == stamps[chunks[2]]


def test_a_changed_parameter_recomputes_only_what_depends_on_it(cache):
    params = get_profile("tiny", n_generated=8, sampler_steps=5, timestep_stride=500)
    study.features(params, "generated", progress=False)
    samples = list((cache / "samples").glob("*/result.safetensors"))
    assert len(samples) == 1
    stamp = samples[0].stat().st_mtime_ns
    study.features({**params, "timestep_stride": 250}, "generated", progress=False)
    assert list((cache / "samples").glob("*/result.safetensors")) == samples  # the samples were reused
    assert samples[0].stat().st_mtime_ns == stamp
    assert len(list((cache / "features").glob("*/result.safetensors"))) == 2


def test_probe_rows_split_by_seed_and_never_empty():
    m = study.train_mask(10, 0.5, seed=0, stream="x")
    assert m.sum() == 5 and (m == study.train_mask(10, 0.5, seed=0, stream="x")).all()
    with pytest.raises(ValueError, match="empty"):
        study.train_mask(1, 0.5, seed=0, stream="x")


def test_a_retrained_model_never_reuses_the_old_features(cache, monkeypatch):
    params = get_profile("tiny", n_heldout=20, timestep_stride=500)
    first = study.features(params, "heldout", progress=False)
    unet, sched = study.target_model(params)
    with torch.no_grad():  # "retrained": same configuration, other weights
        for p in unet.parameters():
            p.add_(0.01)
    monkeypatch.setattr(artifacts, "target_model", lambda params, **kw: (unet, sched))
    second = study.features(params, "heldout", progress=False)
    assert not torch.equal(first["loss"], second["loss"])
    assert len(list((cache / "features").glob("*/result.safetensors"))) == 2


def test_a_changed_kernel_never_reuses_the_old_features(cache, monkeypatch):
    params = get_profile("tiny", n_heldout=20, timestep_stride=500)
    study.features(params, "heldout", progress=False)
    real = artifacts.code_version
    monkeypatch.setattr(artifacts, "code_version", lambda *mods: real(*mods) + "-edited")
    study.features(params, "heldout", progress=False)
    assert len(list((cache / "features").glob("*/result.safetensors"))) == 2


def test_a_cached_chunk_must_hold_the_rows_of_its_images(cache):
    from provlib import io
    params = get_profile("tiny", n_heldout=20, timestep_stride=500)
    study.features(params, "heldout", progress=False)
    (chunk,) = list((cache / "features").glob("*/result.safetensors"))
    tensors, meta = io.load_tensors(chunk)
    io.save_tensors(chunk, {**tensors, "loss": tensors["loss"][:10]}, meta)  # rows missing
    with pytest.raises(io.ArtifactError, match="entry 'loss' has shape \\(10, 2\\), expected \\(20, 2\\)"):
        study.features(params, "heldout", progress=False)
    io.save_tensors(chunk, {**tensors, "ids": tensors["ids"] + 1}, meta)  # other images' rows
    with pytest.raises(ValueError, match="hold other image ids than their key"):
        study.features(params, "heldout", progress=False)
