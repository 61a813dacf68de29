"""Atomic writes and config-keyed artifact caching.

A file appears under its final name only once it is complete (written to a
temporary sibling, then ``os.replace``d), so an interrupted run never leaves a
half-written artifact that a re-run would trust.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from . import paths


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_torch_save(obj: Any, path: Path) -> Path:
    return atomic_write(path, lambda p: torch.save(obj, p))


def torch_load(path: Path) -> Any:
    """``torch.load`` that names the file when it is unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"corrupt or unreadable artifact {path}: {err}") from err


def config_key(config: dict) -> str:
    """Short stable hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def artifact_dir(kind: str, config: dict) -> Path:
    """Cache folder of one artifact: ``<cache>/<kind>/<config hash>/`` holding ``config.json``."""
    d = paths.cache_dir() / kind / config_key(config)
    if not (d / "config.json").exists():
        atomic_write_text(d / "config.json", json.dumps(config, indent=1, sort_keys=True, default=str))
    return d


def cached_tensors(kind: str, config: dict, compute: Callable[[], Any]) -> Any:
    """Load ``<artifact_dir>/result.pt`` if present, else ``compute()`` and save it atomically."""
    path = artifact_dir(kind, config) / "result.pt"
    if path.exists():
        return torch_load(path)
    result = compute()
    atomic_torch_save(result, path)
    return result
