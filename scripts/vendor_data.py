"""Vendor the embedded datasets into ``provlib/embedded/data/``.

Run once by maintainers (the result is committed); users never need it:

    python scripts/vendor_data.py --source ../shared/data

Fashion-MNIST: a class-balanced subset of 2,000 images per class (20,000),
drawn with a fixed seed after dropping exact pixel duplicates (the original
holds 54), so that no image can be both a "member" and a "non-member".
MNIST: the 10,000 digits as they are (used as the out-of-distribution
"external" set).  Pixel values are unchanged (uint8, 28x28).
Digits: scikit-learn's copy of the UCI ML hand-written digits (Alpaydin and
Kaynak, 1998; licence CC BY 4.0), all 1,797 images at their own 8x8 size,
their 17 grey levels 0..16 mapped to 0..255 (round(v * 255 / 16)); the loader
upsamples them (SeDID's third dataset).  Its source is scikit-learn's bundled
file, so it needs no ``--source``.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "provlib" / "embedded" / "data"
PER_CLASS = 2000
SEED = 20241107


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def first_occurrences(images: np.ndarray) -> np.ndarray:
    """Indices of the first copy of every distinct image."""
    seen, keep = set(), []
    for i, img in enumerate(images):
        key = hashlib.sha1(img.tobytes()).digest()
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return np.asarray(keep)


def vendor_fashion(source: Path) -> None:
    src = source / "fashion_mnist.npz"
    d = np.load(src)
    keep = first_occurrences(d["images"])
    rng = np.random.default_rng(SEED)
    chosen = []
    for c in range(10):
        idx = keep[d["labels"][keep] == c]
        chosen.append(np.sort(rng.choice(idx, PER_CLASS, replace=False)))
    chosen = np.concatenate(chosen)
    np.savez_compressed(
        OUT / "fashion_mnist.npz", images=d["images"][chosen], labels=d["labels"][chosen],
        source_index=d["source_index"][chosen], source_sha256=np.array(sha256(src)))
    print(f"fashion_mnist: {len(chosen)} images ({len(d['images']) - len(keep)} duplicates dropped)")


def vendor_mnist(source: Path) -> None:
    src = source / "mnist.npz"
    d = np.load(src)
    np.savez_compressed(OUT / "mnist.npz", images=d["images"], labels=d["labels"],
                        source_index=np.arange(len(d["images"])), source_sha256=np.array(sha256(src)))
    print(f"mnist: {len(d['images'])} images")


def vendor_digits() -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * 255.0 / 16.0).astype(np.uint8)
    keep = first_occurrences(images)
    np.savez_compressed(OUT / "digits.npz", images=images[keep], labels=d.target[keep].astype(np.uint8),
                        source_index=keep, source_sha256=np.array(hashlib.sha256(d.images.tobytes()).hexdigest()))
    print(f"digits: {len(keep)} images ({len(images) - len(keep)} duplicates dropped)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=Path("../shared/data"))
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    vendor_fashion(args.source)
    vendor_mnist(args.source)
    vendor_digits()
