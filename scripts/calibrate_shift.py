"""Calibrate the subtle-shift setting: how well the model-blind CNN tells each candidate acquisition
pipeline from the study's own, on Fashion-MNIST images that no shipped target evaluates.

    python scripts/calibrate_shift.py            # writes benchmarks/shift_calibration.md

*Tracing the Roots* measures membership attacks on CelebA-HQ members against FFHQ non-members, where a
classifier that never touches the model reaches 94.4 AUC: a shift in acquisition (alignment, crop,
resampling, tone), not in content.  The candidates below change one or two of those steps of our
pipeline (28 x 28 Fashion-MNIST to 16 x 16, antialiased bilinear).  The blind CNN (the study's,
``provlib.attacks.blind``, same recipe) is trained on half of a set of default-pipeline images and
half of a disjoint set of candidate-pipeline images, and scored on the other halves; the setting
needs a candidate clearly above chance and clearly below the ceiling.  The images are drawn from the
Fashion-MNIST rows outside every shipped target's splits at seed 0, so the choice never saw an image
the study evaluates.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from provlib import acquisition, data, metrics
from provlib.attacks import blind_scores
from provlib.study.targets import TARGETS, target_manifest

CANDIDATES = {
    "default (bilinear, antialiased; control)": acquisition.DEFAULT_ACQUISITION,
    "gamma 0.8": acquisition.Acquisition(gamma=0.8),
    "gamma 0.7": acquisition.Acquisition(gamma=0.7),
    "crop 27 (zoom 1.04)": acquisition.Acquisition(crop=27),
    "crop 26 (zoom 1.08)": acquisition.Acquisition(crop=26),
    "bicubic, no antialiasing": acquisition.Acquisition(kernel="bicubic"),
}
N = 1000   # images per class and half


def unused_rows(seed: int = 0) -> np.ndarray:
    """Fashion-MNIST rows in no split of any shipped Fashion-MNIST target at ``seed``."""
    used = set()
    for config in TARGETS.values():
        if config.dataset == "fashion_mnist" and not config.name.startswith("tiny"):
            m = target_manifest(config, seed)
            used |= {int(i) for split, idx in m.indices.items() if m.datasets[split] == "fashion_mnist" for i in idx}
    n = len(data.load_embedded("fashion_mnist").images)
    return np.array(sorted(set(range(n)) - used))


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rows = np.random.default_rng(12345).permutation(unused_rows())
    if len(rows) < 4 * N:
        raise SystemExit(f"only {len(rows)} unused rows; need {4 * N}")
    a_rows, b_rows = rows[:2 * N], rows[2 * N:4 * N]
    default = acquisition.reacquire("fashion_mnist", a_rows, 16, acquisition.DEFAULT_ACQUISITION)
    lines = [f"# Subtle-shift calibration (scripts/calibrate_shift.py)", "",
             f"Model-blind CNN (provlib.attacks.blind, its recipe) trained on {N} default-pipeline and {N} "
             f"candidate-pipeline Fashion-MNIST images, scored on {N} + {N} others; every image from the "
             f"{len(rows)} rows outside every shipped target's splits (seed 0). AUC with a 95% bootstrap "
             "interval (1000 resamples). One thread.", "",
             "| candidate pipeline | blind CNN AUC | 95% interval | seconds |", "|---|---|---|---|"]
    for name, acq in CANDIDATES.items():
        t0 = time.perf_counter()
        other = acquisition.reacquire("fashion_mnist", b_rows, 16, acq)
        X_tr, X_ev = torch.cat([default[:N], other[:N]]), torch.cat([default[N:], other[N:]])
        y = np.r_[np.zeros(N, int), np.ones(N, int)]
        s = blind_scores(X_tr, y, X_ev, seed=0)
        a = metrics.auc(y, s)
        lo, hi = metrics.bootstrap_ci(metrics.auc, y, s, n_boot=1000, seed=0)
        lines.append(f"| {name} | {a:.3f} | [{lo:.3f}, {hi:.3f}] | {time.perf_counter() - t0:.0f} |")
        print(lines[-1], flush=True)
    lines += ["", f"Chosen for the study (`provlib.acquisition.SHIFTED_ACQUISITION`): {acquisition.SHIFTED_ACQUISITION}."]
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "benchmarks" / "shift_calibration.md")
