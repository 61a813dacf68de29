"""Key samples, how a suspect model is queried with them, and conf (instance-level attribution).

The paper's strategies are not in its published text; this is the adaptation
stated in ``docs/training_data_attribution.md``:

- a **query** answers, for a model and a key sample, how closely the model
  reproduces it: ``"seed"`` regenerates the key's class from the key's own
  initial noise by deterministic DDIM (a key sample is a source generation);
  ``"reconstruct"`` noises the key image to ``t`` with its seeded noise and
  denoises it back by deterministic DDIM (a key sample is a real image);
- the **distance** between the answer and the key is the RMS pixel difference
  over the range of pixel values, so it lies in [0, 1] for images in [-1, 1];
- **generation-based** keys: of many candidate source generations, the ``n``
  the base model reproduces worst from the same class and seed, i.e. where the
  source departs most from what anyone fine-tuning the same base would get
  without its data; **training-data-based** keys: of the source's own training
  images, the ``n`` the source reconstructs best relative to the base;
  **random selection** (the baseline): ``n`` random source training images;
- a key **counts** when the suspect's distance is at most ``delta0``; **conf**
  is the share of keys that count.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import sampling
from ..checks import positive_int
from ..kernels.ddim import ddim_path
from ..kernels.trajectory import seeded_noise
from ..metrics import threshold_at_fpr

QUERIES = ("seed", "reconstruct")
INNOCENT_KEY_RATE = 0.05   # delta_0 lets at most this share of shadow innocent models' keys count: the paper's
                           # Table 2 has 4.3% of innocent keys below its delta_0
SEED_STEPS = 20        # DDIM steps of a "seed" query
RECONSTRUCT_T = 300    # noise level of a "reconstruct" query
RECONSTRUCT_STEPS = 10  # DDIM steps back from it


@dataclass
class KeySet:
    """``n`` key samples: the images, their class (the "prompt"), their ids (seeds or image ids), how to query."""

    strategy: str
    query: str
    images: torch.Tensor
    labels: torch.Tensor
    ids: np.ndarray

    def __post_init__(self):
        if self.query not in QUERIES:
            raise ValueError(f"query must be one of {QUERIES}, got {self.query!r}")
        if not len(self.images) == len(self.labels) == len(self.ids):
            raise ValueError("a key set needs one label and one id per image")

    def head(self, n: int) -> "KeySet":
        """The first ``n`` keys (keys are kept in order of preference)."""
        n = positive_int(n, "n")
        if n > len(self.ids):
            raise ValueError(f"{n} keys asked of a set of {len(self.ids)}")
        return KeySet(self.strategy, self.query, self.images[:n], self.labels[:n], self.ids[:n])


def distance(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(N,) RMS difference of two image batches in [-1, 1], over the pixel range 2: in [0, 1]."""
    if a.shape != b.shape:
        raise ValueError(f"cannot compare images of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return ((a.double() - b.double()).pow(2).flatten(1).mean(1).sqrt() / 2).numpy()


def generate(unet, scheduler, labels: torch.Tensor, ids, *, seed: int, steps: int = SEED_STEPS,
             device=None) -> torch.Tensor:
    """Deterministic DDIM generations of ``labels`` from the initial noise of ``ids`` (the "seed" query)."""
    return sampling.sample(unet, scheduler, len(labels), method="ddim", num_inference_steps=steps, seed=seed,
                           ids=ids, class_labels=labels, device=device)


@torch.no_grad()
def reconstruct(unet, scheduler, images: torch.Tensor, labels: torch.Tensor, ids, *, seed: int,
                t: int = RECONSTRUCT_T, steps: int = RECONSTRUCT_STEPS) -> torch.Tensor:
    """Noise ``images`` to ``t`` (seeded per id) and denoise them back by deterministic DDIM in ``steps`` steps."""
    a = float(scheduler.alphas_cumprod.double()[t])
    eps = seeded_noise(list(ids), [t], images.shape[1:], seed)[:, 0]
    x = a ** 0.5 * images + (1 - a) ** 0.5 * eps
    path = np.unique(np.linspace(t, 0, steps + 1).round().astype(int))[::-1].tolist()
    return ddim_path(unet.eval(), scheduler, x, path, cond=torch.as_tensor(labels).long()).clamp(-1, 1)


def query(unet, scheduler, keys: KeySet, *, seed: int) -> np.ndarray:
    """(n,) distances of a model's answers to the keys."""
    if keys.query == "seed":
        answer = generate(unet, scheduler, keys.labels, keys.ids, seed=seed, device="cpu")
    else:
        answer = reconstruct(unet, scheduler, keys.images, keys.labels, keys.ids, seed=seed)
    return distance(answer, keys.images)


def conf(distances, delta0: float) -> float:
    """The share of key samples that count: distance at most ``delta0``."""
    d = np.asarray(distances, dtype=float)
    if d.ndim != 1 or not len(d):
        raise ValueError("conf needs a non-empty 1-D array of distances")
    return float((d <= delta0).mean())


def choose_delta0(innocent: list, infringing: list, *, rate: float = INNOCENT_KEY_RATE) -> float:
    """delta_0 from shadow models only: the largest distance threshold at which at most ``rate`` of the
    innocent shadow models' keys count (the best TPR over infringing shadow keys at that per-key FPR).

    A fixed innocent rate, not the best balanced accuracy: where the two histograms overlap the balanced
    accuracy is flat, and its maximum can sit where most innocent keys count too (conf near 1 for every model);
    at a fixed rate an innocent model's conf is about ``rate`` for every strategy and every N, so confs are
    comparable across methods.  ``-inf`` (no key counts) when even the smallest threshold lets more count."""
    neg, pos = np.concatenate([np.ravel(d) for d in innocent]), np.concatenate([np.ravel(d) for d in infringing])
    y = np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]
    return float(-threshold_at_fpr(y, -np.r_[pos, neg], rate))

# ----------------------------------------------------------------------------- strategies

def generation_keys(source, base, scheduler, n: int, *, candidates: int, num_classes: int, seed: int) -> KeySet:
    """The ``n`` of ``candidates`` source generations (balanced classes) the base reproduces worst from the
    same class and seed."""
    labels = torch.arange(candidates) % num_classes
    ids = np.arange(candidates)
    key_images = generate(source, scheduler, labels, ids, seed=seed, device="cpu")
    d_base = distance(generate(base, scheduler, labels, ids, seed=seed, device="cpu"), key_images)
    order = np.argsort(-d_base, kind="stable")[:n]
    return KeySet("generation", "seed", key_images[order], labels[order], ids[order])


def training_keys(source, base, scheduler, images: torch.Tensor, labels: torch.Tensor, ids, n: int, *,
                  seed: int) -> KeySet:
    """The ``n`` source training images the source reconstructs best relative to the base."""
    ids = np.asarray(ids)
    d_src = distance(reconstruct(source, scheduler, images, labels, ids, seed=seed), images)
    d_base = distance(reconstruct(base, scheduler, images, labels, ids, seed=seed), images)
    order = np.argsort(-(d_base - d_src), kind="stable")[:n]
    return KeySet("training", "reconstruct", images[order], torch.as_tensor(labels)[order], ids[order])


def random_keys(images: torch.Tensor, labels: torch.Tensor, ids, n: int, *, seed: int) -> KeySet:
    """The random-selection baseline: ``n`` source training images drawn at random."""
    pick = np.random.default_rng(seed).permutation(len(images))[:positive_int(n, "n")]
    return KeySet("random", "reconstruct", images[pick], torch.as_tensor(labels)[pick], np.asarray(ids)[pick])
