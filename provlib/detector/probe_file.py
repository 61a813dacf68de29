"""An origin probe on disk: ``probe.safetensors`` + ``probe.json``, sealed by a content digest.

Nothing in a probe executes (safetensors and JSON).  What it holds is sealed
by a sha256 **digest** over the settings in ``probe.json`` (the columns, the
noise seed, the model's fingerprint, the kinds of calibration rows, ...) and
every array in ``probe.safetensors`` (weights, standardisation, calibration
rows), recorded in ``probe.json``: an edited timestep, weight or fingerprint
no longer matches it and the probe is refused, naming the file.  A probe
directory is written only where nothing but a probe was (:func:`check_out_dir`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..io import ArtifactError, atomic_write_text, load_tensors, replace_dir, save_tensors

FORMAT = "provlib-origin-probe/3"       # kinds of calibration rows, calibration features, digest
OLD_FORMATS = ("provlib-origin-probe/1", "provlib-origin-probe/2")
FILES = ("probe.json", "probe.safetensors")


def digest(arrays: dict[str, np.ndarray], meta: dict) -> str:
    """sha256 over ``meta`` (without its ``digest`` entry, keys sorted) and every array (name, dtype, shape,
    bytes, names sorted)."""
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "digest"}, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def is_probe_dir(d: Path) -> bool:
    """Whether ``d`` holds exactly a probe written by provlib (``probe.json`` naming a provlib probe format)."""
    names = sorted(p.name for p in d.iterdir())
    if names != sorted(FILES):
        return False
    try:
        fmt = json.loads((d / "probe.json").read_text()).get("format", "")
    except (ValueError, OSError, AttributeError):
        return False
    return isinstance(fmt, str) and fmt.startswith("provlib-origin-probe/")


def check_out_dir(directory: str | Path) -> Path:
    """Refuse, before any work, a probe directory that provlib may not write: one holding anything other
    than a probe of provlib's (its files are never touched), a path that is a file, or a place that cannot
    be written.  A missing directory is fine (its parents are created), as is an empty one."""
    d = Path(directory)
    if d.is_symlink() or (d.exists() and not d.is_dir()):
        raise ArtifactError(f"{d} exists and is not a directory: the probe goes into a directory of its own")
    if d.is_dir():
        entries = sorted(p.name for p in d.iterdir())
        if entries and not is_probe_dir(d):
            shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
            raise ArtifactError(f"{d} holds {len(entries)} entries that are not a provlib probe ({shown}): "
                                "give --out a new or empty directory (provlib only replaces a probe it wrote)")
    parent = d.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{d.name}.check-", dir=parent)
        os.rmdir(probe)
    except OSError as err:
        raise ArtifactError(f"cannot write the probe into {d}: {err.strerror or err} ({parent})") from err
    return d


def write(directory: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Seal ``meta`` with the digest and write the probe, replacing only a probe provlib wrote."""
    import torch

    d = check_out_dir(directory)
    meta = json.loads(json.dumps({**meta, "format": FORMAT}))   # what reading it back gives (lists, not tuples)
    meta["digest"] = digest(arrays, meta)

    def fill(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        save_tensors(tmp / "probe.safetensors", {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
        atomic_write_text(tmp / "probe.json", json.dumps(meta, indent=1))

    if d.is_dir() and not any(d.iterdir()):   # the user's empty directory is kept: the files move into it
        tmp = d.with_name(f".{d.name}.new-{os.getpid()}")
        try:
            fill(tmp)
            for name in FILES:
                os.replace(tmp / name, d / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)   # only the folder provlib just made
        return d
    return replace_dir(d, fill)    # a probe provlib wrote: replaced once the new one is complete


def read(directory: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` of a probe directory whose digest matches; anything else is refused, naming it."""
    d = Path(directory)
    if not (d / "probe.json").exists() or not (d / "probe.safetensors").exists():
        raise ArtifactError(f"{d} is not an origin probe (probe.json and probe.safetensors expected; "
                            "make one with provlib fit)")
    try:
        meta = json.loads((d / "probe.json").read_text())
    except ValueError as err:
        raise ArtifactError(f"{d / 'probe.json'} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ArtifactError(f"{d / 'probe.json'} is not a probe description (a JSON object expected)")
    if meta.get("format") in OLD_FORMATS:
        raise ArtifactError(f"{d}: a probe of format {meta['format']!r}, written before probes recorded the kinds "
                            "of their calibration rows and a digest; refit it with provlib fit")
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{d / 'probe.json'}: format {meta.get('format')!r}, expected {FORMAT!r}")
    tensors, _ = load_tensors(d / "probe.safetensors")
    arrays = {k: v.numpy() for k, v in tensors.items()}
    if meta.get("digest") != digest(arrays, meta):
        raise ArtifactError(f"{d}: the probe's content does not match the digest recorded in probe.json "
                            "(probe.json or probe.safetensors was edited or damaged); refit it with provlib fit")
    return arrays, meta
