"""Instance-level attribution: distances, queries, key strategies, delta_0 and conf on hand-checkable cases."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from provlib.attribution import keys as K
from provlib.attribution import watermark
from provlib.models import TrainConfig, UNetConfig, build_unet, make_scheduler
from provlib.models.interface import DiffusionModel


def _perturbed(unet, scale=0.05):
    out = copy.deepcopy(unet)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn_like(p))
    return out


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    base = build_unet(UNetConfig(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4,
                                 num_class_embeds=10)).eval().requires_grad_(False)
    sched = make_scheduler(TrainConfig())
    return DiffusionModel("pixel", base, sched), DiffusionModel("pixel", _perturbed(base), sched), sched


def test_conf_is_the_share_of_keys_at_most_delta0():
    assert K.conf([0.1, 0.2, 0.3, 0.05], 0.15) == 0.5
    assert K.conf([0.1, 0.2, 0.3, 0.05], 0.2) == 0.75          # at delta_0 a key counts
    assert watermark.conf([1.0, 0.5, 0.75, 0.9], 0.75) == 0.75
    with pytest.raises(ValueError, match="non-empty"):
        K.conf([], 0.1)


def test_delta0_separates_shadow_distances_and_uses_no_test_model():
    innocent = [np.array([0.30, 0.35, 0.4]), np.array([0.32, 0.5])]
    infringing = [np.array([0.1, 0.2]), np.array([0.05, 0.15, 0.18])]
    d0 = K.choose_delta0(innocent, infringing)
    assert 0.2 <= d0 < 0.30
    assert all(K.conf(d, d0) == 1.0 for d in infringing) and all(K.conf(d, d0) == 0.0 for d in innocent)


def test_distance_lies_in_zero_one():
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    assert np.allclose(K.distance(x, x), 0)
    assert np.allclose(K.distance(-torch.ones(2, 1, 4, 4), torch.ones(2, 1, 4, 4)), 1.0)
    with pytest.raises(ValueError, match="shapes"):
        K.distance(x, x[:, :, :4])


def test_a_model_answers_its_own_generations_exactly_and_queries_are_seeded(models):
    base, source, sched = models
    keys = K.generation_keys(source, base, 4, labels=torch.arange(12) % 10, seed=3)
    assert keys.query == "seed" and len(keys.ids) == 4
    np.testing.assert_allclose(K.query(source, keys, seed=3), 0, atol=1e-6)   # the source itself
    d_base = K.query(base, keys, seed=3)
    all_base = K.distance(K.generate(base, torch.arange(12) % 10, np.arange(12), seed=3),
                          K.generate(source, torch.arange(12) % 10, np.arange(12), seed=3))
    np.testing.assert_allclose(d_base, np.sort(all_base)[::-1][:4], rtol=1e-5)      # the base's worst four
    assert keys.head(2).ids.tolist() == keys.ids[:2].tolist()
    with pytest.raises(ValueError, match="keys asked"):
        keys.head(5)


def test_reconstruction_keys_prefer_what_the_source_reconstructs_better(models):
    base, source, sched = models
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    y, ids = torch.arange(6) % 10, np.arange(100, 106)
    keys = K.training_keys(source, base, x, y, ids, 3, seed=1)
    gain = K.distance(K.reconstruct(base, x, y, ids, seed=1), x) - \
        K.distance(K.reconstruct(source, x, y, ids, seed=1), x)
    assert sorted(keys.ids.tolist()) == sorted(ids[np.argsort(-gain)[:3]].tolist())
    np.testing.assert_array_equal(K.query(base, keys, seed=1), K.query(base, keys, seed=1))
    small = K.reconstruct(base, x, y, ids, seed=1, t=2, steps=1)
    assert K.distance(small, x).max() < 0.05                                        # barely noised: comes back
    rnd = K.random_keys(x, y, ids, 4, seed=0)
    assert rnd.strategy == "random" and len(set(rnd.ids.tolist())) == 4


@pytest.fixture(scope="module")
def latent_models():
    from provlib import paths
    from provlib.models.interface import open_model

    base = open_model(paths.EMBEDDED_MODELS_DIR / "tiny-sd")
    torch.manual_seed(1)
    source = DiffusionModel("latent", _perturbed(base.unet), base.scheduler, pipeline=base.pipeline)
    return base, source


def test_text_to_image_keys_are_queried_with_their_prompt_and_seed(latent_models):
    base, source = latent_models
    prompts = ["a photo of a sneaker", "a photo of a bag", "a photo of a coat"] * 2
    keys = K.generation_keys(source, base, 3, labels=torch.tensor([7, 8, 4] * 2), prompts=prompts, seed=5)
    assert keys.prompts is not None and len(keys.prompts) == 3 and keys.images.shape[1:] == (1, 16, 16)
    assert all(keys.prompts[i] == prompts[k] for i, k in enumerate(keys.ids))   # each key keeps its own prompt
    np.testing.assert_allclose(K.query(source, keys, seed=5), 0, atol=1e-5)   # decoded images: the source's own
    d_base = K.query(base, keys, seed=5)
    assert (d_base > 1e-4).all()
    # the prompt is the condition: another prompt with the same seed answers differently
    other = K.KeySet("generation", "seed", keys.images, keys.labels, keys.ids, ["a photo of a dress"] * 3)
    assert not np.allclose(K.query(source, other, seed=5), 0, atol=1e-5)


def test_text_to_image_reconstruction_runs_in_the_latent_and_answers_images(latent_models):
    base, source = latent_models
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    prompts = ["a photo of a sneaker"] * 4
    keys = K.training_keys(source, base, x, torch.full((4,), 7), np.arange(4), 2, seed=1, prompts=prompts)
    assert keys.query == "reconstruct" and keys.prompts == ("a photo of a sneaker",) * 2
    answer = K.reconstruct(base, x, prompts, np.arange(4), seed=1, t=2, steps=1)
    assert answer.shape == x.shape and float(answer.abs().max()) <= 1
    # barely noised, the answer is the VAE's reconstruction: the same distance as encoding and decoding
    np.testing.assert_allclose(K.distance(answer, x), K.distance(base.from_space(base.to_space(x)), x), atol=0.02)
    with pytest.raises(ValueError, match="one string per key"):
        K.KeySet("random", "reconstruct", x, torch.zeros(4), np.arange(4), ["a"] * 3)
