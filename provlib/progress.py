"""Progress bars for the long steps (sampling, features, training), and where they go.

Interactively, a bar goes where tqdm puts it (the notebook's stderr, or the
terminal).  Under the batch driver, a notebook's stderr ends up in the executed
notebook, which is committed: there the driver sets ``PROVLIB_PROGRESS_FILE``
to a file it tails, and every bar is written to that file instead, so the
terminal running ``make reproduce`` shows each step with its rate and ETA while
the notebooks' outputs stay free of progress bars.
"""
from __future__ import annotations

import os
from typing import IO, Iterable

from tqdm import tqdm

ENV = "PROVLIB_PROGRESS_FILE"
INTERVAL_ENV = "PROVLIB_PROGRESS_INTERVAL"  # seconds between updates written to the relay file
DEFAULT_INTERVAL = 2.0

_relay: dict[str, IO[str]] = {}


def relay_file() -> IO[str] | None:
    """The open relay file when the batch driver asked for one, else None."""
    path = os.environ.get(ENV)
    if not path:
        return None
    if path not in _relay:
        _relay[path] = open(path, "a", buffering=1, encoding="utf-8")
    return _relay[path]


def progress_bar(iterable: Iterable | None = None, *, desc: str, total: int | None = None,
                 enabled: bool = True, unit: str = "it", initial: int = 0) -> tqdm:
    """A tqdm bar named ``desc`` (the step), sent to the batch driver's terminal when one listens.

    ``enabled=False`` gives a silent bar that still counts (so callers never
    branch on it).
    """
    out = relay_file()
    if out is not None:
        return tqdm(iterable, desc=desc, total=total, disable=not enabled, unit=unit, initial=initial,
                    file=out, mininterval=float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)), ncols=100)
    return tqdm(iterable, desc=desc, total=total, disable=not enabled, unit=unit, initial=initial)
