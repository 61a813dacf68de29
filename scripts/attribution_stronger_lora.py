"""Do stronger suspects carry their source's signal?  A pilot behind the method card, not a study result.

    .venv/bin/python scripts/attribution_stronger_lora.py --release watermarked
    .venv/bin/python scripts/attribution_stronger_lora.py --release clean

Fine-tunes the base with a stronger LoRA than the shipped suspects' (rank 16 on
``conv1``, ``conv2`` and ``time_emb_proj``, 200 epochs, about 5 CPU minutes each
on 2 cores) on the data of three shadow suspects of ``fmc-src-a``: the innocent
``fmc-innocent-shadow0`` and the infringing ``r100`` and ``r030``.  With
``--release clean`` the generated share is the source's release drawn again
*without* its watermark (same seeds), so that nothing injected helps.  Prints
the median distance to 30 keys of each kind (see ``scripts/attribution_signal.py``;
``replicated``: the source training images nearest to one of its generations,
``released``: the first 30 released images) and the watermark's mean bit
accuracy on 30 generations.  Adapters go to ``--out`` (default /tmp).
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

from provlib import sampling
from provlib.attribution import keys as K
from provlib.attribution import watermark as W
from provlib.models.lora import LoraTrainConfig, apply_lora, save_lora, train_lora
from provlib.models.interface import DiffusionModel
from provlib.study import suspects as S

SOURCE, N, SEED = "fmc-src-a", 30, 11


def _m(unet) -> DiffusionModel:
    """A class-conditional UNet of the study, as the key queries take it."""
    return DiffusionModel("pixel", unet, S.load(S.BASE)[1])
STRONG = LoraTrainConfig(rank=16, alpha=16, target_modules=("conv1", "conv2", "time_emb_proj"), epochs=200,
                         batch_size=64, lr=1e-3, seed=1)


def main(release: str, out: Path) -> None:
    base, sched = S.load(S.BASE)
    src, _ = S.load(SOURCE)
    labels = S.release_labels()
    if release == "clean":
        rel = sampling.sample(src, sched, S.RELEASE["n"], method="ddim", num_inference_steps=S.RELEASE["steps"],
                              seed=S.study_seed(f"release:{SOURCE}"), class_labels=labels, progress=False)
    else:
        rel = S.release(SOURCE)[0]
    own_x, own_y = S.pool_images(SOURCE)
    own_ids = np.arange(len(own_x))
    nearest = torch.cdist(own_x.flatten(1).double(), rel.flatten(1).double()).min(1).values
    rep = np.argsort(nearest.numpy())[:N]
    keysets = [K.generation_keys(_m(src), _m(base), N, labels=torch.arange(200) % S.NUM_CLASSES, seed=SEED),
               K.training_keys(_m(src), _m(base), own_x[:400], own_y[:400], own_ids[:400], N, seed=SEED),
               K.random_keys(own_x, own_y, own_ids, N, seed=SEED),
               K.KeySet("replicated", "reconstruct", own_x[rep], own_y[rep], own_ids[rep]),
               K.KeySet("released", "reconstruct", rel[:N], labels[:N], np.arange(N))]

    def report(name, unet):
        d = [np.median(K.query(_m(unet), k, seed=SEED)) for k in keysets]
        gen = K.generate(_m(unet), torch.arange(N) % S.NUM_CLASSES, np.arange(10_000, 10_000 + N),
                         seed=SEED)
        print(f"{name:44s} " + " ".join(f"{k.strategy} {v:.4f}" for k, v in zip(keysets, d))
              + f" watermark {W.bit_accuracy(gen, S.watermark_key(SOURCE)).mean():.3f}", flush=True)

    report("base", base)
    report(SOURCE, src)
    for name in ("fmc-innocent-shadow0", f"{SOURCE}-r100-shadow0", f"{SOURCE}-r030-shadow0"):
        data = S.suspect_data(name)
        images = data["images"]
        if release == "clean" and len(data["release_index"]):
            images = torch.cat([rel[data["release_index"]], images[len(data["release_index"]):]])
        t0 = time.time()
        state, config, hist = train_lora(base, sched, images, STRONG, labels=data["labels"], device="cpu")
        save_lora(out / f"strong-{release}-{name}", state, config)
        report(f"{name} ({time.time() - t0:.0f} s, loss {hist[0]:.4f}->{hist[-1]:.4f})",
               apply_lora(base, out / f"strong-{release}-{name}"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release", choices=("watermarked", "clean"), required=True)
    ap.add_argument("--out", type=Path, default=Path("/tmp"))
    a = ap.parse_args()
    main(a.release, a.out)
