"""Argument checks shared by the kernels, the samplers and the study.

Each raises an error that names the argument, what it must be, and what it got,
instead of letting a bad value reach torch (where it fails deep inside, or
worse, does not fail at all: ``torch.empty`` filled by a loop that never runs).
"""
from __future__ import annotations

from numbers import Integral
from typing import Iterable, Sequence


def positive_int(value, name: str) -> int:
    """``value`` as an int, if it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def names(value, name: str, choices: Sequence[str]) -> tuple[str, ...]:
    """A non-empty list of names, each one of ``choices``, without repeats (a bare string is refused)."""
    if isinstance(value, str):
        raise TypeError(f"{name} must be a list of names, e.g. [{value!r}], not the string {value!r}")
    if not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a list of names from {tuple(choices)}, got {value!r}")
    out = tuple(value)
    unknown = [v for v in out if v not in choices]
    if unknown or not out:
        raise ValueError(f"unknown {name} {unknown}; choose one or more of {tuple(choices)}" if unknown
                         else f"{name} is empty; choose one or more of {tuple(choices)}")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} {list(out)} repeats a name")
    return out
