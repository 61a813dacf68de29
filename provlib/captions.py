"""Captions of a folder of images: the prompt each image is conditioned on by a text-to-image model.

A folder may hold ``captions.csv`` or ``captions.jsonl`` (not both), in the
layout of Hugging Face ``datasets``' image-folder metadata: a ``file_name``
(the image's path relative to the folder) and a ``text`` (its caption) per
row::

    file_name,text
    member000.png,a photo of a sneaker

    {"file_name": "member000.png", "text": "a photo of a sneaker"}

:func:`prompts_for` gives one prompt per image: from the folder's caption
file, or one ``prompt`` for all, or ``None`` (unconditional: the empty prompt
for a text-to-image model).  A caption file that misses images names them;
:func:`conditioning` says in words which conditioning a result used.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

CAPTION_FILES = ("captions.csv", "captions.jsonl")


class CaptionError(ValueError):
    """A caption file that cannot be used: unreadable, ambiguous, or missing images."""


def caption_file(folder: str | Path) -> Path | None:
    """The folder's caption file, or None; a folder with both kinds is refused."""
    found = [Path(folder) / name for name in CAPTION_FILES if (Path(folder) / name).is_file()]
    if len(found) > 1:
        raise CaptionError(f"{folder} holds both {' and '.join(f.name for f in found)}: keep one")
    return found[0] if found else None


def read_captions(path: str | Path) -> dict[str, str]:
    """``{file_name: text}`` of a ``captions.csv`` or ``captions.jsonl``; a row without both fields, a repeated
    file name or a malformed line is refused, naming the file and the row."""
    path = Path(path)
    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        else:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as err:
        raise CaptionError(f"unreadable caption file {path}: {err}") from err
    out: dict[str, str] = {}
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str) \
                or not isinstance(row.get("text"), str):
            raise CaptionError(f"{path}, row {i}: a file_name and a text are needed, got {row!r}")
        name = Path(row["file_name"]).as_posix()
        if name in out:
            raise CaptionError(f"{path}: {name} is captioned twice (rows up to {i})")
        out[name] = row["text"]
    return out


def prompts_for(files: Sequence[str | Path], folder: str | Path | None = None,
                prompt: str | None = None) -> list[str] | None:
    """One prompt per file: ``prompt`` for every image, else the captions of ``folder``'s caption file (each
    file named relative to ``folder``), else None (no captions: unconditional)."""
    if prompt is not None:
        return [prompt] * len(files)
    source = caption_file(folder) if folder is not None else None
    if source is None:
        return None
    captions = read_captions(source)
    names = [Path(f).resolve().relative_to(Path(folder).resolve()).as_posix() for f in files]
    missing = [n for n in names if n not in captions]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CaptionError(f"{source} has no caption for {len(missing)} of the {len(names)} images: {shown}")
    return [captions[n] for n in names]


def conditioning(prompts: Sequence[str] | None, source: str | None = None) -> str:
    """Which conditioning a result used, in words (recorded beside it)."""
    if prompts is None:
        return "unconditional (the empty prompt, or no condition)"
    distinct = len(set(prompts))
    where = f" from {source}" if source else ""
    return f"captions{where}: {len(prompts)} images, {distinct} distinct prompt{'s' if distinct != 1 else ''}"


__all__ = ["CAPTION_FILES", "CaptionError", "caption_file", "conditioning", "prompts_for", "read_captions"]
