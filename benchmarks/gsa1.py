"""GSA_1's image gradients: one backward per image (GSA's code) against several images per backward (hooks).

    python benchmarks/gsa1.py                  # fm500 and sd1000, 24 images, 5 rounds (a few minutes)
    python benchmarks/gsa1.py --images 48 --rounds 7

GSA_1's feature is, per image, each layer's squared norm of the gradient of
the image's loss averaged over 10 timesteps
(:func:`provlib.kernels.trajectory.image_layer_grad_norms`).  ``autograd``
runs one ordinary backward per image through its 10 timestep rows (batch 10);
``hooks`` puts several images' rows in one backward (``batch_size`` rows) and
takes each image's per-layer norm from the layer hooks of
:mod:`provlib.kernels.persample`, an image's rows counted as one sample.  The
two are equal up to float32 rounding (``tests/test_trajectory.py``).  Both
methods run on the shipped models (``provlib/embedded/models``) at one torch
thread, on seeded inputs, alternated round by round; the table gives the median
milliseconds per image and the ratio autograd / hooks (> 1: hooks faster).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from provlib import paths
from provlib.attacks.gsa import TIMESTEPS
from provlib.kernels.trajectory import image_layer_grad_norms
from provlib.models.interface import open_model, quiet_loading

MODELS = ("fm500", "sd1000")
VARIANTS = {"autograd (1 image per backward)": {"method": "autograd"},
            "hooks, 96 rows per backward": {"method": "hooks", "batch_size": 96},
            "hooks, 160 rows per backward (the default)": {"method": "hooks", "batch_size": 160}}


def _inputs(name: str, n: int):
    with quiet_loading():
        model = open_model(paths.EMBEDDED_MODELS_DIR / name, device="cpu")
    x = torch.randn(n, *model.space_shape, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    cond = model.condition(prompts=["a photo of a sneaker"] * n) if model.kind == "latent" else None
    return model, x, cond


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"| model | variant | ms per image (median of {args.rounds}) | autograd / variant |")
    print("|---|---|---|---|")
    for name in MODELS:
        model, x, cond = _inputs(name, args.images)
        times = {v: [] for v in VARIANTS}
        for _ in range(args.rounds + 1):            # the first round warms up and is dropped
            for v, kw in VARIANTS.items():
                t0 = time.perf_counter()
                image_layer_grad_norms(model.unet, model.scheduler, x, TIMESTEPS, cond=cond, **kw)
                times[v].append((time.perf_counter() - t0) / args.images * 1e3)
        base = statistics.median(times[next(iter(VARIANTS))][1:])
        for v in VARIANTS:
            ms = statistics.median(times[v][1:])
            print(f"| {name} | {v} | {ms:.1f} | {base / ms:.2f} |")


if __name__ == "__main__":
    main()
