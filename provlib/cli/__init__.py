"""The ``provlib`` command: fit a 3-way origin probe on a model, and ask where images come from.

    provlib fit --model DIR [--lora LORA] --members SRC --reference SRC [--reference SRC ...] [--budget PASSES]
                [--prompt TEXT] --out PROBE_DIR
    provlib verdict --model DIR [--lora LORA] --probe PROBE_DIR [--max-fpr 0.01] [--prompt TEXT] [--json] IMAGE...
    provlib keys (--study-source NAME | --source DIR --base DIR --training-images DIR
                  --shadow-innocent LORA... --shadow-infringing LORA...) [--n 30] --out KEYS_DIR
    provlib attribute --keys KEYS_DIR --base DIR --suspect-lora LORA [--source DIR] [--alpha A] [--json]

A model is a diffusers pipeline directory: a pixel-space DDPM (``DDPMPipeline``)
or a latent text-to-image model in Stable Diffusion's layout
(``StableDiffusionPipeline``), optionally with a LoRA fine-tune (a peft adapter
folder, or diffusers' ``pytorch_lora_weights.safetensors``).  A text-to-image
model conditions each image on its caption: a ``captions.csv`` or
``captions.jsonl`` beside the images (:mod:`provlib.captions`), else
``--prompt`` for every image, else the empty prompt.

Exit status: 0 when every image was answered, 3 when some images could not be
read (the others are answered, each bad one named on stderr), 1 on an error
that stops the command (a model or probe that cannot be used), 2 on a usage error.

An image source SRC is a folder of image files or ``split:TARGET/SPLIT``, a
split of one of the study's targets (e.g. ``split:fm500/member``).  See
:mod:`provlib.detector.origin_probe` for what the probe is and how it is stored.

``keys`` and ``attribute`` answer the training-data attribution question (was a
suspect fine-tuned on a source model's generations?): see
:mod:`provlib.attribution.audit` and :mod:`provlib.attribution.decision`.
"""
from __future__ import annotations

from . import attribution, origin   # noqa: F401  (each registers its commands on the group)
from .common import EXIT_BAD_IMAGES, main

__all__ = ["EXIT_BAD_IMAGES", "main"]
