"""`provlib fit` then `provlib verdict` on the shipped tiny latent text-to-image target, with caption files and a
LoRA in both shared formats (subprocesses, through the installed entry point)."""
from __future__ import annotations

import csv
import json

import pytest

from provlib.models.latent import dataset_captions
from provlib.paths import EMBEDDED_MODELS_DIR
from provlib.study import Run

from test_cli import run, write_pngs

TINY_SD = str(EMBEDDED_MODELS_DIR / "tiny-sd")


def captioned(images, labels, folder, prefix, fmt="csv"):
    """PNGs with a caption file (HF image-folder layout) naming each image's class caption."""
    paths = write_pngs(images, folder, prefix)
    texts = dataset_captions("fashion_mnist", labels)
    if fmt == "csv":
        with open(folder / "captions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file_name", "text"])
            w.writerows([p.name, t] for p, t in zip(paths, texts))
    else:
        (folder / "captions.jsonl").write_text("".join(json.dumps({"file_name": p.name, "text": t}) + "\n"
                                                       for p, t in zip(paths, texts)))
    return paths, texts


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent-cli")
    sets = Run.from_profile("tiny").target("tiny-sd").image_sets
    captioned(sets["member"].images[:12], sets["member"].labels[:12], root / "members", "m")
    captioned(sets["heldout"].images[:12], sets["heldout"].labels[:12], root / "reference", "h", fmt="jsonl")
    out = run("fit", "--model", TINY_SD, "--members", root / "members", "--reference", root / "reference",
              "--n-generated", 12, "--sampler-steps", 5, "--timestep-stride", 500, "--out", root / "probe", check_rc=0)
    return root, out


def test_fit_on_a_latent_pipeline_records_its_kind_and_each_kinds_conditioning(fitted):
    root, out = fitted
    meta = json.loads((root / "probe" / "probe.json").read_text())
    info = meta["info"]
    assert info["model_kind"] == "latent" and info["rows"]["member"] == 12
    assert info["conditioning"]["member"].startswith("captions: 12 images")
    assert info["conditioning"]["generated"].startswith("captions: 12 images")   # drawn from the members' prompts
    assert info["conditioning"][str(root / "reference")].startswith("captions: 12 images")
    from provlib.models.interface import open_model
    assert meta["fingerprint"] == open_model(TINY_SD).fingerprint   # the UNet, the VAE and the text encoder


def test_verdict_on_a_latent_pipeline_reads_each_images_caption(fitted, tmp_path):
    root, _ = fitted
    sets = Run.from_profile("tiny").target("tiny-sd").image_sets
    paths, texts = captioned(sets["member"].images[20:23], sets["member"].labels[20:23], tmp_path / "q", "x")
    out = run("verdict", "--model", TINY_SD, "--probe", root / "probe", "--json", "--max-fpr", "0.5", tmp_path / "q",
              check_rc=0)
    rows = json.loads(out.stdout)["images"]
    assert [r["prompt"] for r in rows] == texts
    assert all(r["verdict"] in ("member", "generated", "external") for r in rows)
    # --prompt conditions images without a caption file; the features follow the prompt
    (tmp_path / "q" / "captions.csv").unlink()
    other = run("verdict", "--model", TINY_SD, "--probe", root / "probe", "--json", "--prompt", "a photo of a bag",
                tmp_path / "q", check_rc=0)
    rows2 = json.loads(other.stdout)["images"]
    assert [r["prompt"] for r in rows2] == ["a photo of a bag"] * 3
    assert any(abs(a["p_member"] - b["p_member"]) > 1e-6 for a, b in zip(rows, rows2))


def test_a_caption_file_that_misses_members_is_named(tmp_path):
    sets = Run.from_profile("tiny").target("tiny-sd").image_sets
    paths, _ = captioned(sets["member"].images[:11], sets["member"].labels[:11], tmp_path / "m", "m")
    lines = (tmp_path / "m" / "captions.csv").read_text().splitlines()
    (tmp_path / "m" / "captions.csv").write_text("\n".join(lines[:-2]) + "\n")   # the last two images lose theirs
    out = run("fit", "--model", TINY_SD, "--members", tmp_path / "m", "--reference", "split:tiny-sd/heldout#11",
              "--out", tmp_path / "p")
    assert out.returncode == 1 and "no caption for 2 of the 11 images" in out.stderr and paths[-1].name in out.stderr


def test_a_prompt_for_a_pixel_model_is_a_usage_error(tmp_path):
    out = run("fit", "--model", EMBEDDED_MODELS_DIR / "tiny", "--prompt", "a photo of a bag", "--members", tmp_path,
              "--reference", tmp_path, "--out", tmp_path / "p")
    assert out.returncode == 2 and "--prompt" in out.stderr and "pixel-space" in out.stderr


def test_a_probe_refuses_the_model_with_a_lora_applied(fitted, tmp_path):
    """The LoRA changes the model: a probe fitted on the base refuses it (diffusers' format; the peft folder is
    checked against diffusers' load_lora_weights in test_latent)."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(TINY_SD, safety_checker=None, dtype=torch.float32)
    pipe.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights="gaussian"))
    torch.manual_seed(0)
    for name, p in pipe.unet.named_parameters():
        if "lora_B" in name:   # peft starts B at zero (a no-op adapter): a trained one has moved
            p.data.normal_(0, 0.1)
    StableDiffusionPipeline.save_lora_weights(tmp_path / "lora", unet_lora_layers=get_peft_model_state_dict(pipe.unet))
    root, _ = fitted
    sets = Run.from_profile("tiny").target("tiny-sd").image_sets
    write_pngs(sets["member"].images[:1], tmp_path / "q", "x")
    out = run("verdict", "--model", TINY_SD, "--lora", tmp_path / "lora" / "pytorch_lora_weights.safetensors",
              "--probe", root / "probe", tmp_path / "q")
    assert out.returncode == 1 and "fingerprint" in out.stderr


def test_an_image_of_the_wrong_size_for_the_vae_is_named(fitted, tmp_path):
    import numpy as np
    from PIL import Image

    root, _ = fitted
    (tmp_path / "q").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "q" / "big.png")
    out = run("verdict", "--model", TINY_SD, "--probe", root / "probe", tmp_path / "q")
    assert out.returncode == 3
    assert "big.png: image: 1 channel(s) of 28x28 pixels, but the model takes 1 channel(s) of 16x16" in out.stderr
