"""Instance-level attribution: distances, queries, key strategies, delta_0 and conf on hand-checkable cases."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from provlib.attribution import keys as K
from provlib.attribution import watermark
from provlib.models import TrainConfig, UNetConfig, build_unet, make_scheduler


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    base = build_unet(UNetConfig(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4,
                                 num_class_embeds=10)).eval().requires_grad_(False)
    source = copy.deepcopy(base)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return base, source, make_scheduler(TrainConfig())


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
    keys = K.generation_keys(source, base, sched, 4, candidates=12, num_classes=10, seed=3)
    assert keys.query == "seed" and len(keys.ids) == 4
    np.testing.assert_allclose(K.query(source, sched, keys, seed=3), 0, atol=1e-6)   # the source itself
    d_base = K.query(base, sched, keys, seed=3)
    all_base = K.distance(K.generate(base, sched, torch.arange(12) % 10, np.arange(12), seed=3, device="cpu"),
                          K.generate(source, sched, torch.arange(12) % 10, np.arange(12), seed=3, device="cpu"))
    np.testing.assert_allclose(d_base, np.sort(all_base)[::-1][:4], rtol=1e-5)      # the base's worst four
    assert keys.head(2).ids.tolist() == keys.ids[:2].tolist()
    with pytest.raises(ValueError, match="keys asked"):
        keys.head(5)


def test_reconstruction_keys_prefer_what_the_source_reconstructs_better(models):
    base, source, sched = models
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    y, ids = torch.arange(6) % 10, np.arange(100, 106)
    keys = K.training_keys(source, base, sched, x, y, ids, 3, seed=1)
    gain = K.distance(K.reconstruct(base, sched, x, y, ids, seed=1), x) - \
        K.distance(K.reconstruct(source, sched, x, y, ids, seed=1), x)
    assert sorted(keys.ids.tolist()) == sorted(ids[np.argsort(-gain)[:3]].tolist())
    np.testing.assert_array_equal(K.query(base, sched, keys, seed=1), K.query(base, sched, keys, seed=1))
    small = K.reconstruct(base, sched, x, y, ids, seed=1, t=2, steps=1)
    assert K.distance(small, x).max() < 0.05                                        # barely noised: comes back
    rnd = K.random_keys(x, y, ids, 4, seed=0)
    assert rnd.strategy == "random" and len(set(rnd.ids.tolist())) == 4
