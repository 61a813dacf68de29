"""Every path the project uses, computed from the repository root.

Never from the working directory: notebooks run by papermill, tests and the
batch driver all agree on where things live.  Two environment variables move
the writable trees (tests point them at temporary folders):

- ``PROVLIB_CACHE_DIR``: config-keyed artifacts (models, samples, features).
- ``PROVLIB_OUTPUT_DIR``: the root holding ``figures/`` and ``reports/``.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
EMBEDDED_DIR = PACKAGE_DIR / "embedded"
EMBEDDED_DATA_DIR = EMBEDDED_DIR / "data"
EMBEDDED_MODELS_DIR = EMBEDDED_DIR / "models"
EMBEDDED_PROBES_DIR = EMBEDDED_DIR / "probes"      # fitted origin probes of the shipped models (provlib fit)
EMBEDDED_EXAMPLES_DIR = EMBEDDED_DIR / "examples"  # a few images for the README's provlib verdict call
EMBEDDED_SUSPECTS_DIR = EMBEDDED_DIR / "suspects"  # LoRA adapters of the attribution study's suspect models
EMBEDDED_RELEASES_DIR = EMBEDDED_DIR / "releases"  # what each source model of that study publishes
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def portable(path) -> str:
    """``path`` as committed outputs name it: relative to the repository (or to the output root, where the
    tests move it) when inside, else its file name only; never the folder of one machine."""
    path = Path(path).resolve()
    for root in (REPO_ROOT, output_root().resolve()):
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name


def cache_dir() -> Path:
    """Root of the config-keyed artifact cache (created on demand)."""
    return Path(os.environ.get("PROVLIB_CACHE_DIR", REPO_ROOT / ".cache"))


def output_root() -> Path:
    """Folder that holds ``figures/`` and ``reports/``."""
    return Path(os.environ.get("PROVLIB_OUTPUT_DIR", REPO_ROOT))


def figures_dir(profile: str) -> Path:
    """Where the figures of one profile go (PNG and PDF)."""
    return output_root() / "figures" / profile


def reports_dir(profile: str) -> Path:
    """Where the executed notebooks, tables and the index of one profile go."""
    return output_root() / "reports" / profile
