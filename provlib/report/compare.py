"""Compare a regenerated set of outputs with the committed one, output by output (the check mode).

What is compared, per notebook stem (files named ``<stem>...``, as the run index assigns them):

- tables (``.csv``): cell by cell, as written; the measured-time columns (:data:`TIMING_COLUMNS`)
  are set aside (a difference there is reported, not counted);
- tables (``.md``): line by line, table rows cell by cell with the same columns set aside;
- claims (``<stem>_claims.json``): every field of every claim;
- figures (``.png``): by bytes; where the bytes differ, by pixels (same size, every channel
  within :data:`PIXEL_TOLERANCE`), and the line says which;
- figures (``.pdf``): by bytes; where they differ, by their PNG twin's pixels (a PDF is not
  rasterised here), and the line says so;
- ``claims.md`` (a whole run only): line by line, the run-status sentence set aside.

Not compared: the executed notebooks (``.ipynb``: execution times and kernel ids; their numbers are
in the tables and claims above), ``README.md`` and ``run.json`` (the record of the run itself).
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TIMING_COLUMNS = ("ms / image", "seconds", "seconds_per_image")   # measured wall time, machine-dependent
PIXEL_TOLERANCE = 2 / 255   # largest per-channel difference of two PNGs that still count as the same figure
SUFFIXES = (".csv", ".md", ".json", ".png", ".pdf")
_STATUS = re.compile(r"Run status: .*?\. ")


@dataclass(frozen=True)
class Comparison:
    """One output: ``status`` is ``same`` or ``differs``; ``detail`` says how (or what was set aside)."""

    name: str
    status: str
    detail: str = ""

    @property
    def line(self) -> str:
        return f"{self.name}: {self.status}" + (f" ({self.detail})" if self.detail else "")


def outputs_of(folder: Path, stems: list[str], chosen: list[str]) -> dict[str, Path]:
    """``{file name: path}`` of the outputs in ``folder`` that belong to one of ``chosen`` (each file to the
    notebook with the longest matching stem among ``stems``)."""
    if not folder.is_dir():
        return {}
    out = {}
    for f in folder.iterdir():
        owner = max((s for s in stems if f.name.startswith(s)), key=len, default=None)
        if f.is_file() and f.suffix in SUFFIXES and owner in chosen and f.name != "run.json":
            out[f.name] = f
    return out


def compare_folders(committed: Path, fresh: Path, stems: list[str], chosen: list[str]) -> list[Comparison]:
    """Every output of the ``chosen`` notebooks in either folder, compared (sorted by name)."""
    old, new = outputs_of(committed, stems, chosen), outputs_of(fresh, stems, chosen)
    out = []
    for name in sorted(set(old) | set(new)):
        if name not in new:
            out.append(Comparison(name, "differs", "committed, not regenerated"))
        elif name not in old:
            out.append(Comparison(name, "differs", "regenerated, not committed"))
        else:
            out.append(compare_file(old[name], new[name]))
    return out


def compare_file(committed: Path, fresh: Path) -> Comparison:
    """One output against its committed copy, by the rule of its kind (module docstring)."""
    name, a, b = committed.name, committed.read_bytes(), fresh.read_bytes()
    if committed.suffix == ".pdf":
        return _pdf(committed, fresh, a == b)
    if a == b:
        return Comparison(name, "same")
    if committed.suffix == ".png":
        return _png(name, a, b)
    if committed.suffix == ".csv":
        return _rows(name, list(csv.reader(io.StringIO(a.decode()))), list(csv.reader(io.StringIO(b.decode()))))
    if committed.suffix == ".json":
        return _claims(name, json.loads(a), json.loads(b))
    if name == "claims.md":
        return _lines(name, _STATUS.sub("", a.decode()).splitlines(), _STATUS.sub("", b.decode()).splitlines())
    return _markdown(name, a.decode().splitlines(), b.decode().splitlines())


def _rows(name: str, old: list[list[str]], new: list[list[str]]) -> Comparison:
    """A table's rows (header first), cell by cell with the timing columns set aside."""
    if not old or not new or old[0] != new[0]:
        return Comparison(name, "differs", f"columns {old[:1]} -> {new[:1]}")
    if len(old) != len(new):
        return Comparison(name, "differs", f"{len(old) - 1} rows -> {len(new) - 1}")
    timing = [j for j, col in enumerate(old[0]) if col.strip() in TIMING_COLUMNS]
    cells = [(i, j) for i, (a, b) in enumerate(zip(old, new)) for j, (x, y) in enumerate(zip(a, b)) if x != y]
    real = [c for c in cells if c[1] not in timing]
    if real or any(len(a) != len(b) for a, b in zip(old, new)):
        return Comparison(name, "differs", _first_cells(old, new, real))
    if cells:
        return Comparison(name, "same", f"measured time differs in {len(cells)} cell(s), set aside")
    return Comparison(name, "same")


def _first_cells(old, new, cells, shown: int = 3) -> str:
    if not cells:
        return "a row's length differs"
    head = old[0]
    text = "; ".join(f"row {i}, {head[j] if j < len(head) else j}: {old[i][j]!r} -> {new[i][j]!r}"
                     for i, j in cells[:shown])
    return f"{len(cells)} cell(s): {text}" + ("; ..." if len(cells) > shown else "")


def _markdown(name: str, old: list[str], new: list[str]) -> Comparison:
    """Markdown: table rows through :func:`_rows` (per table), every other line as it is."""
    def split(lines):
        tables, text, current = [], [], []
        for line in lines + [""]:
            if line.startswith("|"):
                current.append([c.strip() for c in line.strip().strip("|").split("|")])
            else:
                if current:
                    tables.append([r for r in current if not set("".join(r)) <= set("-: ")])  # no rule row
                    current = []
                text.append(line)
        return tables, text
    (t_old, x_old), (t_new, x_new) = split(old), split(new)
    if x_old != x_new:
        return _lines(name, x_old, x_new)
    if len(t_old) != len(t_new):
        return Comparison(name, "differs", f"{len(t_old)} tables -> {len(t_new)}")
    results = [_rows(name, a, b) for a, b in zip(t_old, t_new)]
    return next((r for r in results if r.status == "differs"), None) or \
        next((r for r in results if r.detail), Comparison(name, "same"))


def _lines(name: str, old: list[str], new: list[str]) -> Comparison:
    diff = [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
    if not diff and len(old) == len(new):
        return Comparison(name, "same")
    if not diff:
        return Comparison(name, "differs", f"{len(old)} lines -> {len(new)}")
    i = diff[0]
    return Comparison(name, "differs", f"{len(diff)} line(s), first line {i + 1}: {old[i][:120]!r} -> "
                                       f"{new[i][:120]!r}")


def _claims(name: str, old: dict, new: dict) -> Comparison:
    a, b = old.get("claims", []), new.get("claims", [])
    if len(a) != len(b):
        return Comparison(name, "differs", f"{len(a)} claims -> {len(b)}")
    for i, (x, y) in enumerate(zip(a, b)):
        keys = [k for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
        if keys:
            return Comparison(name, "differs", f"claim {i + 1} ({x.get('claim', '')[:60]!r}): {keys[0]} "
                                               f"{x.get(keys[0])!r} -> {y.get(keys[0])!r}")
    if old.get("provenance") != new.get("provenance"):
        return Comparison(name, "differs", f"provenance {old.get('provenance')!r} -> {new.get('provenance')!r}")
    return Comparison(name, "same")


def _pixels(data: bytes) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(data), format="png")


def _png(name: str, a: bytes, b: bytes) -> Comparison:
    x, y = _pixels(a), _pixels(b)
    if x.shape != y.shape:
        return Comparison(name, "differs", f"size {x.shape[1]}x{x.shape[0]} -> {y.shape[1]}x{y.shape[0]}")
    worst, share = float(np.abs(x - y).max()), float((np.abs(x - y) > 0).any(-1).mean())
    if worst <= PIXEL_TOLERANCE:
        return Comparison(name, "same", f"bytes differ, pixels within {PIXEL_TOLERANCE * 255:.0f}/255 "
                                        f"({share:.2%} of pixels differ, at most {worst * 255:.1f}/255)")
    return Comparison(name, "differs", f"pixels: {share:.2%} differ, at most {worst * 255:.0f}/255")


def _pdf(committed: Path, fresh: Path, equal: bool) -> Comparison:
    if equal:
        return Comparison(committed.name, "same")
    twins = committed.with_suffix(".png"), fresh.with_suffix(".png")
    if not all(t.is_file() for t in twins):
        return Comparison(committed.name, "differs", "bytes (no PNG twin to compare by pixels)")
    png = compare_file(*twins)
    return Comparison(committed.name, png.status, f"bytes differ; by its PNG twin: {png.status}"
                      + (f", {png.detail}" if png.detail else ""))
