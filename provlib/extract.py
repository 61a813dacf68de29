"""Feature extraction for a profile's splits, sharded across processes with torchrun.

    python -m provlib.extract --profile cpu                                  # one process
    torchrun --nproc_per_node=4 -m provlib.extract --profile cpu             # 4 GPUs (NCCL) or 4 CPU workers (gloo)
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 \\
             --nproc_per_node=8 -m provlib.extract --profile cpu             # several machines (shared cache dir)

Each process computes a disjoint share of the chunks (chunk i goes to rank
i mod world_size) and writes each chunk atomically into the artifact cache,
so the merged features equal a single-process run, and a killed run
resumes from the chunks already written.  Rank 0 then merges and prints a
summary.  The notebooks read the same cache.
"""
from __future__ import annotations

import argparse
import hashlib
import os

import torch
import torch.distributed as dist

from . import study

SPLITS = ("member", "heldout", "external", "generated")


def _device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def digest(feats: dict[str, torch.Tensor]) -> str:
    """sha256 over the features' bytes: equal digests mean bitwise-equal results."""
    h = hashlib.sha256()
    for name in sorted(feats):
        h.update(name.encode()); h.update(feats[name].numpy().tobytes())
    return h.hexdigest()[:16]


def run(study_run: study.Run, splits, chunk: int, rank: int, world: int, local_rank: int) -> dict | None:
    """Compute this rank's shards of every split of every target of ``study_run``; on rank 0 return the merged
    features."""
    device = _device(local_rank)
    targets = [study_run.target(name) for name in study_run.targets]
    if rank == 0:  # a model that must be trained, and the samples, are made once, by rank 0, and cached
        for target in targets:
            study.resolve(target.name, study_run.seed)   # trained now if it must be, once
            if "generated" in splits:
                study.generated(target, progress=True)
    _barrier(world)
    for target in targets:
        for split in splits:
            study.features(target, split, chunk=chunk, shard=(rank, world), device=device, progress=rank == 0)
    _barrier(world)
    if rank != 0:
        return None
    return {f"{target.name}/{split}": study.features(target, split, chunk=chunk, progress=False)
            for target in targets for split in splits}


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Sharded trajectory-feature extraction (torchrun-aware).")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--targets", nargs="+", default=None, help="target names (default: the profile's)")
    ap.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    ap.add_argument("--chunk", type=_positive, default=250, help="images per cached chunk")
    args = ap.parse_args(argv)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        study_run = study.Run.from_profile(args.profile, targets=args.targets)
        merged = run(study_run, args.splits, args.chunk, rank, world, local_rank)
    finally:
        if world > 1:
            dist.destroy_process_group()
    if merged is not None:
        for split, feats in merged.items():
            print(f"{split}: {tuple(feats['loss'].shape)} sha256 {digest(feats)}")


if __name__ == "__main__":
    main()
