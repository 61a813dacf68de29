"""A/B of the all-features kernel between two checkouts, in separate processes.

    git worktree add /tmp/base HEAD~1
    python benchmarks/ab_checkouts.py /tmp/base .          # 5 alternations of 15 rounds

Each process imports ``provlib`` from one checkout, then times the forward
pass (the floor) and all three features (``method="hooks"``) back to back on
the embedded model, batch 64, with ``trajectory_kernels.time_variants``.  Processes alternate (A, B, A, B, ...), because
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
import statistics, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]  # the checkout's provlib, this directory's benchmark
import provlib
assert provlib.__file__.startswith(sys.argv[1]), provlib.__file__
from provlib.runtime import keep_freed_memory
keep_freed_memory()
from trajectory_kernels import ratio_stats, time_variants
batch = 64
times = time_variants("embedded", "cpu", batch, int(sys.argv[3]), ["a_forward", "d_all_hooks"])  # s per row
ms = {v: 1e3 * batch * statistics.median(t) for v, t in times.items()}
print(ms["a_forward"], ms["d_all_hooks"], ratio_stats(times, "d_all_hooks")[0])
"""


def run(checkout: Path, rounds: int) -> tuple[float, float, float]:
    here = Path(__file__).resolve().parent
    out = subprocess.run([sys.executable, "-c", CHILD, str(checkout), str(here), str(rounds)],
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
