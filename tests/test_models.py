
import pytest
import torch

from provlib.models import TrainConfig, UNetConfig, build_unet, load_model, save_model, train_ddpm
from provlib.sampling import sample

SMALL = TrainConfig(unet=UNetConfig(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4),
                    epochs=4, batch_size=8, warmup_steps=2)


@pytest.fixture(scope="module")
def images():
    return torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_training_reduces_the_loss_and_resumes_exactly(images, tmp_path):
    unet, sched, history = train_ddpm(images, SMALL, progress=False)
    assert len(history) == SMALL.epochs
    ck = tmp_path / "state.pt"
    half = TrainConfig(**{**SMALL.__dict__, "epochs": 2})
    train_ddpm(images, half, checkpoint=ck, checkpoint_every=1, progress=False)  # "interrupted" after 2 epochs
    resumed, _, history2 = train_ddpm(images, SMALL, checkpoint=ck, checkpoint_every=1, progress=False)
    assert history2 == pytest.approx(history, rel=1e-5)
    for a, b in zip(unet.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_save_and_load_a_local_directory_in_diffusers_format(images, tmp_path):
    unet, sched, _ = train_ddpm(images, TrainConfig(**{**SMALL.__dict__, "epochs": 1}), progress=False)
    save_model(unet, sched, tmp_path / "m", info={"note": "test"})
    assert (tmp_path / "m" / "model_index.json").exists()
    assert (tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    unet2, sched2 = load_model(tmp_path / "m")
    x, t = images[:2], torch.tensor([10, 500])
    torch.testing.assert_close(unet2(x, t).sample, unet(x, t).sample)
    assert sched2.config.num_train_timesteps == 1000
    # a bare UNet folder (config.json + weights) loads with the schedule the caller names, never a default
    with pytest.raises(ValueError, match="bare UNet.*no noise schedule"):
        load_model(tmp_path / "m" / "unet")
    unet3, sched3 = load_model(tmp_path / "m" / "unet", scheduler=sched)
    torch.testing.assert_close(unet3(x, t).sample, unet(x, t).sample)
    assert sched3 is sched
    # and diffusers' own pipeline class reads what we wrote, as it reads a hub checkpoint
    from diffusers import DDPMPipeline
    assert isinstance(DDPMPipeline.from_pretrained(tmp_path / "m").unet, type(unet))


def test_missing_or_corrupt_checkpoints_get_clear_errors(images, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no diffusers UNet"):
        load_model(tmp_path / "empty")
    unet = build_unet(SMALL.unet)
    unet.save_pretrained(tmp_path / "bad")
    (tmp_path / "bad" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt"):
        load_model(tmp_path / "bad")


def test_training_rejects_images_of_the_wrong_shape(images):
    with pytest.raises(ValueError, match="UNet expects"):
        train_ddpm(images[:, :, :4, :4], SMALL, progress=False)


def test_samplers_are_batch_invariant_and_in_range(images):
    unet, sched, _ = train_ddpm(images, TrainConfig(**{**SMALL.__dict__, "epochs": 1}), progress=False)
    for method in ("ddpm", "ddim"):
        a = sample(unet, sched, 5, method=method, num_inference_steps=10, batch_size=5)
        b = sample(unet, sched, 5, method=method, num_inference_steps=10, batch_size=2)
        assert a.shape == (5, 1, 8, 8) and a.min() >= -1 and a.max() <= 1
        # equal up to float32 rounding of differently blocked convolutions, which DDIM's x0
        # prediction (a division by sqrt(abar_t) ~ 0.006 at t = 999) amplifies ~150x; a wrong noise
        # stream per sample would differ by O(1)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(unet, sched, 2, method="euler")


def test_hub_ids_resolve_through_the_hub_cache(images, tmp_path):
    """A hub id such as google/ddpm-cifar10-32 goes through diffusers' hub resolution; here the
    hub cache is pre-filled (no network), exactly as a previous download would have left it."""
    import shutil
    unet, sched, _ = train_ddpm(images, TrainConfig(**{**SMALL.__dict__, "epochs": 1}), progress=False)
    save_model(unet, sched, tmp_path / "m")
    revision = "0" * 40
    repo = tmp_path / "hub" / "models--someone--tiny-ddpm"
    shutil.copytree(tmp_path / "m", repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    unet2, sched2 = load_model("someone/tiny-ddpm", cache_dir=tmp_path / "hub", local_files_only=True)
    x, t = images[:2], torch.tensor([3, 300])
    torch.testing.assert_close(unet2(x, t).sample, unet(x, t).sample)
