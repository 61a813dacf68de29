"""An origin probe on disk: ``probe.safetensors`` + ``probe.json``, sealed by a content digest.

Nothing in a probe executes (safetensors and JSON).  What it holds is sealed
by a sha256 **digest** over the settings in ``probe.json`` (the columns, the
noise seed, the model's fingerprint, the kinds of calibration rows, ...) and
every array in ``probe.safetensors`` (weights, standardisation, calibration
rows), recorded in ``probe.json``: an edited timestep, weight or fingerprint
no longer matches it and the probe is refused, naming the file.  A probe
directory is written only where nothing but a probe was (:func:`check_out_dir`).
A probe is a :class:`provlib.sealed.Kind` of sealed bundle.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import sealed

FORMAT = "provlib-origin-probe/3"       # kinds of calibration rows, calibration features, digest
OLD_FORMATS = ("provlib-origin-probe/1", "provlib-origin-probe/2")
PROBE = sealed.Kind(noun="probe", what="an origin probe", stem="probe", format=FORMAT,
                    remedy="refit it with provlib fit", make="make one with provlib fit", old_formats=OLD_FORMATS,
                    old_note="written before probes recorded the kinds of their calibration rows and a digest")
FILES = PROBE.files
digest = sealed.digest


def is_probe_dir(d: Path) -> bool:
    """Whether ``d`` holds exactly a probe written by provlib (``probe.json`` naming a provlib probe format)."""
    return sealed.is_bundle_dir(d, PROBE)


def check_out_dir(directory: str | Path) -> Path:
    """Refuse, before any work, a probe directory that provlib may not write (:func:`provlib.sealed.check_out_dir`)."""
    return sealed.check_out_dir(directory, PROBE)


def write(directory: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Seal ``meta`` with the digest and write the probe, replacing only a probe provlib wrote."""
    return sealed.write(directory, arrays, meta, PROBE)


def read(directory: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` of a probe directory whose digest matches; anything else is refused, naming it."""
    return sealed.read(directory, PROBE)
