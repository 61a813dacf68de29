"""Latent text-to-image pipelines (Stable Diffusion layout) behind the one model interface."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from provlib.models import ModelSourceError
from provlib.models.interface import DiffusionModel, open_model
from provlib.models.latent import LatentConfig, build_pipeline, caption
from provlib.models.other import VAEConfig

CAPTIONS = [caption(k) for k in range(10)]
SMALL = LatentConfig(vae=VAEConfig(block_out_channels=(16, 32)), unet_channels=(16, 32), text_width=16, text_layers=1,
                     vocab_size=120)


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sd") / "pipe"
    build_pipeline(SMALL, CAPTIONS).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def model(pipeline_dir) -> DiffusionModel:
    return open_model(pipeline_dir)


def _images(n=3, seed=0):
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_tokenizer_reads_each_caption_word_by_word():
    pipe = build_pipeline(SMALL, CAPTIONS)
    tokens = pipe.tokenizer.convert_ids_to_tokens(pipe.tokenizer("a photo of an ankle boot").input_ids)
    assert tokens == ["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "an</w>", "ankle</w>", "boot</w>",
                      "<|endoftext|>"]
    assert caption(7) == "a photo of a sneaker" and caption(9) == "a photo of an ankle boot"


def test_diffusers_loads_the_pipeline_and_generates_from_a_prompt(pipeline_dir):
    from diffusers import StableDiffusionPipeline

    assert json.loads((pipeline_dir / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    pipe = StableDiffusionPipeline.from_pretrained(pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a photo of a sneaker", num_inference_steps=2, height=16, width=16, output_type="pt",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 1, 16, 16) and torch.isfinite(out).all()


def test_x0_is_the_scaled_posterior_mean_of_the_vae(model):
    x = _images()
    assert model.kind == "latent" and model.image_shape == (1, 16, 16) and model.space_shape == (4, 8, 8)
    with torch.no_grad():
        want = model.vae.encode(x).latent_dist.mean * model.vae.config.scaling_factor
    got = model.to_space(x, batch_size=2)
    assert got.shape == (3, 4, 8, 8) and torch.allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match=r"takes \(1, 16, 16\)"):
        model.to_space(torch.zeros(2, 3, 16, 16))


def test_the_condition_is_the_text_encoders_hidden_states_and_eps_reads_it(model):
    pipe = model.pipeline
    prompts = ["a photo of a bag", ""]
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        want = pipe.text_encoder(ids)[0]
    cond = model.condition(prompts)
    assert torch.allclose(cond, want, atol=1e-6)
    assert torch.equal(model.condition(n=2)[1], cond[1])               # None: the empty prompt
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 500])
    with torch.no_grad():
        assert torch.allclose(model.eps(z, t, cond), model.unet(z, t, encoder_hidden_states=want).sample, atol=1e-6)
    with pytest.raises(ValueError, match="needs its condition"):
        model.eps(z, t)
    with pytest.raises(ValueError, match="not class labels"):
        model.condition(labels=[1, 2])


def test_a_pixel_model_through_the_same_interface():
    from provlib.models import load_model, model_fingerprint
    from provlib.paths import EMBEDDED_MODELS_DIR

    tiny_model_dir = EMBEDDED_MODELS_DIR / "tiny"
    model = open_model(tiny_model_dir)
    unet, _ = load_model(tiny_model_dir)
    x = _images(2)
    assert model.kind == "pixel" and torch.equal(model.to_space(x), x) and model.condition() is None
    t = torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.equal(model.eps(x, t), unet(x, t).sample)
    assert model.fingerprint == model_fingerprint(unet)
    with pytest.raises(ValueError, match="no prompts"):
        model.condition(["a photo of a bag"])


def test_a_pipeline_of_another_kind_is_refused_naming_it(tmp_path):
    d = tmp_path / "other"
    d.mkdir()
    (d / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(ModelSourceError, match="StableDiffusionXLPipeline.*DDPMPipeline.*StableDiffusionPipeline"):
        open_model(d)


def test_a_lora_in_diffusers_format_and_as_a_peft_folder_gives_diffusers_eps(pipeline_dir, model, tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(pipeline_dir)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                     init_lora_weights=False))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    state = get_peft_model_state_dict(pipe.unet)
    StableDiffusionPipeline.save_lora_weights(tmp_path / "diffusers", unet_lora_layers=state)
    pipe.unet.save_pretrained(tmp_path / "peft_unet")   # the adapter as peft writes it
    reference = StableDiffusionPipeline.from_pretrained(pipeline_dir)
    reference.load_lora_weights(str(tmp_path / "diffusers"))          # diffusers' own, unfused
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([50, 400])
    cond = model.condition(["a photo of a coat", ""])
    with torch.no_grad():
        want = reference.unet(z, t, encoder_hidden_states=cond).sample
        base = model.eps(z, t, cond)
    assert not torch.allclose(want, base, atol=1e-4)                   # the adapter changes eps
    for lora in (tmp_path / "diffusers", tmp_path / "diffusers" / "pytorch_lora_weights.safetensors"):
        with torch.no_grad():
            got = open_model(pipeline_dir, lora=lora).eps(z, t, cond)
        assert torch.allclose(got, want, atol=1e-5)
    peft_dir = tmp_path / "peft"
    peft_dir.mkdir()
    pipe.unet.peft_config["default"].save_pretrained(peft_dir)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state.items()}, peft_dir / "adapter_model.safetensors")
    with torch.no_grad():
        got = open_model(pipeline_dir, lora=peft_dir).eps(z, t, cond)
    assert torch.allclose(got, want, atol=1e-5)


def test_the_command_line_reads_a_latent_pipeline_instead_of_calling_it_corrupt(pipeline_dir, tmp_path):
    """The model loads; what stops this call is the empty image folder, named (the whole fit on a latent model is
    tests/test_latent_cli.py)."""
    import subprocess
    import sys
    from pathlib import Path

    provlib = str(Path(sys.executable).parent / "provlib")
    out = subprocess.run([provlib, "fit", "--model", str(pipeline_dir), "--members", str(tmp_path),
                          "--reference", str(tmp_path), "--out", str(tmp_path / "probe")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    assert f"{tmp_path}: no image files" in out.stderr
    assert "corrupt" not in out.stderr and "Traceback" not in out.stderr


def test_training_fits_the_scaling_factor_and_lowers_the_loss(tmp_path):
    from diffusers import StableDiffusionPipeline

    from provlib.models.latent import LatentTrainConfig, train_latent

    g = torch.Generator().manual_seed(0)
    images = (torch.rand(32, 1, 16, 16, generator=g) > 0.5).float() * 2 - 1
    prompts = [caption(i % 3) for i in range(32)]
    small = LatentConfig(vae=VAEConfig(block_out_channels=(16, 32), epochs=2), unet_channels=(16, 32), text_width=16,
                         text_layers=1, vocab_size=120)
    cfg = LatentTrainConfig(model=small, epochs=6, batch_size=16, warmup_steps=2)
    pipe, history = train_latent(images, prompts, images, cfg, progress=False)
    assert len(history["vae"]) == 2 and len(history["unet"]) == 6 and history["unet"][-1] < history["unet"][0]
    with torch.no_grad():
        z = pipe.vae.encode(images).latent_dist.mean * pipe.vae.config.scaling_factor
    assert abs(float(z.std()) - 1) < 1e-3                      # the scaled latents have unit variance
    pipe.save_pretrained(tmp_path / "trained")
    again = open_model(tmp_path / "trained")
    assert again.vae.config.scaling_factor == pipe.vae.config.scaling_factor
    assert torch.allclose(again.to_space(images), z, atol=1e-5)
    assert StableDiffusionPipeline.from_pretrained(tmp_path / "trained").tokenizer("a photo of a trouser").input_ids


@pytest.mark.parametrize("method", ["hooks", "func"])
def test_trajectory_features_on_a_latent_model_match_a_float64_loop(model, method):
    import copy

    from provlib.kernels.trajectory import FEATURES, reference_features, seeded_noise, trajectory_features

    unet = copy.deepcopy(model.unet)
    torch.manual_seed(0)
    with torch.no_grad():                      # away from the zero-initialised output layer: every gradient alive
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    z0 = model.to_space(_images(4))
    cond = model.condition([caption(k) for k in (0, 3, 9)] + [""])
    ts = [0, 40, 500, 999]
    noise = seeded_noise(range(4), ts, z0.shape[1:], seed=2)
    got = trajectory_features(unet, model.scheduler, z0, ts, noise=noise, batch_size=5, method=method, cond=cond)
    double = copy.deepcopy(unet).double().requires_grad_(False)
    ref = reference_features(double, model.scheduler, z0.double(), ts, noise.double(), cond=cond.double())
    for f in FEATURES:
        torch.testing.assert_close(got[f].double(), ref[f], rtol=2e-4, atol=1e-6)
    # the caption matters: the empty prompt gives other features
    empty = trajectory_features(unet, model.scheduler, z0, ts, noise=noise, features=("loss",),
                                cond=model.condition(n=4))
    assert not torch.allclose(empty["loss"][:3], got["loss"][:3])


def test_sima_pia_and_the_t_error_on_a_latent_model_match_a_float64_loop_per_image(model):
    import copy

    from provlib.attacks import pia_distance, sima_norms
    from provlib.kernels.ddim import t_errors

    unet = copy.deepcopy(model.unet)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    z0 = model.to_space(_images(3, seed=4))
    cond = model.condition([caption(1), caption(5), ""])
    double = copy.deepcopy(unet).double()
    families = {
        "sima": lambda u, x, c, b: torch.stack(list(sima_norms(u, model.scheduler, x, [0, 100], cond=c,
                                                               batch_size=b).values())),
        "pia": lambda u, x, c, b: pia_distance(u, model.scheduler, x, [50, 200], cond=c, batch_size=b),
        "t_error": lambda u, x, c, b: t_errors(u, model.scheduler, x, [20, 40], 10, cond=c, batch_size=b),
    }
    for name, f in families.items():
        got = f(unet, z0, cond, 3).double()
        loop = torch.cat([f(double, z0[i:i + 1].double(), cond[i:i + 1].double(), 1) for i in range(3)], dim=-2 if
                         name == "sima" else 0)
        torch.testing.assert_close(got, loop.double(), rtol=2e-4, atol=1e-6, msg=name)
        other = f(unet, z0, model.condition(n=3), 3).double()        # the empty prompt for every image
        assert not torch.allclose(other, got), name
    with pytest.raises(ValueError, match="one condition per image"):
        pia_distance(unet, model.scheduler, z0, 50, cond=cond[:2])


def test_every_signal_column_on_a_latent_model_follows_its_condition(model):
    from provlib.detector.columns import values

    cols = [("loss", 0), ("grad_x", 100), ("grad_theta", 100), ("sima_l2", 20), ("sima_l4", 20), ("pia", 50),
            ("secmi", 30)]
    z0 = model.to_space(_images(2, seed=6))
    cond = model.condition([caption(2), caption(8)])
    both = values(model.unet, model.scheduler, z0, cols, cond=cond)
    one = values(model.unet, model.scheduler, z0[1:], cols, ids=[1], cond=cond[1:])
    assert both.shape == (2, len(cols)) and np.isfinite(both).all()
    np.testing.assert_allclose(one[0], both[1], rtol=1e-4)        # an image's columns do not depend on its batch


def test_gsa1_image_gradients_on_a_latent_model_follow_each_images_caption(model):
    from provlib.kernels.trajectory import image_layer_grad_norms

    z0 = model.to_space(_images(2, seed=7))
    cond = model.condition([caption(4), caption(6)])
    both = image_layer_grad_norms(model.unet, model.scheduler, z0, [10, 300], cond=cond)
    second = image_layer_grad_norms(model.unet, model.scheduler, z0[1:], [10, 300], ids=[1], cond=cond[1:])
    torch.testing.assert_close(second[0], both[1], rtol=1e-4, atol=1e-10)
    empty = image_layer_grad_norms(model.unet, model.scheduler, z0, [10, 300], cond=model.condition(n=2))
    assert both.shape == empty.shape and not torch.allclose(both, empty)
    # the batched hooks (both images in one backward) against one ordinary backward per image
    loop = image_layer_grad_norms(model.unet, model.scheduler, z0, [10, 300], cond=cond, method="autograd")
    torch.testing.assert_close(both, loop, rtol=1e-3, atol=1e-10)


def test_the_sampler_under_a_text_condition_is_diffusers_own_ddim_sampling(pipeline_dir, model):
    """provlib's DDIM sampler with each sample's prompt and seeded noise = StableDiffusionPipeline from the same
    initial latents (guidance scale 1: one conditional prediction), decoded by the same VAE; and a sample does
    not depend on the batch it is drawn in."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from provlib.sampling import sample
    from provlib.seeds import noise_seed

    prompts = [caption(7), caption(2), ""]
    cond = model.condition(prompts)
    got = sample(model.unet, model.scheduler, 3, method="ddim", num_inference_steps=5, seed=3, ids=[4, 5, 6],
                 cond=cond, batch_size=2)
    alone = sample(model.unet, model.scheduler, 1, method="ddim", num_inference_steps=5, seed=3, ids=[5],
                   cond=cond[1:2])
    torch.testing.assert_close(alone[0], got[1], atol=1e-5, rtol=0)
    pipe = StableDiffusionPipeline.from_pretrained(pipeline_dir, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    for i, (p, sid) in enumerate(zip(prompts, [4, 5, 6])):
        x_T = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(noise_seed(3, sid, -1)))
        want = pipe(p, num_inference_steps=5, guidance_scale=1.0, latents=x_T, output_type="latent").images
        torch.testing.assert_close(got[i:i + 1], want, atol=1e-4, rtol=1e-4)
    images = model.generate(3, prompts=prompts, method="ddim", num_inference_steps=5, seed=3, ids=[4, 5, 6])
    with torch.no_grad():
        decoded = model.vae.decode(got / model.vae.config.scaling_factor).sample.clamp(-1, 1)
    torch.testing.assert_close(images, decoded, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="samples under a condition"):
        sample(model.unet, model.scheduler, 2, num_inference_steps=2)
