"""Does the well-kept watermark library work at the study's 16x16 resolution?  (Measured once; not a test.)

    python3 -m venv /tmp/wm && /tmp/wm/bin/pip install --no-deps invisible-watermark==0.2.0 \
        && /tmp/wm/bin/pip install numpy opencv-python-headless PyWavelets Pillow
    PYTHONPATH=/tmp/wm/lib/python3.11/site-packages .venv/bin/python scripts/try_invisible_watermark.py

(``invisible-watermark`` imports torch, taken here from the project's environment;
``--no-deps`` keeps pip from pulling a CUDA build of it.)  Prints the bit accuracy
of its DWT-DCT methods on 50 Fashion-MNIST images at each size, and when the mark
is embedded at 256x256 and the image then stored at 16x16.
"""
import cv2
import numpy as np
from imwatermark import WatermarkDecoder, WatermarkEncoder

from provlib.paths import EMBEDDED_DATA_DIR

images = np.load(EMBEDDED_DATA_DIR / "fashion_mnist.npz")["images"][:50]
bits = list(np.random.default_rng(0).integers(0, 2, 32))
METHODS = ("dwtDct", "dwtDctSvd")


def mark(x, method):
    enc = WatermarkEncoder()
    enc.set_watermark("bits", bits)
    return enc.encode(cv2.cvtColor(x, cv2.COLOR_GRAY2BGR), method)


def accuracy(w, method):
    return np.mean(np.array(WatermarkDecoder("bits", 32).decode(w, method)) == np.array(bits))


for size in (16, 32, 64, 128, 256):
    for method in METHODS:
        try:
            acc = np.mean([accuracy(mark(cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA), method), method)
                           for im in images])
            print(f"{size}x{size} {method}: bit accuracy {acc:.3f}")
        except RuntimeError as err:
            print(f"{size}x{size} {method}: refused ({err})")
for method in METHODS:
    accs = []
    for im in images:
        big = cv2.resize(cv2.resize(im, (16, 16), interpolation=cv2.INTER_AREA), (256, 256))
        small = cv2.resize(mark(big, method), (16, 16), interpolation=cv2.INTER_AREA)
        accs.append(accuracy(cv2.resize(small, (256, 256)), method))
    print(f"embedded at 256x256, stored at 16x16, read at 256x256, {method}: bit accuracy {np.mean(accs):.3f}")
