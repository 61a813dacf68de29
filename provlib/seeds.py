"""Every seed the package derives, in one place.

Two kinds, both pure functions of integers and names, so that a result never
depends on the batch, the order or the process that computed it:

- :func:`noise_seed`: the noise of one image at one timestep (per-sample
  seeded noise, as NVlabs/edm's ``StackedRandomGenerator``): the trajectory
  features draw eps for (run seed, image id, t); samplers and the VAE draw a
  sample's noise with t = -1.
- :func:`stream_seed`: one seed per named stream of a run (a dataset's
  noise, a subset, the training rows of a class, a sampler's draw), so two
  streams of one run never share random numbers.
"""
from __future__ import annotations

import hashlib

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def noise_seed(seed: int, image_id: int, t: int) -> int:
    """The 63-bit seed of the noise of image ``image_id`` at timestep ``t`` in run ``seed``."""
    return _splitmix64(_splitmix64(_splitmix64(int(seed)) ^ int(image_id)) ^ int(t)) >> 1


def stream_seed(seed: int, stream: str, *, nbytes: int = 7, byteorder: str = "big") -> int:
    """The seed of the named ``stream`` of run ``seed``: the first ``nbytes`` bytes of sha256("seed:stream").

    Every stream of the study uses the default (56 bits, big-endian).  The
    training-data attribution study (:mod:`provlib.study.suspects`) drew its
    shipped pools, releases and suspects with 8 little-endian bytes; it passes
    them so that those draws stay what the shipped models were trained on.
    """
    return int.from_bytes(hashlib.sha256(f"{seed}:{stream}".encode()).digest()[:nbytes], byteorder)
