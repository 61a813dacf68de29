"""Versions of what is installed: recorded beside every table (:mod:`provlib.report`) and in the batch index.

Its own module, importing nothing heavy, so that a notebook kernel can record
versions without importing the batch driver (papermill and its JSON-schema
machinery take about 1.5 s to import).
"""
from __future__ import annotations

import re
from importlib import metadata

FALLBACK_PACKAGES = ("torch", "diffusers", "accelerate", "numpy", "scipy", "pandas", "scikit-learn",
                     "matplotlib", "seaborn", "pillow", "safetensors", "huggingface-hub", "papermill",
                     "nbclient", "nbformat", "ipykernel", "jupyterlab", "tqdm", "joblib")


def package_versions() -> dict[str, str | None]:
    """Installed versions of provlib's declared dependencies (and provlib itself)."""
    try:
        reqs = [r for r in metadata.requires("provlib") or [] if "extra ==" not in r]
        names = [re.match(r"[A-Za-z0-9._-]+", r).group(0) for r in reqs]
    except metadata.PackageNotFoundError:
        names = []
    versions: dict[str, str | None] = {}
    for name in ["provlib", *(names or FALLBACK_PACKAGES)]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
