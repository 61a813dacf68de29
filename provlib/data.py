"""Image sets, their validation, and seeded member / held-out / external splits.

Every image set the study touches is an :class:`ImageSet`: float32 images in
[-1, 1], NCHW, with a stable integer id per image (the id seeds the image's
noise in the trajectory kernel, so it must not depend on batch or order).

Sources:
- the embedded datasets (Fashion-MNIST subset, MNIST) at 16x16 or 28x28;
- a folder of image files (PNG, JPEG, ...);
- torchvision datasets such as CIFAR-10 (when torchvision and the data or a
  network are present).

Splits are drawn from a seed, never overlap, and are saved as a JSON manifest
of indices with a sha256 over its content.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import paths
from .io import atomic_write_text

EMBEDDED = {"fashion_mnist": "fashion_mnist.npz", "mnist": "mnist.npz"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class ImageSet:
    """Images in [-1, 1] (N, C, H, W) with stable ids and optional labels."""

    name: str
    images: torch.Tensor
    ids: np.ndarray
    labels: np.ndarray | None = None

    def __post_init__(self):
        check_images(self.images, what=f"image set {self.name!r}")
        self.ids = np.asarray(self.ids, dtype=np.int64)
        if len(self.ids) != len(self.images):
            raise ValueError(f"image set {self.name!r}: {len(self.ids)} ids for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index, name: str | None = None) -> "ImageSet":
        """The images at positions ``index`` (ids and labels follow)."""
        index = np.asarray(index, dtype=np.int64)
        if index.size == 0:
            raise ValueError(f"empty split of image set {self.name!r}")
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(name or self.name, self.images[torch.as_tensor(index)], self.ids[index], labels)


def check_images(images, *, what: str = "images") -> None:
    """Raise a ValueError naming the problem unless ``images`` is float NCHW in [-1, 1]."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{what}: expected shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{what}: empty (N = 0)")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"{what}: expected 1 or 3 channels in dim 1 (NCHW), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{what}: expected floating point in [-1, 1], got {images.dtype} "
                         "(convert uint8 with to_model_range)")
    if not torch.isfinite(images).all():
        raise ValueError(f"{what}: contains NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
        raise ValueError(f"{what}: values must lie in [-1, 1], found [{lo:.3g}, {hi:.3g}] "
                         "(images in [0, 1] or [0, 255] need to_model_range)")


def to_model_range(uint8_images: np.ndarray | torch.Tensor, size: int | None = None) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, C, H, W) in 0..255 to float (N, C, size, size) in [-1, 1].

    Resizing uses antialiased bilinear interpolation (the kernel of
    torchvision's ``Resize`` on tensors).
    """
    x = torch.as_tensor(np.asarray(uint8_images))
    if x.dtype != torch.uint8:
        raise ValueError(f"to_model_range expects uint8 pixels 0..255, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"to_model_range expects (N, H, W) or (N, C, H, W), got {tuple(x.shape)}")
    x = x.float() / 127.5 - 1.0
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp_(-1.0, 1.0).contiguous()


def embedded_path(name: str) -> Path:
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded dataset {name!r}; choose from {sorted(EMBEDDED)}")
    return paths.EMBEDDED_DATA_DIR / EMBEDDED[name]


def load_embedded(name: str, size: int = 16) -> ImageSet:
    """An embedded dataset at ``size`` x ``size`` (16 or 28); ids are row numbers of the vendored file."""
    if size not in (16, 28):
        raise ValueError(f"embedded datasets come at size 16 or 28, not {size}")
    path = embedded_path(name)
    if not path.exists():
        raise FileNotFoundError(f"embedded dataset file missing: {path}")
    with np.load(path) as d:
        images, labels = d["images"], d["labels"].astype(np.int64)
    return ImageSet(name, to_model_range(images, size), np.arange(len(images)), labels)


def load_image_folder(folder: str | Path, size: int, channels: int = 3, name: str | None = None) -> ImageSet:
    """Every image file under ``folder`` (sorted by path), resized to ``size`` and converted to ``channels``."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    mode = {1: "L", 3: "RGB"}[channels]
    arrays = []
    for f in files:
        with Image.open(f) as im:
            arr = np.asarray(im.convert(mode).resize((size, size), Image.BICUBIC), dtype=np.uint8)
        arrays.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
    return ImageSet(name or folder.name, to_model_range(np.stack(arrays)), np.arange(len(files)))


def load_torchvision(name: str, root: str | Path, *, train: bool = True, download: bool = False,
                     size: int | None = None, limit: int | None = None) -> ImageSet:
    """A torchvision dataset (e.g. ``"CIFAR10"``), needs torchvision and the data (or a network)."""
    try:
        import torchvision.datasets as tvd
    except Exception as err:  # ImportError, or a torchvision built for another torch
        raise ImportError(f"loading {name!r} needs a working torchvision: {err}") from err
    if not hasattr(tvd, name):
        raise ValueError(f"torchvision.datasets has no dataset {name!r}")
    ds = getattr(tvd, name)(root=str(root), train=train, download=download)
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise ValueError(f"torchvision dataset {name!r} at {root} is empty")
    arrays, labels = [], []
    for i in range(n):
        img, label = ds[i]
        arr = np.asarray(img, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        labels.append(int(label))
    return ImageSet(name, to_model_range(np.stack(arrays), size), np.arange(n), np.asarray(labels))


# ----------------------------------------------------------------------------- splits

def draw_splits(pool_sizes: dict[str, int], sizes: dict[str, tuple[str, int]], seed: int) -> dict[str, np.ndarray]:
    """Disjoint index sets drawn from a seed.

    ``pool_sizes`` maps a dataset name to its number of images; ``sizes`` maps
    a split name to ``(dataset, count)``.  Splits of one dataset are
    consecutive chunks of one seeded permutation, so they never overlap.
    """
    rng = np.random.default_rng(seed)
    perms = {ds: rng.permutation(n) for ds, n in sorted(pool_sizes.items())}
    used = {ds: 0 for ds in pool_sizes}
    out = {}
    for split, (ds, count) in sizes.items():
        if ds not in pool_sizes:
            raise ValueError(f"split {split!r} draws from unknown dataset {ds!r}")
        if count <= 0:
            raise ValueError(f"split {split!r} is empty (count {count})")
        if used[ds] + count > pool_sizes[ds]:
            raise ValueError(f"splits ask {used[ds] + count} images of {ds!r}, which has {pool_sizes[ds]}")
        out[split] = np.sort(perms[ds][used[ds]:used[ds] + count])
        used[ds] += count
    return out


@dataclass
class SplitManifest:
    """Named index splits of named datasets, with a seed and a content hash."""

    seed: int
    datasets: dict[str, str]      # split name -> dataset name
    indices: dict[str, np.ndarray]  # split name -> sorted indices into the dataset

    def to_json(self) -> dict:
        body = {"seed": self.seed, "datasets": self.datasets,
                "indices": {k: [int(i) for i in v] for k, v in self.indices.items()}}
        return {**body, "sha256": _sha256_json(body)}

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "SplitManifest":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            body = {k: raw[k] for k in ("seed", "datasets", "indices")}
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"corrupt or unreadable split manifest {path}: {err}") from err
        if _sha256_json(body) != raw.get("sha256"):
            raise ValueError(f"split manifest {path} does not match its sha256 (edited or corrupt)")
        return cls(body["seed"], body["datasets"], {k: np.asarray(v, dtype=np.int64) for k, v in body["indices"].items()})

    @property
    def sha256(self) -> str:
        return self.to_json()["sha256"]


def make_manifest(sizes: dict[str, tuple[str, int]], seed: int, pool_sizes: dict[str, int]) -> SplitManifest:
    """Draw :func:`draw_splits` and wrap them in a manifest."""
    indices = draw_splits(pool_sizes, sizes, seed)
    return SplitManifest(seed, {k: ds for k, (ds, _) in sizes.items()}, indices)


def _sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
