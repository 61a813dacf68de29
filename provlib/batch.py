"""Batch driver: run every notebook under one profile and index what it made.

    python -m provlib.batch --profile cpu                 # the study (minutes)
    python -m provlib.batch --profile tiny                # seconds, for checks
    python -m provlib.batch --profile cpu --only 01 03    # notebooks by stem prefix
    python -m provlib.batch --profile cpu -p timestep_stride 20   # override a parameter

Each ``notebooks/<digit>*.ipynb`` runs through papermill (kernel cwd: the
notebooks folder, ``MPLBACKEND=Agg``) with the profile's values for the
parameters its ``parameters`` cell declares; the executed copy lands in
``reports/<profile>/<stem>.ipynb``.  A notebook names every file it writes
``<stem>_<what>.<ext>``: tables (``.md``, ``.csv``) in ``reports/<profile>/``,
figures (``.png``, ``.pdf``) in ``figures/<profile>/``.  The driver then writes
``reports/<profile>/README.md`` (one page: profile, seeds, versions, machine,
git commit, timings, every table inline and every figure) and ``run.json``
(the same, machine-readable; paths there are relative to ``reports/<profile>/``).
The first failing notebook stops the run, after the index records it.

The index tells the truth at every moment: it says ``running`` from the start
of a run (with its pid), is rewritten after each notebook, and says ``ok``,
``failed`` or ``interrupted`` only when the run ends; a run killed outright
leaves ``running`` behind, never a stale ``ok``.  A lock file keeps two runs
from writing one profile's folders at once, and the temporary files a killed
run left there are removed when the next one starts.

Parameters given with ``-p NAME VALUE`` are checked before anything runs: each
must be declared by a selected notebook (``papermill.inspect_notebook``), with
a value of the declared type, and profile parameters must be in range.  The
long steps' progress bars (sampling, features, training) stream from the
notebook kernels to this terminal (:mod:`provlib.progress`), not into the
executed notebooks.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import quote

import papermill

from . import paths, progress
from .io import atomic_write_text
from .versions import package_versions
from .study.profiles import PROFILES, RULES, check_parameter, get_profile

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

    @property
    def stem(self) -> str:
        """File name without ``.ipynb``: the prefix of every file the notebook writes."""
        return self.path.stem


# ---------------------------------------------------------------- selecting and running


def list_notebooks(notebooks_dir: Path) -> list[Path]:
    """The study's notebooks: ``*.ipynb`` whose name starts with a digit, sorted."""
    return sorted(p for p in Path(notebooks_dir).glob("*.ipynb") if p.name[:1].isdigit())


def select_notebooks(notebooks: list[Path], only: Sequence[str] | str | None) -> list[Path]:
    """The notebooks whose stem starts with one of the ``only`` prefixes (all when None)."""
    if only is None:
        return list(notebooks)
    prefixes = [only] if isinstance(only, str) else list(only)
    prefixes = [p.removesuffix(".ipynb") for p in prefixes]
    stems = [nb.stem for nb in notebooks]
    unmatched = [p for p in prefixes if not any(s.startswith(p) for s in stems)]
    if unmatched:
        raise ValueError(f"--only {unmatched} matches no notebook; notebooks: {stems}")
    return [nb for nb in notebooks if any(nb.stem.startswith(p) for p in prefixes)]


def notebook_parameters(notebook: Path, profile_params: dict) -> dict:
    """The profile's values for the parameters the notebook declares (others keep their defaults)."""
    declared = papermill.inspect_notebook(str(notebook))
    return {name: value for name, value in profile_params.items() if name in declared}


def parse_value(text: str):
    """A command-line parameter value: a Python literal (``20``, ``0.4``, ``None``, ``'x'``) or else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _accepts(annotation: str, value) -> bool:
    """Whether ``value`` fits a parameter annotation papermill inferred (int, float, str, bool, Optional[...])."""
    ann = annotation.replace(" ", "")
    optional = ann.startswith("Optional[") and ann.endswith("]")
    base = ann[len("Optional["):-1] if optional else ann
    if value is None:
        return optional or base in ("None", "Any")
    checks = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
              "list": lambda v: isinstance(v, list)}
    return checks.get(base, lambda v: True)(value)


def check_overrides(overrides: dict, notebooks: Sequence[Path]) -> dict:
    """Raise a ValueError naming the problem unless every override fits the notebooks that declare it."""
    declared = {nb: papermill.inspect_notebook(str(nb)) for nb in notebooks}
    known = sorted({name for d in declared.values() for name in d})
    for name, value in overrides.items():
        owners = [nb for nb, d in declared.items() if name in d]
        if not owners:
            raise ValueError(f"parameter {name!r} is declared by none of the selected notebooks "
                             f"({', '.join(nb.name for nb in notebooks)}); they take: {', '.join(known)}")
        for nb in owners:
            annotation = declared[nb][name]["inferred_type_name"]
            if not _accepts(annotation, value):
                raise ValueError(f"parameter {name!r} of {nb.name} is {annotation}, got {value!r} "
                                 f"({type(value).__name__})")
        if (name in RULES or name in ("profile", "targets")) and value is not None:
            check_parameter(name, value)
    return dict(overrides)


@contextmanager
def kernel_environment() -> Iterator[None]:
    """Environment the kernels inherit: Agg backend, and this very provlib importable."""
    saved = {k: os.environ.get(k) for k in ("MPLBACKEND", "PYTHONPATH")}
    os.environ["MPLBACKEND"] = "Agg"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.REPO_ROOT), saved["PYTHONPATH"]]))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def execute_notebook(notebook: Path, output: Path, parameters: dict, kernel: str | None,
                     cell_progress: bool = True) -> None:
    """Run one notebook with papermill; the executed copy appears at ``output`` only on success.

    A failing run leaves its executed copy (error cell included) at ``<stem>.failed.ipynb``.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.stem}.partial.ipynb")
    failed = output.with_name(f"{output.stem}.failed.ipynb")
    try:
        papermill.execute_notebook(str(notebook), str(partial), parameters=parameters,
                                   kernel_name=kernel, cwd=str(notebook.parent), progress_bar=cell_progress)
    except BaseException:
        if partial.exists():
            os.replace(partial, failed)
        raise
    os.replace(partial, output)
    failed.unlink(missing_ok=True)


def describe_error(err: BaseException) -> str:
    """One line for the index: the notebook's exception if papermill reports one."""
    if hasattr(err, "ename"):
        return f"{err.ename}: {err.evalue}"  # PapermillExecutionError
    return f"{type(err).__name__}: {err}"[:500]


def run_one(run: NotebookRun, profile_params: dict, out_dir: Path, kernel: str | None,
            cell_progress: bool = True) -> None:
    """Execute ``run``'s notebook, timing it; records the outcome and re-raises a failure."""
    run.parameters = notebook_parameters(run.path, profile_params)
    if "profile" in profile_params and "profile" not in run.parameters:
        print(f"warning: {run.path.name} declares no `profile` parameter: its outputs "
              "may not land in this profile's folders", file=sys.stderr)
    start = time.perf_counter()
    run.status = "running"
    try:
        execute_notebook(run.path, out_dir / f"{run.stem}.ipynb", run.parameters, kernel, cell_progress)
    except (KeyboardInterrupt, SystemExit) as err:
        run.status, run.error = "interrupted", describe_error(err)
        raise
    except BaseException as err:
        run.status, run.error = "failed", describe_error(err)
        raise
    else:
        run.status = "ok"
    finally:
        run.wall_seconds = round(time.perf_counter() - start, 2)


def run_batch(profile: str, notebooks_dir: Path | str | None = None,
              only: Sequence[str] | str | None = None, kernel: str | None = "python3",
              overrides: dict | None = None, progress_stream=None) -> dict:
    """Run the notebooks under ``profile``, write ``reports/<profile>/README.md`` and ``run.json``.

    ``notebooks_dir`` defaults to :data:`provlib.paths.NOTEBOOKS_DIR`; ``only`` keeps the
    notebooks whose stem starts with one of the given prefixes; ``kernel`` None means the
    kernelspec in each notebook's metadata; ``overrides`` replace parameter values (checked
    against the notebooks first, see :func:`check_overrides`).  The kernels' progress bars
    are relayed to ``progress_stream`` (default: this process's stderr).  Returns the run
    record (what ``run.json`` holds).  The first failing notebook stops the batch: the index
    records it, then the error propagates.
    """
    params = get_profile(profile)
    notebooks = list_notebooks(Path(notebooks_dir or paths.NOTEBOOKS_DIR))
    if not notebooks:
        raise FileNotFoundError(f"no notebooks (<digit>*.ipynb) in {notebooks_dir or paths.NOTEBOOKS_DIR}")
    chosen = select_notebooks(notebooks, only)
    overrides = check_overrides(overrides or {}, chosen)
    params = {**params, **overrides}
    selected = set(chosen)
    runs = [NotebookRun(nb, status="pending" if nb in selected else "skipped") for nb in notebooks]
    out_dir = paths.reports_dir(profile)
    context = {"started": datetime.now(timezone.utc), "epoch": time.time(), "clock": time.perf_counter(),
               "git": git_state(), "only": only, "kernel": kernel, "overrides": overrides,
               "pid": os.getpid(), "host": socket.gethostname()}
    stream = progress_stream or sys.stderr
    with batch_lock(out_dir), kernel_environment(), ProgressRelay(stream) as relay:
        remove_stale_files(profile)
        status = "running"
        try:
            write_index(build_record(profile, params, runs, context, status), out_dir)
            for i, run in enumerate(r for r in runs if r.path in selected):
                print(f"[{i + 1}/{len(selected)}] {run.path.name} ({profile})", file=stream, flush=True)
                run_one(run, params, out_dir, kernel, cell_progress=not relay.active)
                relay.drain()
                print(f"[{i + 1}/{len(selected)}] {run.path.name}: {run.status} in {run.wall_seconds:.1f} s",
                      file=stream, flush=True)
                write_index(build_record(profile, params, runs, context, status), out_dir)
            status = "ok"
        except (KeyboardInterrupt, SystemExit):
            status = f"interrupted ({next((r.stem for r in runs if r.status == 'interrupted'), 'between notebooks')})"
            raise
        except BaseException:
            failed = [r.stem for r in runs if r.status == "failed"]
            status = f"failed ({failed[0]})" if failed else "failed"
            raise
        finally:
            for r in runs:
                if r.status == "pending":
                    r.status = "not run"
            record = build_record(profile, params, runs, context, status)
            write_index(record, out_dir)
    return record


@contextmanager
def batch_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``<out_dir>/.batch.lock`` for the run; a second run on the same folders is refused.

    The lock is an OS file lock: it is released when the process ends, even by SIGKILL.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): no lock
        yield
        return
    with open(out_dir / ".batch.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RuntimeError(f"another batch run (pid {f.read().strip() or '?'}) is writing {out_dir}; "
                               "wait for it to end, or stop it first") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_stale_files(profile: str) -> list[Path]:
    """Delete the temporary files an interrupted run left in the profile's output folders."""
    stale = []
    for folder in (paths.reports_dir(profile), paths.figures_dir(profile)):
        if folder.is_dir():
            stale += [f for f in folder.iterdir() if f.is_file() and f.name.startswith(".")
                      and (f.name.endswith(".partial.ipynb") or f.name.endswith(".tmp"))]
    for f in stale:
        f.unlink(missing_ok=True)
    return stale


class ProgressRelay:
    """Copy what the notebook kernels write to the progress file (:mod:`provlib.progress`) to a stream.

    While active, ``PROVLIB_PROGRESS_FILE`` names a temporary file that the
    kernels (which inherit the environment) append their progress bars to; a
    thread copies new text to ``stream``.  On a stream that is not a terminal
    (a CI log), carriage returns become newlines and bars update less often.
    """

    POLL_SECONDS = 0.2

    def __init__(self, stream):
        self.stream = stream
        self.active = False
        self._stop = threading.Event()
        self._pos = 0
        self._lock = threading.Lock()
        self._tty = bool(getattr(stream, "isatty", lambda: False)())

    def __enter__(self) -> "ProgressRelay":
        import tempfile

        fd, self.path = tempfile.mkstemp(prefix="provlib-progress-", suffix=".log")
        os.close(fd)
        self._saved = {k: os.environ.get(k) for k in (progress.ENV, progress.INTERVAL_ENV)}
        os.environ[progress.ENV] = self.path
        os.environ[progress.INTERVAL_ENV] = str(2.0 if self._tty else 30.0)
        self._thread = threading.Thread(target=self._run, name="progress-relay", daemon=True)
        self._thread.start()
        self.active = True
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.drain()
        self.active = False
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        Path(self.path).unlink(missing_ok=True)

    def _run(self) -> None:
        while not self._stop.wait(self.POLL_SECONDS):
            self.drain()

    def drain(self) -> None:
        """Copy whatever the kernels wrote since the last call."""
        with self._lock:
            try:
                with open(self.path, "rb") as f:
                    f.seek(self._pos)
                    data = f.read()
            except OSError:
                return
            self._pos += len(data)
            if not data:
                return
            text = data.decode("utf-8", errors="replace")
            if not self._tty:
                text = "".join(line.strip() + "\n" for line in re.split(r"[\r\n]+", text) if line.strip())
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                pass


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
        "python_executable": sys.executable,
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
        "source": str(run.path.relative_to(paths.REPO_ROOT) if run.path.is_relative_to(paths.REPO_ROOT)
                      else run.path),
        "status": run.status,
        "wall_seconds": run.wall_seconds,
        "parameters": run.parameters,
        "error": run.error,
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
        "machine": machine_info(),
        "packages": package_versions(),
        "notebooks": [notebook_record(r, stems, profile, context) for r in runs],
    }


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
                "" if nb["wall_seconds"] is None else f"{nb['wall_seconds']:.1f}") for nb in record["notebooks"]]
    return "\n\n".join([
        f"# Batch run: profile `{record['profile']}`",
        f"Generated by `{command_line(record)}`; do not edit by hand. "
        "Machine-readable: [run.json](run.json). Every paper claim with our number and verdict: "
        "[claims.md](claims.md).",
        md_table(["", ""], facts),
        "## Profile parameters",
        md_table(["parameter", "value"], [(f"`{k}`", f"`{v!r}`") for k, v in record["parameters"].items()]),
        "## Notebooks",
        md_table(["notebook", "status", "wall time (s)"], timings),
    ])


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
        rows += [{**c, "notebook": nb["stem"], "fresh": fresh, "provenance": doc.get("provenance", "")}
                 for c in doc["claims"]]
    return rows


def render_claims(record: dict, out_dir: Path) -> str:
    """``claims.md``: each paper claim, our number and the computed verdict, grouped by paper."""
    claims = collect_claims(record, out_dir)
    parts = [f"# Claims: profile `{record['profile']}`",
             f"Generated by `{command_line(record)}` from the verdicts the notebooks computed; do not edit by "
             f"hand. Run status: {status_line(record)}. Every number is computed by the linked notebook; "
             "'does not hold' is a result at this scale, reported with its numbers."]
    if not claims:
        return "\n\n".join(parts + ["No claims recorded yet."]) + "\n"
    held = sum(c["holds"] for c in claims)
    parts.append(f"{held} of {len(claims)} claim checks hold.")
    for paper in dict.fromkeys(c["paper"] for c in claims):
        rows = [(c["claim"], c["scope"], c["paper_value"], c["our_value"],
                 "**holds**" if c["holds"] else "**does not hold**", c["detail"],
                 link(f"{c['notebook']}.ipynb", c["notebook"]) + ("" if c["fresh"] else " (earlier run)"))
                for c in claims if c["paper"] == paper]
        parts += [f"## {paper}", md_table(["claim", "scope", "paper", "ours", "verdict", "detail", "notebook"], rows)]
    provenances = sorted({c["provenance"] for c in claims})
    parts.append("Computed by provlib: " + "; ".join(provenances))
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m provlib.batch", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", required=True, choices=sorted(PROFILES), help="parameter set to run")
    parser.add_argument("--only", nargs="+", metavar="PREFIX", help="run only notebooks whose stem starts so")
    parser.add_argument("--kernel", default="python3", help="kernelspec name (default: python3)")
    parser.add_argument("--notebooks-dir", type=Path, default=None, help="default: the repository's notebooks/")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a notebook parameter (a Python literal, e.g. -p timestep_stride 20)")
    args = parser.parse_args(argv)
    overrides = {name: parse_value(value) for name, value in args.parameter}
    signal.signal(signal.SIGTERM, _terminate)  # so that `kill` ends the run through its finally blocks
    record = run_batch(args.profile, notebooks_dir=args.notebooks_dir, only=args.only, kernel=args.kernel,
                       overrides=overrides)
    print(f"{record['status']}: {paths.reports_dir(args.profile) / 'README.md'}", file=sys.stderr)
    return 0


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
