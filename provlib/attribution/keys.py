"""Key samples, how a suspect model is queried with them, and conf (instance-level attribution).

The paper's strategies are not in its published text; this is the adaptation
stated in ``docs/training_data_attribution.md``:

- a **query** answers, for a model and a key sample, how closely the model
  reproduces it: ``"seed"`` regenerates the key's condition (its class label,
  or its prompt for a text-to-image model) from the key's own initial noise by
  deterministic DDIM (a key sample is a source generation); ``"reconstruct"``
  noises the key image (a latent model: its latent) to ``t`` with its seeded
  noise and denoises it back by deterministic DDIM under the same condition (a
  key sample is a real image with its caption);
- the **distance** between the answer and the key is the RMS pixel difference
  over the range of pixel values, so it lies in [0, 1] for images in [-1, 1]
  (a latent model's answer is decoded first: keys are images, whatever the model);
- **generation-based** keys: of many candidate source generations, the ``n``
  the base model reproduces worst from the same class and seed, i.e. where the
  source departs most from what anyone fine-tuning the same base would get
  without its data; **training-data-based** keys: of the source's own training
  images, the ``n`` the source reconstructs best relative to the base;
  **random selection** (the baseline): ``n`` random source training images;
- a key **counts** when the suspect's distance is at most ``delta0``; **conf**
  is the share of keys that count.

Models are :class:`provlib.models.interface.DiffusionModel` s of either kind; a key's
condition is a class label (a class-conditional pixel model) or a prompt (a
text-to-image model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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
    """``n`` key samples: the images, their class (a class-conditional model's "prompt"), their ids (seeds or
    image ids), how to query; and for a text-to-image model, each key's prompt (its condition: the labels
    then name the class the prompt names)."""

    strategy: str
    query: str
    images: torch.Tensor
    labels: torch.Tensor
    ids: np.ndarray
    prompts: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.query not in QUERIES:
            raise ValueError(f"query must be one of {QUERIES}, got {self.query!r}")
        if not len(self.images) == len(self.labels) == len(self.ids):
            raise ValueError("a key set needs one label and one id per image")
        if self.prompts is not None:
            self.prompts = tuple(self.prompts)
            if len(self.prompts) != len(self.ids) or not all(isinstance(p, str) for p in self.prompts):
                raise ValueError("a key set's prompts are one string per key")

    @property
    def condition(self):
        """What a query conditions on: the prompts where the keys have them, else the class labels."""
        return self.labels if self.prompts is None else list(self.prompts)

    def head(self, n: int) -> "KeySet":
        """The first ``n`` keys (keys are kept in order of preference)."""
        n = positive_int(n, "n")
        if n > len(self.ids):
            raise ValueError(f"{n} keys asked of a set of {len(self.ids)}")
        return KeySet(self.strategy, self.query, self.images[:n], self.labels[:n], self.ids[:n],
                      None if self.prompts is None else self.prompts[:n])

    def subset(self, order) -> "KeySet":
        """The keys at positions ``order``, in that order."""
        order = np.asarray(order)
        return KeySet(self.strategy, self.query, self.images[order], torch.as_tensor(self.labels)[order],
                      np.asarray(self.ids)[order], None if self.prompts is None else [self.prompts[i] for i in order])


def distance(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(N,) RMS difference of two image batches in [-1, 1], over the pixel range 2: in [0, 1]."""
    if a.shape != b.shape:
        raise ValueError(f"cannot compare images of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return ((a.double() - b.double()).pow(2).flatten(1).mean(1).sqrt() / 2).numpy()


def encode(model, condition) -> torch.Tensor:
    """``model``'s condition of each key: class labels (a tensor) as they are, prompts (strings) through its text
    encoder."""
    if isinstance(condition, torch.Tensor):
        return model.condition(labels=condition)
    return model.condition(prompts=list(condition))


def generate(model, condition, ids, *, seed: int, steps: int = SEED_STEPS, device="cpu") -> torch.Tensor:
    """Deterministic DDIM generations (images in [-1, 1]) under ``condition`` (class labels, or one prompt per
    sample) from the initial noise of ``ids`` (the "seed" query); a latent model's are decoded."""
    x = sampling.sample(model.unet, model.scheduler, len(ids), method="ddim", num_inference_steps=steps, seed=seed,
                        ids=ids, cond=encode(model, condition), device=device)
    return model.from_space(x)


@torch.no_grad()
def reconstruct(model, images: torch.Tensor, condition, ids, *, seed: int, t: int = RECONSTRUCT_T,
                steps: int = RECONSTRUCT_STEPS) -> torch.Tensor:
    """Noise ``images`` (a latent model: their latents) to ``t`` (seeded per id) and denoise them back under
    ``condition`` by deterministic DDIM in ``steps`` steps; the answer as images in [-1, 1]."""
    x0 = model.to_space(images)
    a = float(model.scheduler.alphas_cumprod.double()[t])
    eps = seeded_noise(list(ids), [t], x0.shape[1:], seed)[:, 0]
    x = a ** 0.5 * x0 + (1 - a) ** 0.5 * eps
    path = np.unique(np.linspace(t, 0, steps + 1).round().astype(int))[::-1].tolist()
    return model.from_space(ddim_path(model.unet.eval(), model.scheduler, x, path, cond=encode(model, condition)))


def query(model, keys: KeySet, *, seed: int, reconstruct_t: int = RECONSTRUCT_T) -> np.ndarray:
    """(n,) distances of a model's answers to the keys."""
    if keys.query == "seed":
        answer = generate(model, keys.condition, keys.ids, seed=seed)
    else:
        answer = reconstruct(model, keys.images, keys.condition, keys.ids, seed=seed, t=reconstruct_t)
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

def generation_keys(source, base, n: int, *, labels: torch.Tensor, seed: int,
                    prompts: Sequence[str] | None = None) -> KeySet:
    """The ``n`` candidate source generations the base reproduces worst from the same condition and seed.

    Candidate i is the source's generation of class ``labels[i]`` (a text-to-image source: of ``prompts[i]``)
    from the initial noise of id i."""
    ids, labels = np.arange(len(labels)), torch.as_tensor(labels)
    condition = labels if prompts is None else list(prompts)
    key_images = generate(source, condition, ids, seed=seed)
    d_base = distance(generate(base, condition, ids, seed=seed), key_images)
    return KeySet("generation", "seed", key_images, labels, ids, prompts).subset(np.argsort(-d_base, kind="stable")[:n])


def training_keys(source, base, images: torch.Tensor, labels: torch.Tensor, ids, n: int, *, seed: int,
                  prompts: Sequence[str] | None = None, t: int = RECONSTRUCT_T) -> KeySet:
    """The ``n`` source training images (with their captions ``prompts``, for a text-to-image source) the
    source reconstructs best relative to the base."""
    own = KeySet("training", "reconstruct", images, torch.as_tensor(labels), np.asarray(ids), prompts)
    d_src = distance(reconstruct(source, images, own.condition, own.ids, seed=seed, t=t), images)
    d_base = distance(reconstruct(base, images, own.condition, own.ids, seed=seed, t=t), images)
    return own.subset(np.argsort(-(d_base - d_src), kind="stable")[:n])


def random_keys(images: torch.Tensor, labels: torch.Tensor, ids, n: int, *, seed: int,
                prompts: Sequence[str] | None = None) -> KeySet:
    """The random-selection baseline: ``n`` source training images drawn at random."""
    pick = np.random.default_rng(seed).permutation(len(images))[:positive_int(n, "n")]
    return KeySet("random", "reconstruct", images, torch.as_tensor(labels), np.asarray(ids), prompts).subset(pick)
