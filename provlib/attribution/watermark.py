"""The watermark baseline: a classical DCT spread-spectrum watermark of 32 bits, blind decoding.

Every image the source model releases carries the same 32-bit message.  Each
bit ``j`` owns a pattern ``P_j`` over the image's high-frequency DCT
coefficients (orthonormal-DCT index sum ``u + v >= 16``: 120 coefficients at
16x16, where Fashion-MNIST's content is weakest, std about 0.08 against 0.7 at
the lowest frequencies); the patterns are orthonormal (no cross-talk between
bits) and drawn from the key.  Embedding adds ``strength * sum_j s_j P_j``
(``s_j = +-1`` for bit ``j``) to those coefficients; decoding reads bit ``j`` as
the sign of the image's correlation with ``P_j``.  No reference image is needed.

The library route was tried first: ``invisible-watermark``'s DWT-DCT methods
need images far larger than 16x16 for 32 bits (see docs/training_data_attribution.md).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.fft import dctn, idctn

from ..data import check_images

BITS = 32
MIN_INDEX_SUM = 16      # u + v >= 16: the high-frequency band
STRENGTH = 0.25         # per-bit amplitude in orthonormal DCT units (images in [-1, 1])


def band(size: int) -> np.ndarray:
    """Boolean (size, size) mask of the DCT coefficients that carry the watermark."""
    u, v = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    m = (u + v) >= MIN_INDEX_SUM * size // 16
    if m.sum() < BITS:
        raise ValueError(f"images of {size}x{size} have only {int(m.sum())} coefficients in the band, "
                         f"fewer than {BITS} bits")
    return m


def patterns(size: int, key: int) -> np.ndarray:
    """(BITS, n_band) orthonormal spreading patterns drawn from ``key``."""
    n = int(band(size).sum())
    q, _ = np.linalg.qr(np.random.default_rng(key).standard_normal((n, BITS)))
    return q.T


def message(key: int) -> np.ndarray:
    """The 32-bit message (0/1) of ``key``."""
    return np.random.default_rng([key, 1]).integers(0, 2, BITS)


def _coefficients(images: torch.Tensor) -> np.ndarray:
    check_images(images, warn_range=False)
    if images.shape[1] != 1 or images.shape[2] != images.shape[3]:
        raise ValueError(f"the watermark takes square single-channel images, got {tuple(images.shape[1:])}")
    return dctn(images[:, 0].double().numpy(), axes=(1, 2), norm="ortho")


def embed(images: torch.Tensor, key: int, bits: np.ndarray | None = None, strength: float = STRENGTH) -> torch.Tensor:
    """``images`` (N, 1, S, S) in [-1, 1] carrying ``bits`` (default: :func:`message` of ``key``), clamped to [-1, 1]."""
    bits = message(key) if bits is None else np.asarray(bits)
    if bits.shape != (BITS,) or not np.isin(bits, (0, 1)).all():
        raise ValueError(f"bits must be {BITS} values of 0 or 1")
    C = _coefficients(images)
    m = band(C.shape[-1])
    C[:, m] += strength * ((2 * bits - 1) @ patterns(C.shape[-1], key))
    out = torch.from_numpy(idctn(C, axes=(1, 2), norm="ortho")).float()[:, None]
    return out.clamp_(-1, 1)


def decode(images: torch.Tensor, key: int) -> np.ndarray:
    """(N, BITS) decoded bits (0/1) of each image."""
    C = _coefficients(images)
    corr = C[:, band(C.shape[-1])] @ patterns(C.shape[-1], key).T
    return (corr > 0).astype(int)


def bit_accuracy(images: torch.Tensor, key: int, bits: np.ndarray | None = None) -> np.ndarray:
    """(N,) share of the 32 bits each image carries correctly (about 0.5 on an unmarked image)."""
    bits = message(key) if bits is None else np.asarray(bits)
    return (decode(images, key) == bits).mean(1)


def conf(bit_accuracies, tau: float) -> float:
    """The watermark's conf, comparable to the key samples': the share of the suspect's generations whose
    decoded bit accuracy is at least ``tau`` (``tau`` set on shadow models, like delta_0)."""
    a = np.asarray(bit_accuracies, dtype=float)
    if a.ndim != 1 or not len(a):
        raise ValueError("conf needs a non-empty 1-D array of bit accuracies")
    return float((a >= tau).mean())
