"""The attribution study's text-to-image setting: captions, pools, releases with prompts, diffusers LoRA suspects."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from provlib import paths
from provlib.data import reencode
from provlib.models.interface import open_model
from provlib.models.latent import LatentTrainConfig
from provlib.models.lora import ATTENTION_PROJECTIONS, LoraTrainConfig
from provlib.study import suspects_text as T

TINY_SD = paths.EMBEDDED_MODELS_DIR / "tiny-sd"


@pytest.fixture
def small(monkeypatch, tmp_path):
    """The setting's recipe at a few seconds' size on the tiny text-to-image pipeline, shipping into tmp_path."""
    monkeypatch.setattr(T, "base_dir", lambda: TINY_SD)
    monkeypatch.setattr(T, "SOURCE_TRAIN", LatentTrainConfig(epochs=1, batch_size=16, warmup_steps=1))
    monkeypatch.setattr(T, "POOLS", {"sd-src-a": ("fashion_mnist", 20), "real": ("fashion_mnist", 40),
                                     "sd-src-b": ("mnist", 20)})
    monkeypatch.setattr(T, "RELEASE", {"n": 30, "method": "ddim", "steps": 3})
    monkeypatch.setattr(T, "N_SUSPECT", 20)
    monkeypatch.setattr(T, "SUSPECT_TRAIN", LoraTrainConfig(target_modules=ATTENTION_PROJECTIONS, epochs=1,
                                                            batch_size=10))
    for name in ("EMBEDDED_MODELS_DIR", "EMBEDDED_SUSPECTS_DIR", "EMBEDDED_RELEASES_DIR"):
        monkeypatch.setattr(paths, name, tmp_path / name)
    T.pools.cache_clear()
    T._base_fingerprint.cache_clear()
    yield
    T.pools.cache_clear()
    T._base_fingerprint.cache_clear()


def test_the_registry_has_disjoint_shadow_and_test_models_at_every_rho():
    for source in T.SOURCES:
        for role in T.ROLES:
            models = T.suspects_of(source, role)
            assert [m.rho for m in models] == [r for r in T.RHOS for _ in range(T.PER_ROLE)]
        names = {r: {m.name for m in T.suspects_of(source, r)} for r in T.ROLES}
        assert not names["shadow"] & names["test"]
    assert len(T.SUSPECTS) == 2 * T.PER_ROLE * (1 + len(T.SOURCES) * (len(T.RHOS) - 1)) >= 5 * 2 * 5
    with pytest.raises(ValueError, match="unknown text-to-image suspect"):
        T.get_suspect("fmc-innocent-test0")


def test_captions_name_the_class_and_a_size_word_the_base_can_read():
    x, y, caps = T.pool_images("sd-src-b")
    assert len(caps) == len(x) == 1000
    assert {c for c in caps if "seven" in c} == {"a photo of a digit seven", "a photo of a little digit seven",
                                                 "a photo of a large digit seven"}
    words = [("little" in c) - ("large" in c) for c in caps]
    assert 0.25 < np.mean(np.equal(words, 1)) < 0.42 and 0.25 < np.mean(np.equal(words, -1)) < 0.42   # thirds
    # every prompt of the setting is tokenized by the base without an unknown piece
    tok = open_model(T.base_dir()).pipeline.tokenizer
    for ds in ("fashion_mnist", "mnist"):
        for p in set(T.prompt_grid(30, ds)[1]):
            ids = tok(p).input_ids
            assert ids.count(tok.eos_token_id) == 1 and len(ids) <= tok.model_max_length, p


def test_pools_are_disjoint_from_each_other_and_from_every_split_of_the_base():
    m = T.pools(0)
    used = T._base_splits()
    for name, (ds, n) in T.POOLS.items():
        idx = set(m.indices[name].tolist())
        assert len(idx) == n and not idx & used.get(ds, set())
    assert not set(m.indices["sd-src-a"].tolist()) & set(m.indices["real"].tolist())


def test_suspects_train_on_prompt_image_pairs_and_ship_as_diffusers_loras(small):
    T.embed_all(names=["sd-src-a-r050-shadow0", "sd-innocent-test1"], progress=False)
    images, labels, prompts = T.release("sd-src-a", progress=False)
    assert images.shape == (30, 1, 16, 16) and torch.equal(images, reencode(images, "png"))
    assert prompts == T.prompt_grid(30, "fashion_mnist")[1] and prompts[2] == "a photo of a little pullover" and prompts[12] == "a photo of a pullover"
    d = T.suspect_data("sd-src-a-r050-shadow0")
    assert d["generated"].sum() == 10 and len(d["images"]) == len(d["prompts"]) == 20
    torch.testing.assert_close(d["images"][:10], images[d["release_index"]])
    assert d["prompts"][:10] == [prompts[i] for i in d["release_index"]]      # each release image with its prompt
    shipped = paths.EMBEDDED_SUSPECTS_DIR / "sd-src-a-r050-shadow0"
    assert sorted(p.name for p in shipped.iterdir()) == ["provlib.json", T.LORA_FILE]
    assert T.suspect_dir("sd-src-a-r050-shadow0") == shipped                   # matches: nothing retrained
    # diffusers' own loader reads the file, and the fused suspect differs from the base
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(TINY_SD, safety_checker=None, requires_safety_checker=False)
    pipe.load_lora_weights(str(shipped), weight_name=T.LORA_FILE)
    suspect, base = T.model("sd-src-a-r050-shadow0"), T.model(T.BASE)
    z, t = torch.randn(2, *base.space_shape), torch.tensor([10, 400])
    cond = base.condition(prompts[:2])
    with torch.no_grad():
        assert not torch.allclose(suspect.eps(z, t, cond), base.eps(z, t, cond))
        torch.testing.assert_close(pipe.unet(z, t, encoder_hidden_states=cond).sample, suspect.eps(z, t, cond),
                                   atol=1e-4, rtol=1e-4)
    source = T.model("sd-src-a")
    assert source.fingerprint != base.fingerprint and source.vae is not None


def test_every_shipped_model_of_the_setting_matches_its_configuration():
    """Sources, releases and all 90 LoRAs are shipped: no study run trains them.  A source keeps the base's VAE,
    tokenizer and text encoder byte for byte (only its UNet was fine-tuned)."""
    from provlib.study.targets import embedded_model_dir

    for name in T.SOURCES:
        d = T.source_dir(name)
        assert d == embedded_model_dir(name)
        for part in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                     "tokenizer/tokenizer.json"):
            assert (d / part).read_bytes() == (T.base_dir() / part).read_bytes(), part
        assert T.embedded_release_path(name).exists()
    for name in sorted(T.SUSPECTS):
        assert T.suspect_dir(name) == T.embedded_suspect_dir(name), name
