"""Wall time of the embedded study's feature step, per kernel, side by side.

    python benchmarks/feature_step.py --profile cpu --split member

Runs the trajectory features of one split of a profile (its grid, its batch
size) with ``method="func"`` (per-sample gradients by torch.func) and
``method="hooks"`` (the default kernel), alternating, ``--repeats`` times, and
prints the median wall time of each and their ratio.  No cache is used.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from provlib import study
from provlib.kernels.trajectory import trajectory_features


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--split", default="member", choices=["member", "heldout", "external"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    target = study.Run.from_profile(args.profile).target()
    images = target.image_sets[args.split]
    unet, scheduler = target.load()
    grid = target.run.grid
    times = {"func": [], "hooks": []}
    for _ in range(args.repeats):
        for method in times:
            t0 = time.perf_counter()
            trajectory_features(unet, scheduler, images.images, grid, ids=images.ids, method=method)
            times[method].append(time.perf_counter() - t0)
    rows = len(images) * len(grid)
    print(f"profile {args.profile}, split {args.split}: {len(images)} images x {len(grid)} timesteps = {rows} rows, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    for method, ts in times.items():
        print(f"  {method:6s} {statistics.median(ts):8.1f} s   ({1e3 * statistics.median(ts) / rows:.2f} ms/row)")
    print(f"  func / hooks: {statistics.median(times['func']) / statistics.median(times['hooks']):.2f}x")


if __name__ == "__main__":
    main()
