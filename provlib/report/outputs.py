"""Writing the figures and tables of a notebook, with their provenance.

Figures go to ``figures/<profile>/<name>.png|pdf`` and tables to
``reports/<profile>/<name>.md|csv`` (``name`` starts with the notebook's stem
so the batch index can find them).  Every table carries a footer with the
profile, seed and package versions that produced it (and any parameter that
differs from the profile's).  Each takes the notebook's run
(:class:`provlib.study.run.Run`).
"""
from __future__ import annotations

import json
import re
import platform
from pathlib import Path

import matplotlib
import pandas as pd

from .. import paths
from ..versions import package_versions
from ..io import atomic_write, atomic_write_text
from ..study.run import Run
from .verdicts import Verdict, measurable

PACKAGES = ("provlib", "torch", "diffusers", "numpy", "scikit-learn", "matplotlib", "papermill")


def versions() -> dict[str, str]:
    """Python and the versions of the key packages (the batch index lists them all)."""
    installed = package_versions()
    return {"python": platform.python_version(), **{k: installed.get(k) or "not installed" for k in PACKAGES}}


def provenance(run: Run) -> str:
    """One line saying what produced a result: profile, seed, the parameters that differ from the profile's,
    package versions."""
    v = ", ".join(f"{k} {val}" for k, val in versions().items())
    changed = run.overrides()
    changed = " (" + ", ".join(f"{k}={val!r}" for k, val in changed.items()) + ")" if changed else ""
    return f"profile `{run.profile}`{changed}, seed {run.seed}; {v}"


def save_figure(fig: "matplotlib.figure.Figure", run: Run, name: str) -> list:
    """Save ``fig`` as PNG (150 dpi) and PDF under ``figures/<profile>/``; return the paths."""
    out = []
    for ext in ("png", "pdf"):
        path = paths.figures_dir(run.profile) / f"{name}.{ext}"
        atomic_write(path, lambda p, ext=ext: fig.savefig(p, format=ext, dpi=150, bbox_inches="tight",
                                                     metadata=_figure_metadata(ext)))
        out.append(path)
    return out


def _figure_metadata(ext: str) -> dict:
    # no creation dates: the same inputs give the same bytes
    return {"Software": None} if ext == "png" else {"CreationDate": None, "Producer": None}


def save_table(df: pd.DataFrame, run: Run, name: str, *, caption: str = "", floatfmt: str = ".3f") -> list:
    """Save ``df`` as Markdown (with caption and provenance footer) and CSV under ``reports/<profile>/``.

    A TPR at an FPR that the row's negatives cannot measure is written as "not measurable"
    (:func:`unmeasurable_masked`); ``df`` itself is left as it is."""
    d = paths.reports_dir(run.profile)
    df = unmeasurable_masked(df)
    md_text = (f"{caption}\n\n" if caption else "") + df.to_markdown(index=False, floatfmt=floatfmt)
    md_text += f"\n\n_Computed by provlib: {provenance(run)}._\n"
    return [atomic_write_text(d / f"{name}.md", md_text), atomic_write_text(d / f"{name}.csv", df.to_csv(index=False))]


_TPR_COLUMN = re.compile(r"^(?:macro_)?tpr@([0-9.]+)%(?:fpr)?(?:_lo|_hi)?$")
NEGATIVES = ("n_neg", "negatives", "non-members")   # columns that count the negatives behind a row's TPRs


def unmeasurable_masked(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every TPR-at-FPR cell (``tpr@0.1%fpr``, ``macro_tpr@0.1%`` and their ``_lo`` / ``_hi``) that its
    row's negatives cannot measure (fewer than 1 / FPR: :func:`provlib.report.verdicts.measurable`) replaced by
    ``"not measurable"``.  The negatives are read from ``n_neg``, ``negatives`` (3-way tables: the fewest of
    any class) or ``non-members``, else from the ``negatives_<class>`` columns; a table without them is returned unchanged."""
    tpr = {c: float(m.group(1)) / 100 for c in df.columns if isinstance(c, str) and (m := _TPR_COLUMN.match(c))}
    per_class = [c for c in df.columns if isinstance(c, str) and c.startswith("negatives_")]
    source = next((c for c in NEGATIVES if c in df.columns and pd.api.types.is_numeric_dtype(df[c])), None)
    if not tpr or (source is None and not per_class):
        return df
    negatives = df[source] if source is not None else df[per_class].min(axis=1)
    out = df.copy()
    for col, fpr in tpr.items():
        bad = [not pd.isna(n) and not measurable(fpr, int(n)) for n in negatives]
        if any(bad):
            out[col] = out[col].astype(object)
            out.loc[bad, col] = "not measurable"
    return out


CLAIM_FIELDS = ("paper", "claim", "scope", "paper_value", "our_value", "verdict", "detail")


def save_claims(claims: list[dict], run: Run, name: str) -> Path:
    """Save the verdicts a notebook computed as ``reports/<profile>/<name>_claims.json``.

    Each claim has :data:`CLAIM_FIELDS`: the paper, the claim in words, its scope
    (target, setting), the paper's number, ours, the :class:`~provlib.report.verdicts.Verdict`
    the notebook computed (one of four outcomes and the interval behind it) and a detail.
    The batch run collects every notebook's claims into ``reports/<profile>/claims.md``.
    """
    rows = []
    for c in claims:
        missing = set(CLAIM_FIELDS) - set(c)
        if missing:
            raise ValueError(f"claim {c.get('claim')!r} lacks {sorted(missing)}")
        if not isinstance(c["verdict"], Verdict):
            raise TypeError(f"claim {c['claim']!r}: verdict must be a computed Verdict (provlib.report.verdicts), "
                            f"got {c['verdict']!r}")
        v = c["verdict"]
        rows.append({**{k: str(c[k]) for k in CLAIM_FIELDS if k != "verdict"}, "outcome": v.outcome,
                     "interval": v.interval})
    doc = {"provenance": provenance(run), "claims": rows}
    return atomic_write_text(paths.reports_dir(run.profile) / f"{name}_claims.json",
                             json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
