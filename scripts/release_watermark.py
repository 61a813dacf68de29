"""Bit accuracy of each source's shipped release under every source's watermark key, and the share of its
pixels at the clipping floor -1 (the method card's "Watermark baseline" numbers).

    .venv/bin/python scripts/release_watermark.py
"""
from provlib.attribution import watermark as W
from provlib.study import suspects as S

SOURCES = ("fmc-src-a", "fmc-src-b")

for source in SOURCES:
    x, _ = S.release(source, progress=False)
    acc = {key: float(W.bit_accuracy(x, S.watermark_key(key)).mean()) for key in SOURCES}
    print(f"{source}: {len(x)} images; bit accuracy " + ", ".join(f"{k} key {v:.3f}" for k, v in acc.items())
          + f"; pixels at -1: {float((x <= -0.999).float().mean()):.3f}")
