"""A/B of the all-features kernel between two checkouts, in separate processes.

    git worktree add /tmp/base HEAD~1
    python benchmarks/ab_checkouts.py /tmp/base .          # 5 alternations of 15 rounds

Each process imports ``provlib`` from one checkout, then times the forward
pass (the floor) and all three features (``method="hooks"``) back to back on
the embedded model, batch 64.  Processes alternate (A, B, A, B, ...), because
an A/B inside one process can move the floor (NOTES.md, attempt 12).  Prints
one line per process and the medians of each side.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import statistics, sys, time
sys.path.insert(0, sys.argv[1])
import torch
import provlib
assert provlib.__file__.startswith(sys.argv[1]), provlib.__file__
from provlib.runtime import keep_freed_memory
keep_freed_memory()
from provlib.models import load_model
from provlib.paths import EMBEDDED_MODELS_DIR
from provlib.trajectory import seeded_noise, trajectory_features
unet, sched = load_model(EMBEDDED_MODELS_DIR / "cpu")
b = 64
x = torch.rand(b, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
noise = seeded_noise(range(b), [500], (1, 16, 16))
def forward():
    with torch.no_grad():
        unet(x, torch.full((b,), 500)).sample.sum().item()
def features():
    trajectory_features(unet, sched, x, [500], noise=noise, batch_size=b)
for _ in range(2):
    forward(); features()
ta, td = [], []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter(); forward(); ta.append(time.perf_counter() - t0)
    t0 = time.perf_counter(); features(); td.append(time.perf_counter() - t0)
print(statistics.median(ta) * 1e3, statistics.median(td) * 1e3, statistics.median(d / a for a, d in zip(ta, td)))
"""


def run(checkout: Path, rounds: int) -> tuple[float, float, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(checkout), str(rounds)],
                         capture_output=True, text=True, check=True)
    a, d, r = map(float, out.stdout.split())
    return a, d, r


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="checkout A (its provlib/ is imported)")
    ap.add_argument("b", type=Path, help="checkout B")
    ap.add_argument("--alternations", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=15, help="timed rounds per process")
    args = ap.parse_args(argv)
    sides = {"A": args.a.resolve(), "B": args.b.resolve()}
    for side, path in sides.items():
        if not (path / "provlib" / "__init__.py").exists():
            ap.error(f"{side}: {path} holds no provlib/ package")
    results = {side: [] for side in sides}
    print("side  forward ms/batch  all three ms/batch  ratio (median over rounds)")
    for _ in range(args.alternations):
        for side, path in sides.items():
            a, d, r = run(path, args.rounds)
            results[side].append((a, d, r))
            print(f"{side}     {a:8.1f}          {d:8.1f}           {r:.3f}", flush=True)
    for side, rows in results.items():
        print(f"{side} ({sides[side]}): median forward {statistics.median(r[0] for r in rows):.1f} ms, "
              f"all three {statistics.median(r[1] for r in rows):.1f} ms, "
              f"ratio {min(r[2] for r in rows):.2f}-{max(r[2] for r in rows):.2f}")


if __name__ == "__main__":
    main()
