"""The cached study pipeline on the tiny profile (embedded tiny model)."""

import json

import numpy as np
import pytest
import torch

from provlib import paths, study
from provlib.study import Run, artifacts, targets
from provlib.study.profiles import get_profile
from provlib.study.targets import TARGETS


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
    unet, _ = Run.from_profile("tiny").target().load()
    assert not (cache / "model").exists()
    assert sum(p.numel() for p in unet.parameters()) > 0


def test_features_are_cached_per_chunk_and_a_rerun_resumes(cache):
    target = Run.from_profile("tiny", timestep_stride=250).target()
    first = study.features(target, "heldout", chunk=100, progress=False)
    chunks = sorted((cache / "features").glob("*/result.safetensors"))
    assert len(chunks) == 3
    stamps = {c: c.stat().st_mtime_ns for c in chunks}
    chunks[1].unlink()  # as if the run had been killed before this chunk was written
    again = study.features(target, "heldout", chunk=100, progress=False)
    for f in first:
        assert torch.equal(first[f], again[f])
    assert chunks[0].stat().st_mtime_ns == stamps[chunks[0]]  # untouched chunks are reused
    assert chunks[2].stat().st_mtime_ns == stamps[chunks[2]]


def test_a_changed_parameter_recomputes_only_what_depends_on_it(cache):
    run = Run.from_profile("tiny", n_generated=8, sampler_steps=5, timestep_stride=500)
    study.features(run.target(), "generated", progress=False)
    samples = list((cache / "samples").glob("*/result.safetensors"))
    assert len(samples) == 1
    stamp = samples[0].stat().st_mtime_ns
    study.features(run.replace(timestep_stride=250).target(), "generated", progress=False)
    assert list((cache / "samples").glob("*/result.safetensors")) == samples  # the samples were reused
    assert samples[0].stat().st_mtime_ns == stamp
    assert len(list((cache / "features").glob("*/result.safetensors"))) == 2


def test_probe_rows_split_by_seed_and_never_empty():
    m = study.train_mask(10, 0.5, seed=0, stream="x")
    assert m.sum() == 5 and (m == study.train_mask(10, 0.5, seed=0, stream="x")).all()
    with pytest.raises(ValueError, match="empty"):
        study.train_mask(1, 0.5, seed=0, stream="x")


def test_a_retrained_model_never_reuses_the_old_features(cache, tmp_path, monkeypatch):
    import shutil

    from diffusers import UNet2DModel

    shipped = tmp_path / "models"
    shutil.copytree(paths.EMBEDDED_MODELS_DIR / "tiny", shipped / "tiny")
    monkeypatch.setattr(paths, "EMBEDDED_MODELS_DIR", shipped)
    run = Run.from_profile("tiny", timestep_stride=500)
    first = study.features(run.target(), "external", progress=False)
    # "retrained": the same configuration (so the same provlib.json), other weights
    unet = UNet2DModel.from_pretrained(shipped / "tiny" / "unet")
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.01)
    unet.save_pretrained(shipped / "tiny" / "unet")
    targets.forget_resolved()  # as a new process would
    second = study.features(run.target(), "external", progress=False)
    assert not torch.equal(first["loss"], second["loss"])
    assert len(list((cache / "features").glob("*/result.safetensors"))) == 2


def test_a_changed_kernel_never_reuses_the_old_features(cache, monkeypatch):
    target = Run.from_profile("tiny", timestep_stride=500).target()
    study.features(target, "external", progress=False)
    real = artifacts.code_version
    monkeypatch.setattr(artifacts, "code_version", lambda *mods: real(*mods) + "-edited")
    study.features(target, "external", progress=False)
    assert len(list((cache / "features").glob("*/result.safetensors"))) == 2


def test_a_cached_chunk_must_hold_the_rows_of_its_images(cache):
    from provlib import io
    target = Run.from_profile("tiny", timestep_stride=500).target()
    study.features(target, "external", progress=False)
    (chunk,) = list((cache / "features").glob("*/result.safetensors"))
    tensors, meta = io.load_tensors(chunk)
    io.save_tensors(chunk, {**tensors, "loss": tensors["loss"][:10]}, meta)  # rows missing
    with pytest.raises(io.ArtifactError, match="entry 'loss' has shape \\(10, 2\\), expected \\(100, 2\\)"):
        study.features(target, "external", progress=False)
    io.save_tensors(chunk, {**tensors, "ids": tensors["ids"] + 1}, meta)  # other images' rows
    with pytest.raises(ValueError, match="hold other image ids than their key"):
        study.features(target, "external", progress=False)


def test_every_target_draws_disjoint_splits_and_evaluates_a_subset_of_its_members():
    run = Run.from_profile("cpu")
    for name, config in study.TARGETS.items():
        m = run.target(name).manifest
        assert not set(m.indices["member"]) & set(m.indices["heldout"]), name
        assert len(m.indices["member"]) == config.n_member
        sets = run.target(name).image_sets
        assert len(sets["member"]) == config.members_evaluated
        assert set(sets["member"].ids) <= set(m.indices["member"].tolist())
        assert len(sets["heldout"]) == config.n_heldout and len(sets["external"]) == config.n_external
        if config.kind == "latent":   # its VAE's images are in no split the study evaluates
            vae = set(m.indices["autoencoder"].tolist())
            assert len(vae) == config.n_autoencoder and "autoencoder" not in sets
            assert not vae & (set(m.indices["member"].tolist()) | set(m.indices["heldout"].tolist()))


def test_members_of_the_three_fashion_targets_are_nested():
    """The member sets are prefixes of one seeded permutation: fm500 within fm1000 within fm2000."""
    run = Run.from_profile("cpu")
    members = [set(run.target(n).manifest.indices["member"].tolist()) for n in ("fm500", "fm1000", "fm2000")]
    assert members[0] < members[1] < members[2]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_ships_a_model_trained_with_its_configuration(name):
    """No study run ever trains a target: each shipped model matches its recorded configuration and splits."""
    assert study.shipped_matches(name)
    model = TARGETS[name].model_name   # two targets may evaluate one model (a latent model's two conditionings)
    recorded = json.loads((targets.embedded_model_dir(model) / "provlib.json").read_text())
    assert recorded["command"] == f"python -m provlib.train --target {model} --retrain --embed"


def test_the_digits_dataset_is_the_8x8_uci_set_upsampled():
    from provlib.data import load_embedded

    d = load_embedded("digits")
    assert d.images.shape == (1797, 1, 16, 16) and set(np.unique(d.labels)) == set(range(10))
    assert float(d.images.min()) == -1.0 and float(d.images.max()) == 1.0


def test_the_origin_studys_measurements_show_their_progress_under_the_batch_driver(cache, tmp_path, monkeypatch):
    # notebooks 09-15 compute re-encoded splits through origin.measured: minutes on the cpu profile that the
    # batch terminal must show (through the driver's relay file)
    from provlib import progress
    from provlib.study import measurements

    relay = tmp_path / "relay.log"
    monkeypatch.setenv(progress.ENV, str(relay))
    monkeypatch.setattr(progress, "_relay", {})
    target = Run.from_profile("tiny", timestep_stride=250).target()
    measurements.measured(target, "trajectory", "external#4@jpeg75")
    progress._relay.pop(str(relay)).close()
    assert "features" in relay.read_text() and "jpeg75" in relay.read_text()


def test_a_latent_target_is_measured_on_its_latents_under_each_images_caption_or_the_empty_prompt(cache):
    """tiny-sd and tiny-sd-empty share one model; the first conditions each image on its class caption (a
    generated image on the caption it was drawn from), the second on the empty prompt.  Their measurements are
    cached apart and differ; each equals the kernel on the model's x0 of the images under that condition."""
    from provlib.kernels.trajectory import trajectory_features
    from provlib.models.latent import dataset_captions
    from provlib.study.artifacts import generated, prompts_of

    run = Run.from_profile("tiny", latent_targets=["tiny-sd", "tiny-sd-empty"], n_generated=20, sampler_steps=5)
    cap, empty = run.target("tiny-sd"), run.target("tiny-sd-empty")
    assert cap.fingerprint == empty.fingerprint and cap.config.space_shape == (4, 8, 8)
    member = study.split_images(cap, "member#4")
    assert prompts_of(cap, "member#4", member) == dataset_captions("fashion_mnist", member.labels)
    assert prompts_of(empty, "member#4", member) == [""] * 4
    gen = generated(cap, progress=False)
    assert list(gen.labels[:12]) == [*range(10), 0, 1]
    assert prompts_of(cap, "generated", gen)[:2] == ["a photo of a t-shirt", "a photo of a trouser"]
    ext = study.split_images(cap, "external#2")
    assert prompts_of(cap, "external#2", ext)[0].startswith("a photo of a digit ")
    got = {t.name: study.features(t, "member#4", progress=False)["loss"] for t in (cap, empty)}
    assert not torch.allclose(got["tiny-sd"], got["tiny-sd-empty"])
    m = cap.open()
    want = trajectory_features(m.unet, m.scheduler, m.to_space(member.images), run.grid, seed=cap.noise_seed("member"),
                               ids=member.ids, features=("loss",), cond=m.condition(prompts_of(cap, "member#4", member)))
    torch.testing.assert_close(got["tiny-sd"], want["loss"], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="latent_targets .* unknown"):
        Run.from_profile("tiny", latent_targets=["tiny"])
