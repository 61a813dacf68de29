"""Cost of the trajectory features against the forward-pass floor.

    python benchmarks/trajectory_kernels.py                 # embedded model + CIFAR-10-size DDPM, CPU (and CUDA if present)
    python benchmarks/trajectory_kernels.py --models embedded --devices cpu --repeats 7

Prints one table per (model, device): time per sample-timestep (median of
``--repeats`` timed rounds after warm-up; each round runs every variant back to
back), its ratio to the forward-only floor (the median over rounds of the ratio
within a round, with its quartiles), and the peak memory of each variant (on
CPU: resident memory above the loaded model, sampled every millisecond in a
fresh subprocess; on CUDA: max allocated).

Variants: (a) forward only, no grad (the floor); (b) loss; (c) loss + grad_x;
(d) all three features, one backward with per-layer per-sample norms
(``method="hooks"``, the default); (d') all three with ``torch.func`` per-sample
gradients (``method="func"``); (e) a per-sample Python loop at batch size 1,
as the public GSA code runs.  Notes on what was tried: NOTES.md beside this file.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import threading
import time

import torch

from provlib.models import TrainConfig, UNetConfig, build_unet, load_model, make_scheduler
from provlib.paths import EMBEDDED_MODELS_DIR
from provlib.runtime import keep_freed_memory
from provlib.kernels.trajectory import reference_features, seeded_noise, trajectory_features

VARIANTS = ("a_forward", "b_loss", "c_loss_gradx", "d_all_hooks", "d_all_func", "e_loop")


def cifar10_ddpm():
    """The 35.7M-parameter CIFAR-10 DDPM of Ho et al. (google/ddpm-cifar10-32's config), random weights."""
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                       block_out_channels=(128, 256, 256, 256), norm_num_groups=32,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    return unet.eval().requires_grad_(False), make_scheduler(TrainConfig())


def embedded():
    path = EMBEDDED_MODELS_DIR / "cpu"
    if not (path / "model_index.json").exists():
        path = EMBEDDED_MODELS_DIR / "tiny"
    return load_model(path)


MODELS = {"embedded": embedded, "cifar10": cifar10_ddpm}


def setup(model: str, device: str, batch: int):
    unet, sched = MODELS[model]()
    unet.to(device)
    c, s = unet.config.in_channels, unet.config.sample_size
    images = torch.rand(batch, c, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1
    timesteps = [500]  # the cost does not depend on t: one timestep, ``batch`` rows
    noise = seeded_noise(range(batch), timesteps, (c, s, s), seed=0)
    return unet, sched, images, timesteps, noise


def run_variant(name: str, unet, sched, images, timesteps, noise, device: str) -> int:
    """Compute ``name`` over the batch (one timestep per image); return the number of sample-timesteps."""
    n = len(images)
    if name == "a_forward":
        with torch.no_grad():
            x, t = images.to(device), torch.full((n,), timesteps[0], device=device)
            unet(x, t).sample.sum().item()
        return n
    if name == "e_loop":
        loop_n = max(1, min(n, 8))
        reference_features(unet, sched, images[:loop_n].to(device), timesteps, noise[:loop_n].to(device))
        return loop_n
    feats = {"b_loss": ("loss",), "c_loss_gradx": ("loss", "grad_x")}.get(name, ("loss", "grad_x", "grad_theta"))
    method = "func" if name == "d_all_func" else "hooks"
    out = trajectory_features(unet, sched, images, timesteps, noise=noise, features=feats,
                              batch_size=n, device=device, method=method)
    out["loss"].sum().item()
    return n


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_variants(model: str, device: str, batch: int, repeats: int, variants) -> dict:
    """Seconds per sample-timestep of each variant, one entry per round (variants interleaved in each round)."""
    unet, sched, images, ts, noise = setup(model, device, batch)
    times = {v: [] for v in variants}
    for v in variants:  # warm-up
        run_variant(v, unet, sched, images, ts, noise, device)
    for _ in range(repeats):
        for v in variants:
            sync(device)
            t0 = time.perf_counter()
            n = run_variant(v, unet, sched, images, ts, noise, device)
            sync(device)
            times[v].append((time.perf_counter() - t0) / n)
    return times


def ratio_stats(times: dict, variant: str, floor: str = "a_forward") -> tuple[float, float, float]:
    """Median and quartiles over rounds of the per-round ratio variant / floor.

    Each round runs every variant back to back, so a ratio taken within a round
    cancels most of the machine's slow drifts; the quartiles show what is left.
    """
    r = sorted(v / f for v, f in zip(times[variant], times[floor]))
    q = statistics.quantiles(r, n=4) if len(r) > 1 else [r[0]] * 3
    return statistics.median(r), q[0], q[2]


def peak_memory(model: str, device: str, batch: int, variant: str) -> float:
    """MiB above the loaded model, for one run of ``variant`` (fresh subprocess on CPU)."""
    if device.startswith("cuda"):
        unet, sched, images, ts, noise = setup(model, device, batch)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_variant(variant, unet, sched, images, ts, noise, device)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    cmd = [sys.executable, __file__, "--_memory", json.dumps([model, device, batch, variant])]
    return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _memory_child(model: str, device: str, batch: int, variant: str) -> None:
    """Peak resident memory above the loaded model, sampled every millisecond while ``variant`` runs."""
    unet, sched, images, ts, noise = setup(model, device, batch)
    base, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    run_variant(variant, unet, sched, images, ts, noise, device)
    done.set()
    sampler.join()
    print(max(0, peak[0] - base) / 2**20)


def table(model: str, device: str, batch: int, repeats: int, variants) -> str:
    times = time_variants(model, device, batch, repeats, variants)
    rows = [f"### {model} on {device} (batch {batch}, {torch.get_num_threads()} threads, {repeats} rounds)",
            "", "| variant | ms / sample-timestep | ratio to (a) | ratio quartiles | peak memory MiB |",
            "|---|---:|---:|---:|---:|"]
    for v in variants:
        med, lo, hi = ratio_stats(times, v)
        rows.append(f"| {v} | {1e3 * statistics.median(times[v]):.3f} | {med:.2f} | {lo:.2f}-{hi:.2f} "
                    f"| {peak_memory(model, device, batch, v):.0f} |")
    if "e_loop" in times and "d_all_hooks" in times:
        med, lo, hi = ratio_stats(times, "e_loop", floor="d_all_hooks")
        rows.append(f"\nper-sample loop / hooks kernel: {med:.1f}x (quartiles {lo:.1f}-{hi:.1f})")
    return "\n".join(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    ap.add_argument("--batch", type=int, default=None, help="rows per batch (default: 64 embedded, 8 cifar10 on CPU)")
    ap.add_argument("--repeats", type=int, default=15, help="timed rounds")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--_memory", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    # as trajectory_features does on CPU; set first so that every variant, the floor included, runs with it
    kept = keep_freed_memory()
    if args._memory:
        return _memory_child(*json.loads(args._memory))
    variants = ["a_forward"] + [v for v in args.variants if v != "a_forward"]
    print(f"torch {torch.__version__}; malloc keeps freed memory (provlib.runtime): {kept}")
    for device in args.devices:
        for model in args.models:
            batch = args.batch or (64 if model == "embedded" else (8 if device == "cpu" else 64))
            print(table(model, device, batch, args.repeats, variants), "\n", flush=True)


if __name__ == "__main__":
    main()
