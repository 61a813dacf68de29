"""The attribution study's models: class-conditional DDPMs, watermarked releases, LoRA suspects (small sizes)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from provlib import paths
from provlib.attribution import watermark
from provlib.data import load_embedded, reencode
from provlib.models import TrainConfig, UNetConfig
from provlib.models.lora import LoraTrainConfig
from provlib.study import suspects as S


@pytest.fixture
def small(monkeypatch, tmp_path):
    """The study's recipe at a few seconds' size, shipping into a temporary folder."""
    unet = UNetConfig(block_out_channels=(16, 32), num_class_embeds=10)
    monkeypatch.setattr(S, "BASE_TRAIN", TrainConfig(unet=unet, epochs=1, batch_size=32, warmup_steps=1))
    monkeypatch.setattr(S, "SOURCE_TRAIN", TrainConfig(unet=unet, epochs=1, batch_size=32, warmup_steps=1))
    monkeypatch.setattr(S, "POOLS", {"base": (S.DATASET, 40), "fmc-src-a": (S.DATASET, 20), "real": (S.DATASET, 60),
                                     "fmc-src-b": ("mnist", 20)})
    monkeypatch.setattr(S, "RELEASE", {"n": 30, "method": "ddim", "steps": 3})
    monkeypatch.setattr(S, "N_SUSPECT", 20)
    monkeypatch.setattr(S, "SUSPECT_TRAIN", LoraTrainConfig(epochs=1, batch_size=10))
    for name in ("EMBEDDED_MODELS_DIR", "EMBEDDED_SUSPECTS_DIR", "EMBEDDED_RELEASES_DIR"):
        monkeypatch.setattr(paths, name, tmp_path / name)
    S.pools.cache_clear()
    yield
    S.pools.cache_clear()


def test_the_registry_has_disjoint_shadow_and_test_models_at_every_rho():
    for source in S.SOURCES:
        for role in S.ROLES:
            models = S.suspects_of(source, role)
            assert [m.rho for m in models] == [r for r in S.RHOS for _ in range(S.PER_ROLE)]
            assert all(m.role == role for m in models)
        names = {r: {m.name for m in S.suspects_of(source, r)} for r in S.ROLES}
        assert not names["shadow"] & names["test"]
    assert len(S.SUSPECTS) == 2 * S.PER_ROLE * (1 + len(S.SOURCES) * (len(S.RHOS) - 1))
    with pytest.raises(ValueError, match="unknown suspect"):
        S.get_suspect("nope")


def test_pools_are_disjoint_draws():
    m = S.pools(0)
    for ds in {d for d, _ in S.POOLS.values()}:
        idx = [set(m.indices[k].tolist()) for k, (d, _) in S.POOLS.items() if d == ds]
        assert sum(map(len, idx)) == len(set().union(*idx)) == sum(n for d, n in S.POOLS.values() if d == ds)
    assert {k: len(v) for k, v in m.indices.items()} == {k: n for k, (_, n) in S.POOLS.items()}
    x, y = S.pool_images("fmc-src-b")
    assert x.shape == (1000, 1, S.SIZE, S.SIZE) and set(y.tolist()) == set(range(10))   # MNIST digits
    with pytest.raises(ValueError, match="unknown pool"):
        S.pool_images("fmc-src-c")


def test_suspects_train_on_rho_of_a_watermarked_release_and_ship_in_peft_format(small):
    S.embed_all(names=["fmc-src-a-r050-shadow0", "fmc-innocent-test1"], progress=False)
    images, labels = S.release("fmc-src-a", progress=False)
    assert images.shape == (30, 1, 16, 16) and torch.equal(labels, torch.arange(30) % 10)
    assert torch.equal(images, reencode(images, "png"))                       # 8-bit, as shipped
    own = watermark.bit_accuracy(images, S.watermark_key("fmc-src-a")).mean()   # untrained: saturated noise,
    assert own > watermark.bit_accuracy(images, S.watermark_key("fmc-src-b")).mean() + 0.05  # clamping costs bits
    d = S.suspect_data("fmc-src-a-r050-shadow0")
    assert d["generated"].sum() == 10 and len(d["images"]) == 20
    torch.testing.assert_close(d["images"][:10], images[d["release_index"]])
    assert S.suspect_data("fmc-innocent-test1")["generated"].sum() == 0
    shipped = paths.EMBEDDED_SUSPECTS_DIR / "fmc-src-a-r050-shadow0"
    assert sorted(p.name for p in shipped.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                          "provlib.json"]
    assert S.suspect_dir("fmc-src-a-r050-shadow0") == shipped                 # matches: nothing retrained
    unet, _ = S.load("fmc-src-a-r050-shadow0")
    base, _ = S.load(S.BASE)
    x, t, y = images[:2], torch.tensor([10, 400]), labels[:2]
    with torch.no_grad():
        assert not torch.equal(unet(x, t, class_labels=y).sample, base(x, t, class_labels=y).sample)


def test_the_watermark_reads_back_on_marked_images_and_is_chance_on_clean_ones():
    x = load_embedded("fashion_mnist").images[:200]
    marked = watermark.embed(x, 7)
    assert watermark.bit_accuracy(marked, 7).mean() > 0.97
    assert watermark.bit_accuracy(reencode(marked, "png"), 7).mean() > 0.97
    assert abs(watermark.bit_accuracy(x, 7).mean() - 0.5) < 0.06
    assert abs(watermark.bit_accuracy(marked, 8).mean() - 0.5) < 0.06        # another key reads nothing
    with pytest.raises(ValueError, match="32 values"):
        watermark.embed(x, 7, bits=np.zeros(5))


def test_every_shipped_model_of_the_study_matches_its_configuration():
    """Base, sources, releases and all suspects are shipped: no study run trains them."""
    from provlib.study.targets import embedded_model_dir

    for name in (S.BASE, *S.SOURCES):
        assert S.model_dir(name) == embedded_model_dir(name)
    for name in sorted(S.SUSPECTS):
        assert S.suspect_dir(name) == S.embedded_suspect_dir(name), name
