"""The open world of a target: generators, their training images, samples and the VAE."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from provlib.models.other import VAEConfig, latent_shape, load_vae, sample_vae, save_vae, train_vae
from provlib.study import Run, artifacts, generators as G
from provlib.study import run as study_run
from provlib.study.targets import get_target, target_manifest
from provlib.study.profiles import get_profile


@pytest.mark.parametrize("name", [n for n, g in G.GENERATORS.items() if g.trained])
def test_training_images_are_disjoint_from_the_targets_members_and_heldout(name):
    gen = G.get_generator(name)
    m = G.generator_manifest(gen, 0).indices["member"]
    tm = target_manifest(get_target(gen.of), 0)
    assert len(m) == gen.n_train == len(np.unique(m))
    assert not np.intersect1d(m, np.r_[tm.indices["member"], tm.indices["heldout"]]).size


def test_every_profile_lists_generators_of_its_first_target():
    for profile in ("tiny", "cpu"):
        p = get_profile(profile)
        assert {G.get_generator(g).of for g in p["open_world"]} == {p["targets"][0]}
        kinds = {G.get_generator(g).kind for g in p["open_world"]}
        assert {"sampler", "ddpm", "vae"} <= kinds   # a non-diffusion generator among them


def test_unknown_generators_are_named():
    with pytest.raises(ValueError, match="unknown generator 'gan'"):
        G.get_generator("gan")
    with pytest.raises(ValueError, match="open_world"):
        get_profile("tiny", open_world=["gan"])
    with pytest.raises(ValueError, match="open_world"):
        get_profile("tiny", open_world="tiny-vae")


def test_a_sampler_generator_has_nothing_to_train():
    with pytest.raises(ValueError, match="nothing to train"):
        G.model_dir("tiny-ddim")


def test_tiny_open_world_samples_are_cached_images_in_range():
    p = Run.from_profile("tiny", n_open_world=6)
    for name in p.open_world:
        s = G.samples(p, name, progress=False)
        assert s.images.shape == (6, 1, 16, 16) and s.images.min() >= -1 and s.images.max() <= 1
        assert torch.equal(G.samples(p, name, progress=False).images, s.images)
    # the trained ones are recorded like a shipped target: configuration, command, training images
    import json
    info = json.loads((G.model_dir("tiny-seed1") / "provlib.json").read_text())
    assert info["command"] == "python -m provlib.train --generator tiny-seed1 --retrain --embed"
    assert (G.model_dir("tiny-seed1") / "splits.json").exists()


def test_open_world_splits_and_codecs_are_split_names():
    p = Run.from_profile("tiny", n_open_world=6).target("tiny")
    assert p.source_of("open:tiny-vae") == "generated:tiny-vae"
    assert p.source_of("member#10@jpeg75") == p.source_of("member")
    sub = artifacts.split_images(p, "heldout#10")
    full = artifacts.split_images(p, "heldout")
    pos = study_run.subset_positions(0, "heldout", len(full), 10)
    assert np.array_equal(sub.ids, full.ids[pos]) and torch.equal(sub.images, full.images[pos])
    coded = artifacts.split_images(p, "heldout#10@resize")
    assert np.array_equal(coded.ids, sub.ids) and not torch.equal(coded.images, sub.images)
    for bad, msg in (("member@gif", "unknown codec"), ("member#0", "positive integer"), ("open:gan", "unknown generator")):
        with pytest.raises(ValueError, match=msg):
            p.source_of(bad)


def test_vae_samples_are_seeded_per_id_and_survive_a_save(tmp_path):
    cfg = VAEConfig(block_out_channels=(8, 8, 8), epochs=1, batch_size=8)
    x = torch.rand(16, 1, 16, 16) * 2 - 1
    vae, history = train_vae(x, cfg, progress=False)
    assert len(history) == 1 and np.isfinite(history[0])
    assert latent_shape(vae) == (4, 4, 4)
    a = sample_vae(vae, 4, seed=1)
    b = sample_vae(vae, 2, seed=1, ids=[2, 3])
    torch.testing.assert_close(a[2:], b)
    save_vae(vae, tmp_path / "v", {"config": cfg.to_dict()})
    torch.testing.assert_close(sample_vae(load_vae(tmp_path / "v"), 4, seed=1), a)
    with pytest.raises(ValueError, match="the VAE expects"):
        train_vae(torch.full((4, 1, 8, 8), -0.5), cfg, progress=False)
    with pytest.raises(FileNotFoundError, match="no VAE"):
        load_vae(tmp_path)


def test_an_attention_unet_is_another_architecture_and_old_configs_keep_their_record():
    from provlib.models import TrainConfig, UNetConfig, build_unet
    assert "attention" not in TrainConfig().to_dict()["unet"]      # shipped targets' recorded configs stay valid
    cfg = TrainConfig(unet=UNetConfig(block_out_channels=(8, 16), norm_num_groups=4, attention=True))
    assert cfg.to_dict()["unet"]["attention"] is True
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    unet = build_unet(cfg.unet)
    assert unet.config.down_block_types == ("DownBlock2D", "AttnDownBlock2D")
    assert unet(torch.zeros(1, 1, 16, 16), torch.tensor([3])).sample.shape == (1, 1, 16, 16)


def test_a_merged_lora_adapter_equals_the_peft_model(tmp_path):
    import copy

    from peft import LoraConfig, get_peft_model

    from provlib.models import load_model, model_fingerprint
    from provlib.models.lora import apply_lora
    from provlib.paths import EMBEDDED_MODELS_DIR
    unet, _ = load_model(EMBEDDED_MODELS_DIR / "tiny")
    pm = get_peft_model(copy.deepcopy(unet), LoraConfig(r=2, target_modules=["conv1", "conv2"], init_lora_weights=False))
    pm.save_pretrained(tmp_path)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([5, 600])
    merged = apply_lora(unet, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(merged(x, t).sample, pm(x, t).sample, rtol=1e-5, atol=1e-5)
    assert model_fingerprint(merged) != model_fingerprint(unet)
    assert not any("lora" in n for n, _ in merged.named_modules())
