"""Which notebooks must run before which: declared once, here.

Notebooks never read each other's tables; they share the cache
(:func:`provlib.io.cached`): features, generations, scores that one notebook
computes and later ones read.  Two notebooks computing one artifact at once is
safe (the second waits on the artifact's lock) but wastes a lane, so the batch
driver's lanes (:mod:`provlib.batch`, ``--lanes``) start a notebook only after
the notebooks it **needs** (:data:`NEEDS`) have finished.

The declaration is what runs observed: the pass ledger records the cached
artifacts each notebook computed and read, and the run index lists, per
notebook, the notebooks whose artifacts it read (``reads_from`` in
``run.json``).  After adding a notebook, run the batch once in one lane from an
empty cache and copy its ``reads_from`` here.
"""
from __future__ import annotations

from typing import Mapping, Sequence

# notebook stem prefix -> the prefixes of the notebooks whose cached artifacts it reads (as a tiny and a cpu run
# observed them: 01 computes every target's trajectory features and samples, 02 the peers' measurements, 10 the
# open world's generators and their features, 20 SeDID's stepwise errors, 30 every suspect's answers).  16 and
# 30 need nothing: they start at once beside 01.  A notebook may also read what a *later* notebook computed
# first in lanes (09 and 12 both compute the generated samples' features): an artifact either computes, not a need.
NEEDS: dict[str, tuple[str, ...]] = {
    "02": ("01",),
    "03": ("01", "02"),   # 02's evaluated tables (io.cached_state; recorded by the ledger since 2026-12-06)
    "04": ("01", "02"),
    "05": ("01", "02"),
    "06": ("01", "02"),
    "07": ("01", "02"),
    "08": ("01", "02"),
    "09": ("01", "02"),
    "10": ("01", "02"),
    "11": ("01", "10"),
    "12": ("01", "02"),
    "13": ("01", "02", "10"),
    "14": ("01", "02"),
    "15": ("01", "02", "10"),
    "17": ("02",),        # its pixel reference is 02's fm500 evaluation (beside 02 it would wait on its locks)
    "20": ("01",),
    "21": ("01", "20"),
    "31": ("30",),
    "32": ("30",),
    "33": ("30",),
}


def prefix(stem: str) -> str:
    """The number a notebook is known by (``02`` for ``02_membership_inference``)."""
    return stem.split("_", 1)[0]


def needs_of(stem: str, stems: Sequence[str] | None = None) -> list[str]:
    """The notebooks ``stem`` needs, directly (stems among ``stems`` when given, else prefixes)."""
    wanted = NEEDS.get(prefix(stem), ())
    if stems is None:
        return list(wanted)
    return [s for s in stems if prefix(s) in wanted]


def closure(stem: str, stems: Sequence[str]) -> set[str]:
    """Every notebook ``stem`` needs, directly or through others."""
    seen: set[str] = set()
    todo = needs_of(stem, stems)
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo += needs_of(s, stems)
    return seen


def lane_order(stems: Sequence[str], expected: Mapping[str, float]) -> list[str]:
    """``stems`` in the order lanes should start them: by the longest chain of expected seconds that waits on
    each (its own and that of everything needing it), longest first; ties keep the notebooks' order.
    Notebooks with no expected time count one second."""
    stems = list(stems)
    needed_by = {s: [o for o in stems if s in needs_of(o, stems)] for s in stems}
    memo: dict[str, float] = {}

    def chain(s: str) -> float:
        if s not in memo:
            memo[s] = float(expected.get(s) or 1.0) + max((chain(o) for o in needed_by[s]), default=0.0)
        return memo[s]

    return sorted(stems, key=lambda s: (-chain(s), stems.index(s)))
