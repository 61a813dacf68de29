"""Cost of every signal family on a latent text-to-image model and on two real architectures.

    python benchmarks/signal_families.py                      # sd1000, CIFAR-10 DDPM, SD 1.5 UNet; CPU (and CUDA if present)
    python benchmarks/signal_families.py --models sd1000 --devices cpu --repeats 5

Models: the shipped latent target ``sd1000`` (x0 = its 8x8x4 latent, each image
conditioned on its caption through its own text encoder), the CIFAR-10 DDPM UNet
(35.7 M parameters, 3x32x32) and Stable Diffusion 1.5's UNet (860 M parameters,
a 4x64x64 latent under a 77x768 text context), both built from their published
configurations with random weights (no download; the cost does not depend on the
weights).  For each signal family, the kernel the study runs, at one timestep
(SecMI: one t_sec with k = 10), over one batch: images per second (median of
``--repeats`` rounds after a warm-up; families interleaved in each round), the
ratio of its time to one forward pass of the same batch measured in the same
round (median over rounds), and the peak memory above the loaded model (CPU:
resident memory sampled every millisecond in a fresh subprocess; CUDA: max
allocated).  Prints one table per (model, device).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import torch

from provlib.attacks import gsa, pia, secmi, sima
from provlib.kernels.trajectory import trajectory_features
from provlib.paths import EMBEDDED_MODELS_DIR

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from trajectory_kernels import _rss, cifar10_ddpm  # noqa: E402  (the CIFAR-10 UNet and the memory sampler)

FAMILIES = ("forward", "loss", "loss+grad_x", "loss+grad_x+grad_theta", "sima", "pia", "secmi", "gsa1")
BATCH = {"sd1000": 64, "cifar10": 8, "sd15": 1}   # CPU batch sizes that fit the 24 GiB machine
T = 100   # the timestep of every family (SecMI's t_sec; the cost does not depend on it but for SecMI's k steps)


def sd1000():
    from provlib.models.interface import open_model
    m = open_model(EMBEDDED_MODELS_DIR / "sd1000")
    return m.unet, m.scheduler, m.space_shape, lambda n: m.condition([f"a photo of a {c}" for c in
                                                                      ("bag", "dress", "coat", "shirt")] * (n // 4 + 1))[:n]


def cifar10():
    unet, sched = cifar10_ddpm()
    return unet, sched, (3, 32, 32), lambda n: None


def sd15():
    """Stable Diffusion 1.5's UNet (runwayml/stable-diffusion-v1-5's unet/config.json), random weights."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8,
        norm_num_groups=32)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False)
    return unet.eval().requires_grad_(False), sched, (4, 64, 64), \
        lambda n: torch.randn(n, 77, 768, generator=torch.Generator().manual_seed(1))


MODELS = {"sd1000": sd1000, "cifar10": cifar10, "sd15": sd15}


def setup(model: str, device: str, batch: int):
    unet, sched, shape, condition = MODELS[model]()
    unet.to(device)
    x0 = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    if model == "cifar10":
        x0 = x0.clamp(-1, 1)
    cond = condition(batch)
    return unet, sched, x0.to(device), None if cond is None else cond.to(device)


def run_family(name: str, unet, sched, x0, cond, device: str) -> None:
    n, ids = len(x0), np.arange(len(x0))
    if name == "forward":
        with torch.no_grad():
            kw = {} if cond is None else {"encoder_hidden_states": cond}
            unet(x0, torch.full((n,), T, device=device), **kw).sample.sum().item()
    elif name.startswith("loss"):
        trajectory_features(unet, sched, x0, [T], seed=0, ids=ids, features=tuple(name.split("+")), batch_size=n,
                            device=device, cond=cond)
    elif name == "sima":
        sima.sima_norms(unet, sched, x0, [T], batch_size=n, device=device, cond=cond)
    elif name == "pia":
        pia.pia_distance(unet, sched, x0, [T], batch_size=n, device=device, cond=cond)
    elif name == "secmi":
        secmi.secmi_t_error(unet, sched, x0, [T], 10, batch_size=n, device=device, cond=cond)
    elif name == "gsa1":
        gsa.gsa_features(unet, sched, x0, [T], variant=1, seed=0, ids=ids, device=device, cond=cond)
    else:
        raise ValueError(name)
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_families(model: str, device: str, batch: int, repeats: int, families) -> dict:
    """Seconds per batch of each family, one entry per round (families interleaved in each round)."""
    unet, sched, x0, cond = setup(model, device, batch)
    for f in families:   # warm-up
        run_family(f, unet, sched, x0, cond, device)
    times = {f: [] for f in families}
    for _ in range(repeats):
        for f in families:
            t0 = time.perf_counter()
            run_family(f, unet, sched, x0, cond, device)
            times[f].append(time.perf_counter() - t0)
    return times


def _memory_child(model: str, device: str, batch: int, family: str) -> None:
    unet, sched, x0, cond = setup(model, device, batch)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_family(family, unet, sched, x0, cond, device)
        print((torch.cuda.max_memory_allocated() - base) / 2 ** 20)
        return
    base, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)
    sampler = threading.Thread(target=sample)
    sampler.start()
    run_family(family, unet, sched, x0, cond, device)
    done.set()
    sampler.join()
    print((max(peak[0], _rss()) - base) / 2 ** 20)


def peak_memory(model: str, device: str, batch: int, family: str) -> float:
    cmd = [sys.executable, __file__, "--memory-child", json.dumps([model, device, batch, family])]
    return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])


def table(model: str, device: str, batch: int, repeats: int, families) -> str:
    times = time_families(model, device, batch, repeats, families)
    rows = [f"### {model} on {device} (batch {batch}, {torch.get_num_threads()} threads, {repeats} rounds, t = {T})", "",
            "| family | images / s | ratio to a forward pass (median over rounds) | peak memory above the model (MiB) |",
            "|---|---|---|---|"]
    for f in families:
        ratio = statistics.median(a / b for a, b in zip(times[f], times["forward"]))
        rate = batch / statistics.median(times[f])
        rows.append(f"| {f} | {rate:.3g} | {ratio:.2f} | {peak_memory(model, device, batch, f):.0f} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None, help="one batch size for every model (default: BATCH)")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        _memory_child(*json.loads(args.memory_child))
        return
    for device in args.devices:
        for model in args.models:
            batch = args.batch or (BATCH[model] if device == "cpu" else 64)
            print(table(model, device, batch, args.repeats, FAMILIES), "\n", flush=True)


if __name__ == "__main__":
    main()
