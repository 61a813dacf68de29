"""Two lanes of one thread against one lane of two threads, on the study's UNet work, side by side.

    python benchmarks/lanes.py                 # every workload, 3 rounds (a few minutes on 2 cores)
    python benchmarks/lanes.py --rounds 5 --work 6

The batch driver can run notebooks one at a time with every core
(``--lanes 1``, torch's default threads) or several at once, each kernel with
its share of the cores (``--lanes 2``: one thread each on this 2-core machine).
Which is faster depends on how well one process uses two threads at the
study's batch sizes.  For each workload below (the passes the notebooks run
most, at the batch sizes they run them), this script times the same total
work done by

- **1 x 2**: one process with two torch threads doing ``2 x work`` batches;
- **2 x 1**: two processes with one thread each, started together, each doing
  ``work`` batches (the wall time of the slower one);

rounds interleaved, and prints the median throughput of each and their ratio
(> 1: lanes win).  The UNets are the shipped ones (``provlib/embedded/models``);
the inputs are seeded noise.  No cache is read or written.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

WORKLOADS = {
    # name: (model, what runs, rows per batch); see _workload
    "trajectory features, fm500 (fwd + per-sample bwd)": ("fm500", "features", 64),
    "sampling step, fm500 (fwd, no grad)": ("fm500", "forward", 250),
    "GSA_1 image gradient, fm500 (fwd + bwd)": ("fm500", "backward", 10),
    "class-conditional forward, fmc-src-b (keys, no grad)": ("fmc-src-b", "forward", 100),
    "latent trajectory features, sd1000 (text)": ("sd1000", "features", 64),
    "latent sampling step, sd1000 (text, no grad)": ("sd1000", "forward", 100),
}


def _workload(model_name: str, kind: str, rows: int):
    """A function running one batch of ``kind`` on the shipped model (built inside the worker)."""
    import torch

    from provlib import paths
    from provlib.kernels.trajectory import trajectory_features
    from provlib.models.interface import open_model, quiet_loading

    with quiet_loading():
        model = open_model(paths.EMBEDDED_MODELS_DIR / model_name, device="cpu")
    unet, sched = model.unet.eval(), model.scheduler
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, *model.space_shape, generator=gen).clamp(-1, 1)
    cond = None
    if model.kind == "latent":
        cond = model.condition(prompts=["a photo of a sneaker"] * rows)
    elif getattr(unet.config, "num_class_embeds", None):
        cond = torch.zeros(rows, dtype=torch.long)
    kwargs = {} if cond is None else ({"encoder_hidden_states": cond} if cond.is_floating_point()
                                      else {"class_labels": cond})
    t = torch.full((rows,), 300)

    if kind == "features":
        return lambda: trajectory_features(unet, sched, x, [300], cond=cond, batch_size=rows)
    if kind == "forward":
        def forward():
            with torch.no_grad():
                unet(x, t, **kwargs)
        return forward

    unet.requires_grad_(True)   # a loaded pipeline's weights come frozen

    def backward():
        unet.zero_grad(set_to_none=True)
        unet(x, t, **kwargs).sample.pow(2).mean().backward()
    return backward


def _worker(spec, threads: int, batches: int, barrier, out) -> None:
    import torch
    torch.set_num_threads(threads)
    run = _workload(*spec)
    run()  # warm-up
    barrier.wait()
    t0 = time.perf_counter()
    for _ in range(batches):
        run()
    out.put(time.perf_counter() - t0)


def _timed(spec, processes: int, threads: int, batches: int) -> float:
    """Wall seconds for ``processes`` workers of ``threads`` threads to each run ``batches`` batches."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(spec, threads, batches, barrier, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    walls = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return max(walls)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    ap.add_argument("--work", type=int, default=4, help="batches per 1-thread process (2x for the 2-thread one)")
    ap.add_argument("--only", nargs="+", help="workloads whose name starts with one of these")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    names = [n for n in WORKLOADS if not args.only or any(n.startswith(o) for o in args.only)]
    print(f"{cores} cores; {args.rounds} rounds; throughput in rows/s (median); ratio = 2x1 / 1x2 (> 1: lanes win)\n")
    print("| workload | rows per batch | 1 x 2 threads | 2 x 1 thread | ratio |")
    print("|---|---|---|---|---|")
    for name in names:
        spec = WORKLOADS[name]
        one, two = [], []
        for _ in range(args.rounds):
            one.append(2 * args.work * spec[2] / _timed(spec, 1, 2, 2 * args.work))
            two.append(2 * args.work * spec[2] / _timed(spec, 2, 1, args.work))
        a, b = statistics.median(one), statistics.median(two)
        print(f"| {name} | {spec[2]} | {a:.0f} | {b:.0f} | {b / a:.2f} |", flush=True)


if __name__ == "__main__":
    main()
