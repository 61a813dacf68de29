"""Image sets, their validation, and seeded member / held-out / external splits.

Every image set the study touches is an :class:`ImageSet`: float32 images in
[-1, 1], NCHW, with a stable integer id per image (the id seeds the image's
noise in the trajectory kernel, so it must not depend on batch or order).

Sources:
- the embedded datasets (Fashion-MNIST subset, MNIST) at 16x16 or 28x28;
- a folder of image files (PNG, JPEG, ...);
- torchvision datasets such as CIFAR-10 (when torchvision and the data or a
  network are present).

:func:`reencode` puts images through a file codec (8-bit, JPEG, resize),
the same for every class of a comparison.

Splits are drawn from a seed, never overlap, and are saved as a JSON manifest
of indices with a sha256 over its content.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import paths
from .io import atomic_write_text

EMBEDDED = {"fashion_mnist": "fashion_mnist.npz", "mnist": "mnist.npz", "digits": "digits.npz"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


class ImageRangeWarning(UserWarning):
    """Images that look like [0, 1] data handed to code that expects [-1, 1]."""


@dataclass
class ImageSet:
    """Images in [-1, 1] (N, C, H, W) with stable ids and optional labels."""

    name: str
    images: torch.Tensor
    ids: np.ndarray
    labels: np.ndarray | None = None

    def __post_init__(self):
        # no range warning here: loaders convert to [-1, 1] themselves; the kernels warn on raw tensors
        check_images(self.images, what=f"image set {self.name!r}", warn_range=False)
        self.ids = np.asarray(self.ids, dtype=np.int64)
        if len(self.ids) != len(self.images):
            raise ValueError(f"image set {self.name!r}: {len(self.ids)} ids for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index, name: str | None = None) -> "ImageSet":
        """The images at positions ``index`` (ids and labels follow)."""
        index = np.asarray(index)
        if index.size == 0:
            raise ValueError(f"empty split of image set {self.name!r}")
        if not np.issubdtype(index.dtype, np.integer):
            raise TypeError(f"positions into image set {self.name!r} must be integers, got {index.dtype}")
        index = index.astype(np.int64)
        if index.min() < 0 or index.max() >= len(self):
            bad = index[(index < 0) | (index >= len(self))]
            raise IndexError(f"positions {bad[:5].tolist()} are outside image set {self.name!r} "
                             f"of {len(self)} images (valid: 0..{len(self) - 1})")
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(name or self.name, self.images[torch.as_tensor(index)], self.ids[index], labels)


def check_images(images, *, what: str = "images", warn_range: bool = True, stacklevel: int = 3) -> None:
    """Raise a ValueError naming the problem unless ``images`` is float NCHW in [-1, 1].

    With ``warn_range``, a batch without a single negative pixel (images in
    [0, 1] are the usual mistake) gives an :class:`ImageRangeWarning`.
    """
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
    if warn_range and lo >= 0.0:
        warnings.warn(f"{what}: no pixel of these {images.shape[0]} image(s) is negative (range [{lo:.3g}, "
                      f"{hi:.3g}]): they look like images in [0, 1], but provlib expects [-1, 1]; "
                      "convert them with x * 2 - 1", ImageRangeWarning, stacklevel=stacklevel)


def check_fits_model(images: torch.Tensor, unet, *, what: str = "images") -> None:
    """Raise a ValueError naming both shapes unless ``images`` have the channels and size ``unet`` takes.

    A UNet is fully convolutional and would run on other sizes, giving numbers
    for an input it was never trained on: that is refused here.
    """
    cfg = unet.config
    size = cfg.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    expected = (cfg.in_channels, h, w)
    got = tuple(images.shape[1:])
    if got != expected:
        raise ValueError(f"{what}: {got[0]} channel(s) of {got[1]}x{got[2]} pixels, but the model takes "
                         f"{expected[0]} channel(s) of {h}x{w} (unet.config: in_channels={cfg.in_channels}, "
                         f"sample_size={size}); load them with size={h} and channels={expected[0]}")


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


CODECS = ("none", "png", "jpeg90", "jpeg75", "resize")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] (N, C, H, W) to uint8 pixels (N, C, H, W), rounded to the nearest level."""
    check_images(images, warn_range=False)
    return ((images.detach().cpu().double().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def reencode(images: torch.Tensor, codec: str) -> torch.Tensor:
    """``images`` (N, C, H, W) in [-1, 1] as a file would hand them back after ``codec``.

    ``none``: unchanged; ``png``: 8-bit (what saving as PNG does); ``jpeg90`` /
    ``jpeg75``: 8-bit then JPEG at that quality (Pillow, 4:4:4 chroma); ``resize``:
    8-bit, down to half the side and back up (antialiased bilinear, Pillow).
    Every class of a comparison goes through the same codec, so that no
    method can tell the classes apart by their encoding.
    """
    from PIL import Image

    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose from {CODECS}")
    if codec == "none":
        return images
    pixels = to_uint8(images)
    out = np.empty_like(pixels)
    for i, arr in enumerate(pixels):
        im = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
        if codec.startswith("jpeg"):
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=int(codec[4:]), subsampling=0)
            im = Image.open(io.BytesIO(buf.getvalue()))
            im.load()
        elif codec == "resize":
            w, h = im.size
            im = im.resize((max(1, w // 2), max(1, h // 2)), Image.BILINEAR).resize((w, h), Image.BILINEAR)
        arr2 = np.asarray(im, dtype=np.uint8)
        out[i] = arr2[None] if arr2.ndim == 2 else arr2.transpose(2, 0, 1)
    return to_model_range(out)


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


def load_image_folder(folder: str | Path, size: int | None = None, channels: int = 3, name: str | None = None,
                      *, resize: bool = False) -> ImageSet:
    """Every image file under ``folder`` (sorted by path) as an :class:`ImageSet` in [-1, 1].

    ``size``: the side the images must have (``None``: whatever they share).
    Images of another size, or a folder of mixed sizes, are refused unless
    ``resize=True``, which centre-crops each image to a square and resizes it
    to ``size`` (antialiased bilinear), so no aspect ratio is silently lost.
    ``channels``: 1 (grey) or 3 (RGB); images are converted to it.  8-bit and
    16-bit PNGs keep their full range (a 16-bit white is +1, not a saturated
    8-bit value); 32-bit integer or float images are refused.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive integer (the side in pixels), got {size!r}")
    if resize and size is None:
        raise ValueError("resize=True needs the target size (size=...)")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    images = [read_image(f, channels) for f in files]
    _check_sizes(files, images, size, resize)
    if resize:
        images = [_square_resize(x, size) for x in images]
    return ImageSet(name or folder.name, torch.stack(images), np.arange(len(files)))


def read_image(path: str | Path, channels: int) -> torch.Tensor:
    """One image file as a float (channels, H, W) tensor in [-1, 1], at its own bit depth."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode.startswith("I;16") or (mode == "I" and im.format == "PNG"):  # 16-bit grey
                x = torch.as_tensor(np.asarray(im, dtype=np.float64) / 32767.5 - 1.0, dtype=torch.float32)[None]
                if float(x.max()) > 1.0 + 1e-6 or float(x.min()) < -1.0 - 1e-6:
                    raise ValueError(f"{path}: 16-bit image with values outside 0..65535")
                return x.expand(channels, -1, -1).contiguous()
            if mode in ("I", "F"):
                raise ValueError(f"{path}: {mode!r} images (32-bit integer or float pixels) have no known "
                                 "range; save them as 8- or 16-bit PNG")
            if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
                im = _on_black(im, path)
            arr = np.array(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err
    arr = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return to_model_range(arr[None])[0]


class AlphaChannelWarning(UserWarning):
    """An image had an alpha channel: it was composited on black before use."""


def _on_black(im, path):
    """``im`` (with transparency) composited on black, the background of the study's datasets; warns once."""
    from PIL import Image

    rgba = im.convert("RGBA")
    warnings.warn(f"{path}: the image has an alpha channel; it is composited on a black background "
                  "(the datasets' background) before use", AlphaChannelWarning, stacklevel=3)
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")


def _check_sizes(files: list[Path], images: list[torch.Tensor], size: int | None, resize: bool) -> None:
    sizes = [tuple(x.shape[1:]) for x in images]
    if resize:
        return
    wanted = {(size, size)} if size is not None else {sizes[0]}
    odd = [(f, s) for f, s in zip(files, sizes) if s not in wanted]
    if odd:
        seen = sorted({s for s in sizes})
        examples = ", ".join(f"{f.name} ({s[0]}x{s[1]})" for f, s in odd[:5])
        want = f"{size}x{size}" if size is not None else "one size"
        raise ValueError(f"{len(odd)} of {len(files)} images are not {want} (sizes found: "
                         f"{', '.join(f'{h}x{w}' for h, w in seen)}; e.g. {examples}); "
                         "pass size=... and resize=True to centre-crop and resize them")


def _square_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    _, h, w = x.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[:, top:top + side, left:left + side]
    if side != size:  # in float64, so that a constant image stays exactly constant
        x = F.interpolate(x[None].double(), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)[0].float()
    return x.clamp(-1.0, 1.0).contiguous()


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

    def __post_init__(self):
        if set(self.datasets) != set(self.indices):
            raise ValueError(f"split manifest: splits {sorted(self.indices)} but datasets named for "
                             f"{sorted(self.datasets)}")
        self.indices = {k: _check_split(k, v) for k, v in self.indices.items()}
        splits = list(self.indices)
        for a_i, a in enumerate(splits):
            for b in splits[a_i + 1:]:
                if self.datasets[a] != self.datasets[b]:
                    continue
                shared = np.intersect1d(self.indices[a], self.indices[b])
                if shared.size:
                    raise ValueError(f"split manifest: splits {a!r} and {b!r} of dataset {self.datasets[a]!r} "
                                     f"share {shared.size} indices (e.g. {shared[:5].tolist()}); a member "
                                     "cannot also be a non-member")

    def check_pools(self, pool_sizes: dict[str, int]) -> "SplitManifest":
        """Raise unless every index lies inside its dataset (``pool_sizes``: dataset -> image count)."""
        for split, idx in self.indices.items():
            ds = self.datasets[split]
            if ds not in pool_sizes:
                raise ValueError(f"split {split!r} draws from unknown dataset {ds!r}; known: {sorted(pool_sizes)}")
            if idx.size and idx.max() >= pool_sizes[ds]:
                bad = idx[idx >= pool_sizes[ds]]
                raise ValueError(f"split {split!r} has indices {bad[:5].tolist()} outside dataset {ds!r} "
                                 f"of {pool_sizes[ds]} images")
        return self

    def to_json(self) -> dict:
        body = {"seed": self.seed, "datasets": self.datasets,
                "indices": {k: [int(i) for i in v] for k, v in self.indices.items()}}
        return {**body, "sha256": _sha256_json(body)}

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path, pool_sizes: dict[str, int] | None = None) -> "SplitManifest":
        """Read a manifest, check its sha256 and its splits (and, given ``pool_sizes``, its ranges)."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            body = {k: raw[k] for k in ("seed", "datasets", "indices")}
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"corrupt or unreadable split manifest {path}: {err}") from err
        if _sha256_json(body) != raw.get("sha256"):
            raise ValueError(f"split manifest {path} does not match its sha256 (edited or corrupt)")
        try:
            manifest = cls(body["seed"], body["datasets"], {k: np.asarray(v) for k, v in body["indices"].items()})
        except (TypeError, ValueError) as err:
            raise ValueError(f"invalid split manifest {path}: {err}") from err
        return manifest if pool_sizes is None else manifest.check_pools(pool_sizes)

    @property
    def sha256(self) -> str:
        return self.to_json()["sha256"]


def make_manifest(sizes: dict[str, tuple[str, int]], seed: int, pool_sizes: dict[str, int]) -> SplitManifest:
    """Draw :func:`draw_splits` and wrap them in a manifest."""
    indices = draw_splits(pool_sizes, sizes, seed)
    return SplitManifest(seed, {k: ds for k, (ds, _) in sizes.items()}, indices)


def _check_split(name: str, idx) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(f"split {name!r} must be a non-empty list of indices, got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"split {name!r} holds non-integer indices ({idx.dtype})")
    idx = idx.astype(np.int64)
    if idx.min() < 0:
        raise ValueError(f"split {name!r} holds negative indices {idx[idx < 0][:5].tolist()}")
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"split {name!r} repeats indices {uniq[counts > 1][:5].tolist()}")
    return idx


def _sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
