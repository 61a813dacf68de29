"""Sealed bundles: a directory of its own holding ``<stem>.json`` and ``<stem>.safetensors``, sealed by a digest.

What the package writes for a user to keep and hand back later (an origin
probe, a key set) is a :class:`Kind` of sealed bundle.  Nothing in one executes
(safetensors and JSON), and what it holds is sealed by a sha256 **digest** over
the JSON settings and every array, recorded in the JSON: an edited number no
longer matches it and the bundle is refused, naming the file.  A bundle is
written only where nothing but a bundle of the same kind was
(:func:`check_out_dir`): provlib never deletes what it did not write.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import ArtifactError, atomic_write_text, load_tensors, replace_dir, save_tensors


@dataclass(frozen=True)
class Kind:
    """A kind of sealed bundle: what it is called, its files' stem, its format and how a user makes one."""

    noun: str                  # "probe", "key set"
    what: str                  # "an origin probe", "a key set"
    stem: str                  # "probe" -> probe.json, probe.safetensors
    format: str                # "provlib-origin-probe/3"
    remedy: str                # "refit it with provlib fit"
    make: str                  # "make one with provlib fit"
    old_formats: tuple[str, ...] = ()
    old_note: str = ""         # why a bundle of an old format is refused

    @property
    def files(self) -> tuple[str, str]:
        return f"{self.stem}.json", f"{self.stem}.safetensors"

    @property
    def family(self) -> str:
        """The format's name without its version: every version of one kind shares it."""
        return self.format.rsplit("/", 1)[0] + "/"


def digest(arrays: dict[str, np.ndarray], meta: dict) -> str:
    """sha256 over ``meta`` (without its ``digest`` entry, keys sorted) and every array (name, dtype, shape,
    bytes, names sorted)."""
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "digest"}, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def is_bundle_dir(d: Path, kind: Kind) -> bool:
    """Whether ``d`` holds exactly a bundle of ``kind`` written by provlib (its JSON naming the kind's format)."""
    names = sorted(p.name for p in d.iterdir())
    if names != sorted(kind.files):
        return False
    try:
        fmt = json.loads((d / kind.files[0]).read_text()).get("format", "")
    except (ValueError, OSError, AttributeError):
        return False
    return isinstance(fmt, str) and fmt.startswith(kind.family)


def check_out_dir(directory: str | Path, kind: Kind) -> Path:
    """Refuse, before any work, a directory that provlib may not write a bundle into: one holding anything other
    than a bundle of this kind (its files are never touched), a path that is a file, or a place that cannot be
    written.  A missing directory is fine (its parents are created), as is an empty one."""
    d = Path(directory)
    if d.is_symlink() or (d.exists() and not d.is_dir()):
        raise ArtifactError(f"{d} exists and is not a directory: the {kind.noun} goes into a directory of its own")
    if d.is_dir():
        entries = sorted(p.name for p in d.iterdir())
        if entries and not is_bundle_dir(d, kind):
            shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
            raise ArtifactError(f"{d} holds {len(entries)} entries that are not a provlib {kind.noun} ({shown}): "
                                f"give --out a new or empty directory (provlib only replaces a {kind.noun} it wrote)")
    parent = d.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{d.name}.check-", dir=parent)
        os.rmdir(probe)
    except OSError as err:
        raise ArtifactError(f"cannot write the {kind.noun} into {d}: {err.strerror or err} ({parent})") from err
    return d


def write(directory: str | Path, arrays: dict[str, np.ndarray], meta: dict, kind: Kind) -> Path:
    """Seal ``meta`` with the digest and write the bundle, replacing only a bundle of this kind provlib wrote."""
    import torch

    d = check_out_dir(directory, kind)
    meta = json.loads(json.dumps({**meta, "format": kind.format}))   # what reading it back gives (lists, not tuples)
    meta["digest"] = digest(arrays, meta)
    json_name, tensors_name = kind.files

    def fill(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        save_tensors(tmp / tensors_name, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
        atomic_write_text(tmp / json_name, json.dumps(meta, indent=1))

    if d.is_dir() and not any(d.iterdir()):   # the user's empty directory is kept: the files move into it
        tmp = d.with_name(f".{d.name}.new-{os.getpid()}")
        try:
            fill(tmp)
            for name in kind.files:
                os.replace(tmp / name, d / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)   # only the folder provlib just made
        return d
    return replace_dir(d, fill)    # a bundle provlib wrote: replaced once the new one is complete


def read(directory: str | Path, kind: Kind) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` of a bundle of ``kind`` whose digest matches; anything else is refused, naming it."""
    d = Path(directory)
    json_name, tensors_name = kind.files
    if not (d / json_name).exists() or not (d / tensors_name).exists():
        raise ArtifactError(f"{d} is not {kind.what} ({json_name} and {tensors_name} expected; {kind.make})")
    try:
        meta = json.loads((d / json_name).read_text())
    except ValueError as err:
        raise ArtifactError(f"{d / json_name} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ArtifactError(f"{d / json_name} is not a {kind.noun} description (a JSON object expected)")
    if meta.get("format") in kind.old_formats:
        raise ArtifactError(f"{d}: a {kind.noun} of format {meta['format']!r}, {kind.old_note}; {kind.remedy}")
    if meta.get("format") != kind.format:
        raise ArtifactError(f"{d / json_name}: format {meta.get('format')!r}, expected {kind.format!r}")
    tensors, _ = load_tensors(d / tensors_name)
    arrays = {k: v.numpy() for k, v in tensors.items()}
    if meta.get("digest") != digest(arrays, meta):
        raise ArtifactError(f"{d}: the {kind.noun}'s content does not match the digest recorded in {json_name} "
                            f"({json_name} or {tensors_name} was edited or damaged); {kind.remedy}")
    return arrays, meta
