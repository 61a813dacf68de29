"""The record of a batch run and the pages rendered from it: ``run.json``, ``README.md`` and ``claims.md``.

The batch driver (:mod:`provlib.batch`) keeps one :class:`NotebookRun` per
notebook and, after each notebook, :func:`write_index` writes into
``reports/<profile>/``:

- ``run.json``: :func:`build_record`: profile, parameters, seeds, status, git
  commit, machine, package versions and, per notebook, its parameters, wall
  time, outcome and the tables and figures it wrote (paths relative to the
  folder; ``fresh`` is False for files left by an earlier run);
- ``README.md``: the same as one page, every table inline and every figure shown;
- ``claims.md``: every claim the notebooks checked (``<stem>_claims.json``, see
  :func:`provlib.report.save_claims`), grouped by paper, with its verdict.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

from .. import paths
from ..io import atomic_write_text
from ..versions import package_versions
from .verdicts import INCONCLUSIVE, count_line

TABLE_SUFFIXES = (".md", ".csv")
FIGURE_SUFFIXES = (".png", ".pdf")


@dataclass
class NotebookRun:
    """One notebook of a batch: what it was given, how long it took, how it ended."""

    path: Path
    status: str = "skipped"  # pending | running | ok | failed | interrupted | skipped (not selected) | not run
    parameters: dict = field(default_factory=dict)
    wall_seconds: float | None = None
    error: str | None = None
    ledger: dict | None = None   # what its kernel computed (provlib.ledger.summarize, with reads_from, efficiency)

    @property
    def stem(self) -> str:
        """File name without ``.ipynb``: the prefix of every file the notebook writes."""
        return self.path.stem


# ---------------------------------------------------------------- what the run records


def git_state() -> dict:
    """Commit of the repository and whether its tree differs from it (None where unknown)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=paths.REPO_ROOT, capture_output=True,
                                  text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo where there is one, else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """Python, OS, CPU and CUDA of the machine that ran the batch."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "python_executable": paths.portable(sys.executable),   # no machine folder in committed runs
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": cuda,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "cuda_version": torch.version.cuda,
    }


def notebook_outputs(stem: str, stems: list[str], profile: str) -> dict[str, list[Path]]:
    """Tables and figures of one notebook: files named ``<stem>...``, each given to the
    notebook with the longest matching stem (so ``01_a`` does not claim ``01_ab_x.png``)."""
    def owned(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
        if not folder.is_dir():
            return []
        files = [f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in suffixes]
        return sorted(f for f in files if max((s for s in stems if f.name.startswith(s)),
                                              key=len, default=None) == stem)

    return {"tables": owned(paths.reports_dir(profile), TABLE_SUFFIXES),
            "figures": owned(paths.figures_dir(profile), FIGURE_SUFFIXES)}


def relative(path: Path, out_dir: Path) -> str:
    """``path`` relative to the index folder, with forward slashes (for links)."""
    return Path(os.path.relpath(path, out_dir)).as_posix()


def notebook_record(run: NotebookRun, stems: list[str], profile: str, context: dict) -> dict:
    """What the index says about one notebook; ``fresh`` is False for files left by earlier runs."""
    out_dir = paths.reports_dir(profile)
    executed = out_dir / f"{run.stem}.ipynb"
    failed = out_dir / f"{run.stem}.failed.ipynb"
    outputs = notebook_outputs(run.stem, stems, profile)
    return {
        "stem": run.stem,
        "source": paths.portable(run.path),
        "status": run.status,
        "wall_seconds": run.wall_seconds,
        "parameters": run.parameters,
        "error": run.error,
        "ledger": None if run.ledger is None else {k: v for k, v in run.ledger.items() if not k.startswith("_")},
        "executed": relative(executed, out_dir) if executed.exists() else None,
        "executed_fresh": executed.exists() and executed.stat().st_mtime >= context["epoch"] - 1,
        "failed_notebook": relative(failed, out_dir) if run.status == "failed" and failed.exists() else None,
        **{kind: [{"path": relative(f, out_dir), "fresh": f.stat().st_mtime >= context["epoch"] - 1}
                  for f in files] for kind, files in outputs.items()},
    }


def build_record(profile: str, params: dict, runs: list[NotebookRun], context: dict, status: str) -> dict:
    """The run's metadata, as written to ``run.json`` and rendered into ``README.md``.

    ``status`` is ``running`` until the run ends, then ``ok``, ``failed (stem)`` or ``interrupted (stem)``.
    """
    stems = [r.stem for r in runs]
    only = context["only"]
    return {
        "profile": profile,
        "parameters": params,
        "overrides": context.get("overrides") or {},
        "seeds": {k: v for k, v in params.items() if "seed" in k},
        "status": status,
        "pid": context.get("pid"),
        "host": context.get("host"),
        "only": [only] if isinstance(only, str) else (list(only) if only else None),
        "kernel": context["kernel"],
        "started": context["started"].isoformat(timespec="seconds"),
        "epoch": context["epoch"],
        "finished": None if status == "running" else datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.perf_counter() - context["clock"], 2),
        "git": context["git"],
        "lanes": context.get("lanes"),
        "floor": context.get("floor"),
        "ledger": ledger_totals(runs, context),
        "machine": machine_info(),
        "packages": package_versions(),
        "notebooks": [notebook_record(r, stems, profile, context) for r in runs],
    }


def ledger_totals(runs: list[NotebookRun], context: dict) -> dict | None:
    """The run's passes, notebook seconds and floor in total; efficiency = floor / wall time of the run.

    A notebook's floor assumes the cores its lane had (:mod:`provlib.batch`); the run's floor is every
    notebook's passes at one thread shared by all the cores, so it is what the machine could do at best.
    """
    led = [r for r in runs if r.ledger is not None]
    if not led:
        return None
    lanes = context.get("lanes") or {"cores": 1, "threads_per_lane": 1}
    floors = [r.ledger["floor_seconds"] for r in led]
    floor = None if any(f is None for f in floors) else \
        round(sum(floors) * lanes["threads_per_lane"] / lanes["cores"], 1)
    wall = time.perf_counter() - context["clock"]
    unet = round(sum(r.ledger.get("unet_seconds", 0.0) for r in led), 1)
    unet_floors = [r.ledger.get("unet_floor_seconds") for r in led]
    unet_floor = None if any(f is None for f in unet_floors) else round(sum(unet_floors), 1)
    return {"forward": sum(r.ledger["forward"] for r in led), "backward": sum(r.ledger["backward"] for r in led),
            "notebook_seconds": round(sum(r.wall_seconds or 0 for r in led), 1), "floor_seconds": floor,
            "efficiency": None if floor is None else round(floor / wall, 3),
            "unet_seconds": unet, "unet_floor_seconds": unet_floor,
            "unet_efficiency": None if unet_floor is None or not unet else round(unet_floor / unet, 3)}


# ---------------------------------------------------------------- the index page


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (``|`` in cells escaped)."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def link(rel: str, text: str | None = None) -> str:
    """Markdown link to a path relative to the index."""
    return f"[{text or Path(rel).name}]({quote(rel)})"


def command_line(record: dict) -> str:
    """The command that (re)makes this run."""
    only = f" --only {' '.join(record['only'])}" if record["only"] else ""
    kernel = "" if record["kernel"] in ("python3", None) else f" --kernel {record['kernel']}"
    params = "".join(f" -p {k} {v!r}" for k, v in (record.get("overrides") or {}).items())
    return f"python -m provlib.batch --profile {record['profile']}{only}{kernel}{params}"


def status_line(record: dict) -> str:
    """The run's status; a running one says who runs it and what it means if nobody does."""
    if record["status"] != "running":
        return record["status"]
    return (f"**running** (pid {record.get('pid')} on {record.get('host')}, started {record['started']} UTC). "
            "If no batch run is alive, this run was killed: outputs marked pending or running are "
            "missing or from an earlier run")


def render_summary(record: dict) -> str:
    """Title, run facts, profile parameters and per-notebook timings."""
    git = record["git"]
    commit = f"`{git['commit']}`" if git["commit"] else "unknown (no git, or no commit yet)"
    dirty = {True: " (working tree dirty)", False: " (clean)", None: ""}[git["dirty"]]
    facts = [("status", status_line(record)), ("profile", f"`{record['profile']}`"),
             ("seeds", ", ".join(f"`{k}` = {v!r}" for k, v in record["seeds"].items()) or "none"),
             ("git commit", f"{commit}{dirty}"), ("started (UTC)", record["started"]),
             ("finished (UTC)", record["finished"] or "not yet"),
             ("total wall time", f"{record['wall_seconds']:.1f} s" + (" so far" if record["finished"] is None else "")),
             ("notebooks selected", ", ".join(record["only"]) if record["only"] else "all"),
             ("kernel", record["kernel"] or "from notebook metadata")]
    if record.get("overrides"):
        facts.append(("parameters overridden", ", ".join(f"`{k}={v!r}`" for k, v in record["overrides"].items())))
    timings = [(link(nb["executed"], nb["stem"]) if nb["executed"] else nb["stem"], nb["status"],
                "" if nb["wall_seconds"] is None else f"{nb['wall_seconds']:.1f}",
                *ledger_cells(nb.get("ledger"), nb["wall_seconds"]))
               for nb in record["notebooks"]]
    total = record.get("ledger")
    if total:
        timings.append(("**total** (run)", "", f"{record['wall_seconds']:.1f}",
                        *ledger_cells({**total, "reads_from": []}, total.get("notebook_seconds"))))
    return "\n\n".join([
        f"# Batch run: profile `{record['profile']}`",
        f"Generated by `{command_line(record)}`; do not edit by hand. "
        "Machine-readable: [run.json](run.json). Every paper claim with our number and verdict: "
        "[claims.md](claims.md).",
        md_table(["", ""], facts),
        "## Profile parameters",
        md_table(["parameter", "value"], [(f"`{k}`", f"`{v!r}`") for k, v in record["parameters"].items()]),
        "## Notebooks",
        LEDGER_NOTE,
        md_table(["notebook", "status", "wall time (s)", "UNet passes (forward / backward rows)", "floor (s)",
                  "efficiency", "UNet steps (s)", "their efficiency", "other work (s)", "reads artifacts of"],
                 timings),
        *render_floor(record),
    ])


LEDGER_NOTE = ("UNet passes are the rows every UNet of the notebook's kernel computed (cache reads count nothing; "
               "provlib.ledger). The floor is what those passes cost at the shipped UNets' best one-thread time "
               "per row, measured at the start of the run, shared by the cores the notebook had (the run's "
               "total: all the cores); efficiency = floor / wall time. The UNet steps are the cached computations "
               "that ran a UNet, timed without the steps inside them: their efficiency is their passes' floor / "
               "their seconds (notebook seconds: one lane's). Other work is the rest of the notebook's wall time "
               "(VAE, classifiers, probe fits, bootstraps, plots, the kernel's start): it has no floor here.")


def ledger_cells(led: dict | None, wall: float | None = None) -> tuple:
    """passes, floor, efficiency, the UNet steps' seconds and efficiency, the other work's seconds (of ``wall``)
    and what a notebook read from others, for the timing table."""
    if not led:
        return ("",) * 7
    floor = "" if led.get("floor_seconds") is None else f"{led['floor_seconds']:.1f}"
    eff = "" if led.get("efficiency") is None else f"{led['efficiency']:.2f}"
    unet = "" if led.get("unet_seconds") is None else f"{led['unet_seconds']:.1f}"
    unet_eff = "" if led.get("unet_efficiency") is None else f"{led['unet_efficiency']:.2f}"
    other = "" if wall is None or led.get("unet_seconds") is None else f"{wall - led['unet_seconds']:.1f}"
    return (f"{led['forward']:,} / {led['backward']:,}", floor, eff, unet, unet_eff, other,
            ", ".join(led.get("reads_from", [])))


def render_floor(record: dict) -> list[str]:
    """The per-row times the floor is made of, and how the notebooks were run."""
    parts = []
    lanes = record.get("lanes")
    if lanes:
        parts.append(f"Lanes: {lanes['lanes']} notebook(s) at once, {lanes['threads_per_lane']} thread(s) each, "
                     f"on {lanes['cores']} cores.")
    floor = record.get("floor")
    if floor:
        rows = [(a["label"], f"{1e3 * a['forward']:.3f}", a["batch_forward"], f"{1e3 * a['forward_backward']:.3f}",
                 a["batch_forward_backward"]) for a in floor["archs"].values()]
        parts += [f"Per-row times of the shipped UNets ({floor['threads']} thread, each the median of 3 calls at "
                  f"its fastest batch size; measured in {floor['seconds']:.0f} s at the start of the run):",
                  md_table(["UNet", "forward (ms/row)", "at batch", "forward + backward (ms/row)", "at batch"], rows)]
    return parts


def render_environment(record: dict) -> str:
    """Package versions and machine."""
    machine = record["machine"]
    cuda = f"yes: {machine['cuda_device']}" if machine["cuda_available"] else "no"
    rows = [("python", machine["python"]), ("platform", machine["platform"]), ("CPU", machine["cpu"]),
            ("CPU count", machine["cpu_count"]), ("torch threads", machine["torch_threads"]),
            ("CUDA available", cuda), ("torch CUDA build", machine["cuda_version"] or "none (CPU build)")]
    return "\n\n".join([
        "## Environment",
        md_table(["", ""], rows),
        md_table(["package", "version"], [(k, v or "not installed") for k, v in record["packages"].items()]),
    ])


def render_notebook(nb: dict, out_dir: Path) -> str:
    """One notebook's section: executed copy, parameters, tables inline, figures shown."""
    parts = [f"## {nb['stem']}", f"Status: **{nb['status']}**"
             + ("" if nb["wall_seconds"] is None else f", {nb['wall_seconds']:.1f} s")]
    if nb["error"]:
        parts.append(f"Error: `{nb['error']}`")
    executed = "executed notebook" + ("" if nb["executed_fresh"] else " (from an earlier run)")
    notebooks = [link(nb[k], label) for k, label in (("executed", executed),
                                                     ("failed_notebook", "failed notebook")) if nb[k]]
    parts.append(" · ".join(notebooks) or "No executed notebook.")
    if nb["parameters"]:
        parts.append("Parameters: " + ", ".join(f"`{k}={v!r}`" for k, v in nb["parameters"].items()))
    for item in nb["tables"]:
        note = "" if item["fresh"] else " (from an earlier run)"
        parts.append(f"### Table {link(item['path'])}{note}")
        if item["path"].lower().endswith(".md"):
            parts.append((out_dir / item["path"]).read_text().strip())
    for item in nb["figures"]:
        note = "" if item["fresh"] else " (from an earlier run)"
        parts.append(f"### Figure {link(item['path'])}{note}")
        if item["path"].lower().endswith(".png"):
            parts.append(f"![{Path(item['path']).name}]({quote(item['path'])})")
    return "\n\n".join(parts)


def render_readme(record: dict, out_dir: Path) -> str:
    """The whole index page."""
    sections = [render_summary(record), render_environment(record)]
    sections += [render_notebook(nb, out_dir) for nb in record["notebooks"]]
    return "\n\n".join(sections) + "\n"


def write_index(record: dict, out_dir: Path) -> None:
    """Write ``README.md``, ``run.json`` and ``claims.md`` into ``out_dir`` (atomically)."""
    atomic_write_text(out_dir / "run.json", json.dumps(record, indent=1, default=str) + "\n")
    atomic_write_text(out_dir / "claims.md", render_claims(record, out_dir))
    atomic_write_text(out_dir / "README.md", render_readme(record, out_dir))


def collect_claims(record: dict, out_dir: Path) -> list[dict]:
    """Every claim the run's notebooks recorded (``<stem>_claims.json``), with the notebook and freshness."""
    rows = []
    for nb in record["notebooks"]:
        path = out_dir / f"{nb['stem']}_claims.json"
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        fresh = path.stat().st_mtime >= record.get("epoch", 0) - 1
        rows += [{**_outcome(c), "notebook": nb["stem"], "fresh": fresh, "provenance": doc.get("provenance", "")}
                 for c in doc["claims"]]
    return rows


def _outcome(claim: dict) -> dict:
    """A claim as recorded; one recorded by a provlib before the four outcomes (a bare ``holds``) is
    counted inconclusive and says so."""
    if "outcome" in claim:
        return claim
    return {**claim, "outcome": INCONCLUSIVE,
            "interval": "recorded without an interval by an older provlib: rerun this notebook"}


def render_claims(record: dict, out_dir: Path) -> str:
    """``claims.md``: each paper claim, our number and the computed verdict, grouped by paper."""
    claims = collect_claims(record, out_dir)
    parts = [f"# Claims: profile `{record['profile']}`",
             f"Generated by `{command_line(record)}` from the verdicts the notebooks computed; do not edit by "
             f"hand. Run status: {status_line(record)}. Every number is computed by the linked notebook; "
             "'does not hold' is a result at this scale, reported with its numbers."]
    if not claims:
        return "\n\n".join(parts + ["No claims recorded yet."]) + "\n"
    papers = list(dict.fromkeys(c["paper"] for c in claims))
    parts.append(f"{len(claims)} claim checks: {count_line(c['outcome'] for c in claims)}. Each is judged on the "
                 "evaluation rows: 'holds' / 'does not hold' when the 95% interval behind it (a paired bootstrap of "
                 "the difference, for a comparison) lies on one side of the claim's bar, 'inconclusive' when it "
                 "contains the bar, 'at ceiling' when both sides sit at the metric's ceiling or floor.")
    parts.append("\n".join(f"- **{paper}**: {count_line(c['outcome'] for c in claims if c['paper'] == paper)}"
                           for paper in papers))
    for paper in papers:
        rows = [(c["claim"], c["scope"], c["paper_value"], c["our_value"], f"**{c['outcome']}**", c["interval"],
                 c["detail"], link(f"{c['notebook']}.ipynb", c["notebook"]) + ("" if c["fresh"] else " (earlier run)"))
                for c in claims if c["paper"] == paper]
        parts += [f"## {paper}", md_table(["claim", "scope", "paper", "ours", "verdict", "interval", "detail",
                                           "notebook"], rows)]
    provenances = sorted({c["provenance"] for c in claims})
    parts.append("Computed by provlib: " + "; ".join(provenances))
    return "\n\n".join(parts) + "\n"


def timing_statement(record: dict, longest: int = 4) -> str:
    """The README's sentence on how long the main job takes, computed from a run record (``run.json``)."""
    ran = [nb for nb in record["notebooks"] if nb["wall_seconds"] is not None]
    if record["status"] != "ok" or any(nb["status"] != "ok" for nb in record["notebooks"]):
        partial = f"only {', '.join(record['only'])}" if record.get("only") else record["status"]
        return (f"The last `{record['profile']}` run recorded is not a complete run ({partial}); "
                f"its timings are in the run index.")
    lanes = record.get("lanes") or {"lanes": 1, "cores": record["machine"]["cpu_count"]}
    top = sorted(ran, key=lambda nb: -nb["wall_seconds"])[:longest]
    parts = [f"The last complete `{record['profile']}` run took **{record['wall_seconds'] / 60:.0f} minutes** on "
             f"{lanes['cores']} cores ({len(ran)} notebooks, {lanes['lanes']} at a time; started "
             f"{record['started'][:10]}); the longest notebooks: "
             + ", ".join(f"{nb['stem'].split('_')[0]} ({nb['wall_seconds'] / 60:.1f} min)" for nb in top) + "."]
    total = record.get("ledger")
    if total and total.get("floor_seconds"):
        parts.append(f"Its UNet passes ({total['forward']:,} forward and {total['backward']:,} backward rows) would "
                     f"take {total['floor_seconds'] / 60:.1f} minutes at the measured per-row floor "
                     f"(efficiency {total['efficiency']:.2f}).")
    if total and total.get("unet_efficiency") and total.get("notebook_seconds"):
        other = total["notebook_seconds"] - total["unet_seconds"]
        parts.append(f"The steps that ran a UNet took {total['unet_seconds'] / 60:.0f} of the notebooks' "
                     f"{total['notebook_seconds'] / 60:.0f} lane-minutes, at {total['unet_efficiency']:.2f} of their floor; "
                     f"the other {other / 60:.0f} lane-minutes are work with no floor (classifiers, probe fits, "
                     "bootstraps, plots).")
    return " ".join(parts)
