"""Write the example images that the README's `provlib verdict` calls read (provlib/embedded/examples/<model>/).

    python scripts/make_examples.py

In ``fm500/``, one image of each kind, none of which the shipped probe (provlib/embedded/probes/fm500) trained on:
- member.png: a training member of fm500 from the probe's calibration rows;
- generated.png: a new DDPM sample of fm500 (sample id 2,000,000,000, seed 0; the probe's were 10^9 + i);
- heldout.png: a held-out Fashion-MNIST image outside the probe's reference subset (heldout#500);
- external.png: an MNIST digit outside fm500's external split.

And the same four kinds for the latent text-to-image target sd1000 in ``sd1000/``, with ``captions.csv``: each
image's class caption (the generated image's is the prompt it was drawn from; the MNIST digit's "a photo of a
digit ..."), which ``provlib verdict`` reads beside the images.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from provlib import paths
from provlib.detector import origin_probe as origin
from provlib.data import load_embedded, reencode, to_uint8
from provlib.models import load_model
from provlib.sampling import sample
from provlib.study import Run, subset_positions

OUT = paths.EMBEDDED_EXAMPLES_DIR


def latent_examples() -> None:
    """sd1000's four examples and their captions (none in the shipped sd1000 probe's training rows)."""
    import csv

    from provlib.models.interface import open_model
    from provlib.models.latent import dataset_captions

    probe = origin.OriginProbe.load(paths.EMBEDDED_PROBES_DIR / "sd1000")
    target = Run.from_profile("cpu", seed=0).target("sd1000")
    sets = target.image_sets
    calib_members = set(probe.calib_ids[probe.calib_labels == 0].tolist())
    ids = origin.content_ids(reencode(sets["member"].images, "png"))
    m = [i for i, c in enumerate(ids) if c in calib_members][0]
    calib = set(probe.calib_ids.tolist())
    held = origin.content_ids(reencode(sets["heldout"].images, "png"))
    h = [i for i, c in enumerate(held) if c in calib][0]   # a held-out image the probe did not train on
    mnist = load_embedded("mnist")
    e = np.setdiff1d(np.arange(len(mnist)), target.manifest.indices["external"])[0]
    label = 7
    prompt = dataset_captions("fashion_mnist", [label])[0]
    generated = open_model(paths.EMBEDDED_MODELS_DIR / "sd1000").generate(1, prompts=[prompt], num_inference_steps=100,
                                                                         seed=0, ids=[2 * 10 ** 9])[0]
    out = OUT / "sd1000"
    out.mkdir(parents=True, exist_ok=True)
    rows = [("member", sets["member"].images[m], dataset_captions("fashion_mnist", [sets["member"].labels[m]])[0]),
            ("generated", generated, prompt),
            ("heldout", sets["heldout"].images[h], dataset_captions("fashion_mnist", [sets["heldout"].labels[h]])[0]),
            ("external", mnist.images[e], dataset_captions("mnist", [mnist.labels[e]])[0])]
    with open(out / "captions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "text"])
        for name, x, text in rows:
            Image.fromarray(to_uint8(x[None])[0, 0]).save(out / f"{name}.png")
            w.writerow([f"{name}.png", text])
            print(out / f"{name}.png", text)


def main() -> None:
    probe = origin.OriginProbe.load(paths.EMBEDDED_PROBES_DIR / "fm500")
    target = Run.from_profile("cpu", seed=0).target("fm500")
    sets = target.image_sets
    calib_members = set(probe.calib_ids[probe.calib_labels == 0].tolist())
    ids = origin.content_ids(reencode(sets["member"].images, "png"))
    member = sets["member"].images[[i for i, c in enumerate(ids) if c in calib_members][0]]
    used = subset_positions(0, "heldout", len(sets["heldout"]), 1000)
    heldout = sets["heldout"].images[np.setdiff1d(np.arange(len(sets["heldout"])), used)[0]]
    mnist = load_embedded("mnist")
    external = mnist.images[np.setdiff1d(np.arange(len(mnist)), target.manifest.indices["external"])[0]]
    unet, scheduler = load_model(paths.EMBEDDED_MODELS_DIR / "fm500")
    generated = sample(unet, scheduler, 1, num_inference_steps=100, seed=0, ids=[2 * 10 ** 9])[0]
    (OUT / "fm500").mkdir(parents=True, exist_ok=True)
    for name, x in (("member", member), ("generated", generated), ("heldout", heldout), ("external", external)):
        Image.fromarray(to_uint8(x[None])[0, 0]).save(OUT / "fm500" / f"{name}.png")
        print(OUT / "fm500" / f"{name}.png")
    latent_examples()


if __name__ == "__main__":
    main()
