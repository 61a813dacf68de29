"""How far the shipped suspect models carry their source's signal: a quick look, shadow models only.

    .venv/bin/python scripts/attribution_signal.py

For one source, 30 key samples of each kind (generation-based with the seed
query; training-data-based, random selection and the source's released images
with the reconstruction query), the median distance of each shadow suspect's
answers, and the watermark's mean bit accuracy on 30 of its generations.  The
base model and the source itself are the two ends of the scale.  A look at the
setting, not a result: the study's numbers come from its notebooks.
"""
import numpy as np
import torch

from provlib.attribution import keys as K
from provlib.attribution import watermark as W
from provlib.models.interface import DiffusionModel
from provlib.study import suspects as S

SOURCE, N, SEED = "fmc-src-a", 30, 11


def _m(unet) -> DiffusionModel:
    """A class-conditional UNet of the study, as the key queries take it."""
    return DiffusionModel("pixel", unet, S.load(S.BASE)[1])

base, sched = S.load(S.BASE)
source, _ = S.load(SOURCE)
own_x, own_y = S.pool_images(SOURCE)
own_ids = np.arange(len(own_x))
rel_x, rel_y = S.release(SOURCE)
keysets = [K.generation_keys(_m(source), _m(base), N, labels=torch.arange(200) % S.NUM_CLASSES, seed=SEED),
           K.training_keys(_m(source), _m(base), own_x[:400], own_y[:400], own_ids[:400], N, seed=SEED),
           K.random_keys(own_x, own_y, own_ids, N, seed=SEED),
           K.KeySet("released", "reconstruct", rel_x[:N], rel_y[:N], np.arange(N))]
models = {"base": base, SOURCE: source}
models.update({s.name: None for s in S.suspects_of(SOURCE, "shadow") if s.index < 2})
print(f"{'model':28s} " + " ".join(f"{k.strategy + '/' + k.query:>22s}" for k in keysets) + "   watermark bit acc")
for name, unet in models.items():
    unet = unet if unet is not None else S.load(name)[0]
    d = [np.median(K.query(_m(unet), k, seed=SEED)) for k in keysets]
    gen = K.generate(_m(unet), torch.arange(N) % S.NUM_CLASSES, np.arange(10_000, 10_000 + N), seed=SEED)
    print(f"{name:28s} " + " ".join(f"{v:22.3f}" for v in d)
          + f"   {W.bit_accuracy(gen, S.watermark_key(SOURCE)).mean():.3f}")
