"""Batch driver: run every notebook under one profile and index what it made.

    python -m provlib.batch --profile cpu                 # the study (minutes)
    python -m provlib.batch --profile tiny                # seconds, for checks
    python -m provlib.batch --profile cpu --only 01 03    # notebooks by stem prefix
    python -m provlib.batch --profile cpu -p timestep_stride 20   # override a parameter
    python -m provlib.batch --profile cpu --lanes 2       # two notebooks at once, one thread each

Each ``notebooks/<digit>*.ipynb`` runs through papermill (kernel cwd: the
notebooks folder, ``MPLBACKEND=Agg``) with the profile's values for the
parameters its ``parameters`` cell declares; the executed copy lands in
``reports/<profile>/<stem>.ipynb``.  A notebook names every file it writes
``<stem>_<what>.<ext>``: tables (``.md``, ``.csv``) in ``reports/<profile>/``,
figures (``.png``, ``.pdf``) in ``figures/<profile>/``.  The driver then writes
``reports/<profile>/README.md`` (one page: profile, seeds, versions, machine,
git commit, timings, every table inline and every figure) and ``run.json``
(the same, machine-readable; paths there are relative to ``reports/<profile>/``).
The first failing notebook stops the run, after the index records it.  What the
index records and how its pages look is :mod:`provlib.report.index`.

Every kernel counts the UNet passes it computes (:mod:`provlib.ledger`); a run
of any profile but ``tiny`` first times the shipped UNets, so the index shows
each notebook's passes, its floor (those passes at the best per-row time) and
its efficiency (floor / wall time).  With ``--lanes N``, N notebooks run at
once in worker processes, each kernel with ``cores // N`` threads, each
notebook only after those it needs (:mod:`provlib.study.order`), the longest
chain of expected time (the last run's) first.

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
import shutil
import signal
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import papermill

from . import ledger, paths
from .lanes import describe_error, environment, execute_notebook, run_in_lanes
from .progress import ProgressRelay
from .report.index import NotebookRun, build_record, git_state, write_index
from .study.profiles import PROFILES, RULES, check_parameter, get_profile


# ---------------------------------------------------------------- selecting and running


def list_notebooks(notebooks_dir: Path) -> list[Path]:
    """The study's notebooks: ``*.ipynb`` whose name starts with a digit, sorted."""
    return sorted(p for p in Path(notebooks_dir).glob("*.ipynb") if p.name[:1].isdigit())


class RunRefused(ValueError, RuntimeError):
    """A batch run refused before any notebook ran (a bad value, no such notebook, a run already writing
    the same folders); the command line prints it as one line and exits with status 2."""


def select_notebooks(notebooks: list[Path], only: Sequence[str] | str | None) -> list[Path]:
    """The notebooks whose stem starts with one of the ``only`` prefixes (all when None)."""
    if only is None:
        return list(notebooks)
    prefixes = [only] if isinstance(only, str) else list(only)
    prefixes = [p.removesuffix(".ipynb") for p in prefixes]
    stems = [nb.stem for nb in notebooks]
    unmatched = [p for p in prefixes if not any(s.startswith(p) for s in stems)]
    if unmatched:
        raise RunRefused(f"--only {unmatched} matches no notebook; notebooks: {stems}")
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
            raise RunRefused(f"parameter {name!r} is declared by none of the selected notebooks "
                             f"({', '.join(nb.name for nb in notebooks)}); they take: {', '.join(known)}")
        for nb in owners:
            annotation = declared[nb][name]["inferred_type_name"]
            if not _accepts(annotation, value):
                raise RunRefused(f"parameter {name!r} of {nb.name} is {annotation}, got {value!r} "
                                 f"({type(value).__name__})")
        if (name in RULES or name in ("profile", "targets")) and value is not None:
            try:
                check_parameter(name, value)
            except ValueError as err:
                raise RunRefused(f"parameter {name!r}: {err}") from None
    return dict(overrides)


@contextmanager
def kernel_environment() -> Iterator[None]:
    """Environment the kernels inherit: Agg backend, and this very provlib importable."""
    pythonpath = os.pathsep.join(filter(None, [str(paths.REPO_ROOT), os.environ.get("PYTHONPATH")]))
    with environment({"MPLBACKEND": "Agg", "PYTHONPATH": pythonpath}):
        yield


def run_one(run: NotebookRun, profile_params: dict, out_dir: Path, kernel: str | None,
            cell_progress: bool = True, env: dict | None = None) -> None:
    """Execute ``run``'s notebook, timing it; records the outcome and re-raises a failure."""
    prepare(run, profile_params)
    start = time.perf_counter()
    run.status = "running"
    try:
        execute_notebook(run.path, out_dir / f"{run.stem}.ipynb", run.parameters, kernel, cell_progress, env)
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


def prepare(run: NotebookRun, profile_params: dict) -> None:
    """Give ``run`` the profile's values of the parameters its notebook declares."""
    run.parameters = notebook_parameters(run.path, profile_params)
    if "profile" in profile_params and "profile" not in run.parameters:
        print(f"warning: {run.path.name} declares no `profile` parameter: its outputs "
              "may not land in this profile's folders", file=sys.stderr)


def run_batch(profile: str, notebooks_dir: Path | str | None = None,
              only: Sequence[str] | str | None = None, kernel: str | None = "python3",
              overrides: dict | None = None, progress_stream=None, lanes: int = 1,
              floor: bool | None = None) -> dict:
    """Run the notebooks under ``profile``, write ``reports/<profile>/README.md`` and ``run.json``.

    ``notebooks_dir`` defaults to :data:`provlib.paths.NOTEBOOKS_DIR`; ``only`` keeps the
    notebooks whose stem starts with one of the given prefixes; ``kernel`` None means the
    kernelspec in each notebook's metadata; ``overrides`` replace parameter values (checked
    against the notebooks first, see :func:`check_overrides`).  The kernels' progress bars
    are relayed to ``progress_stream`` (default: this process's stderr).

    ``lanes`` notebooks run at once, each kernel with ``cores // lanes`` threads, never before the
    notebooks it needs (:mod:`provlib.study.order`).  Every kernel counts its UNet passes
    (:mod:`provlib.ledger`); with ``floor`` (default: every profile but ``tiny``) the shipped UNets'
    per-row times are measured first, so the index shows each notebook's floor and efficiency.

    Returns the run record (what ``run.json`` holds).  The first failing notebook stops the batch
    (notebooks already running in other lanes finish): the index records it, then the error propagates.
    """
    params = get_profile(profile)
    notebooks = list_notebooks(Path(notebooks_dir or paths.NOTEBOOKS_DIR))
    if not notebooks:
        raise RunRefused(f"no notebooks (<digit>*.ipynb) in {notebooks_dir or paths.NOTEBOOKS_DIR}")
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise RunRefused(f"lanes must be a positive number of notebooks run at once, got {lanes!r}")
    chosen = select_notebooks(notebooks, only)
    overrides = check_overrides(overrides or {}, chosen)
    params = {**params, **overrides}
    selected = set(chosen)
    runs = [NotebookRun(nb, status="pending" if nb in selected else "skipped") for nb in notebooks]
    out_dir = paths.reports_dir(profile)
    cores = os.cpu_count() or 1
    context = {"started": datetime.now(timezone.utc), "epoch": time.time(), "clock": time.perf_counter(),
               "git": git_state(), "only": only, "kernel": kernel, "overrides": overrides,
               "pid": os.getpid(), "host": socket.gethostname(),
               "lanes": {"lanes": lanes, "cores": cores, "threads_per_lane": max(1, cores // lanes)}, "runs": runs}
    stream = progress_stream or sys.stderr
    context["expected"] = expected_seconds(profile)   # before this run's index replaces the last one's
    ledger_root = Path(tempfile.mkdtemp(prefix="provlib-ledger-"))
    with batch_lock(out_dir), kernel_environment(), ProgressRelay(stream) as relay:
        remove_stale_files(profile)
        status = "running"
        try:
            write_index(build_record(profile, params, runs, context, status), out_dir)
            context["floor"] = measure_floor(profile != "tiny" if floor is None else floor, stream)
            todo = [r for r in runs if r.path in selected]
            if lanes == 1:
                _run_in_order(todo, profile, params, out_dir, kernel, relay, stream, context, ledger_root)
            else:
                _run_in_lanes(todo, profile, params, out_dir, kernel, relay, stream, context, ledger_root)
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
            shutil.rmtree(ledger_root, ignore_errors=True)   # the driver's own temporary folder
    return record


def measure_floor(wanted: bool, stream) -> dict | None:
    """The shipped UNets' one-thread seconds per row (:func:`provlib.ledger.measure_all`); None unless
    ``wanted`` (a ``tiny`` run is a check, not a timing, and skips it)."""
    if not wanted:
        return None
    print("measuring the shipped UNets' per-row times (the ledger's floor)", file=stream, flush=True)
    start = time.perf_counter()
    speeds = ledger.measure_all(ledger.shipped_specs(paths.EMBEDDED_MODELS_DIR), threads=1)
    return {"threads": 1, "seconds": round(time.perf_counter() - start, 1), "archs": speeds}


def kernel_env(run: NotebookRun, context: dict, ledger_root: Path) -> dict:
    """What a notebook's kernel adds to the environment: its ledger folder; in a lane, its threads."""
    folder = ledger_root / run.stem
    folder.mkdir(parents=True, exist_ok=True)
    env = {ledger.ENV: str(folder)}
    if context["lanes"]["lanes"] > 1:
        threads = str(context["lanes"]["threads_per_lane"])
        env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    return env


def record_ledger(run: NotebookRun, runs_done: list[NotebookRun], context: dict, ledger_root: Path) -> None:
    """Attach the kernel's pass ledger to ``run``: passes, floor, and the notebooks whose artifacts it read."""
    floor = context.get("floor")
    summary = ledger.summarize(ledger.read(ledger_root / run.stem), floor["archs"] if floor else None,
                               context["lanes"]["threads_per_lane"])
    computed_by = {a: r.stem for r in runs_done if r.ledger for a in r.ledger.get("_computed", ())}
    read = set(summary.pop("read"))
    summary["_computed"] = summary.pop("computed")
    summary["reads_from"] = sorted({computed_by[a] for a in read if a in computed_by and computed_by[a] != run.stem})
    summary["efficiency"] = (None if not summary["floor_seconds"] or not run.wall_seconds
                             else round(summary["floor_seconds"] / run.wall_seconds, 3))
    summary["unet_efficiency"] = (None if not summary["unet_floor_seconds"] or not summary["unet_seconds"]
                                  else round(summary["unet_floor_seconds"] / summary["unet_seconds"], 3))
    run.ledger = summary


def _run_in_order(todo, profile, params, out_dir, kernel, relay, stream, context, ledger_root) -> None:
    done: list[NotebookRun] = []
    for i, run in enumerate(todo):
        print(f"[{i + 1}/{len(todo)}] {run.path.name} ({profile})", file=stream, flush=True)
        try:
            run_one(run, params, out_dir, kernel, cell_progress=not relay.active,
                    env=kernel_env(run, context, ledger_root))
        except BaseException:
            record_ledger(run, done, context, ledger_root)
            raise
        _notebook_ended(run, done, len(todo), profile, params, out_dir, relay, stream, context, ledger_root)


def _notebook_ended(run, done, total, profile, params, out_dir, relay, stream, context, ledger_root) -> None:
    """After a notebook ran (in order or in a lane): its ledger, its line on the terminal, the index."""
    record_ledger(run, done, context, ledger_root)
    done.append(run)
    relay.drain()
    print(f"[{len(done)}/{total}] {run.path.name}: {run.status} in {run.wall_seconds:.1f} s",
          file=stream, flush=True)
    write_running(profile, params, context, out_dir)


def write_running(profile, params, context, out_dir) -> None:
    """Rewrite the index of a run under way (after a notebook starts or ends)."""
    write_index(build_record(profile, params, context["runs"], context, "running"), out_dir)


def _run_in_lanes(todo, profile, params, out_dir, kernel, relay, stream, context, ledger_root) -> None:
    done: list[NotebookRun] = []

    def launch(run: NotebookRun) -> tuple:
        prepare(run, params)
        run.status = "running"
        print(f"[{len(done) + 1}+] {run.path.name} ({profile}, lane)", file=stream, flush=True)
        write_running(profile, params, context, out_dir)
        return str(out_dir / f"{run.stem}.ipynb"), run.parameters, kernel, kernel_env(run, context, ledger_root)

    def finished(run: NotebookRun) -> None:
        _notebook_ended(run, done, len(todo), profile, params, out_dir, relay, stream, context, ledger_root)

    run_in_lanes(todo, context["lanes"]["lanes"], context.get("expected") or {}, launch, finished)


def expected_seconds(profile: str) -> dict:
    """Each notebook's wall seconds in the profile's last recorded run (``run.json``), for the lanes' order:
    the output folder's, else the repository's committed one (a check run writes into an empty folder, an
    interrupted run may leave a record with no times).  Read before a run writes its own first index."""
    for folder in (paths.reports_dir(profile), paths.REPO_ROOT / "reports" / profile):
        try:
            record = json.loads((folder / "run.json").read_text())
            times = {nb["stem"]: nb["wall_seconds"] for nb in record["notebooks"] if nb.get("wall_seconds")}
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if times:
            return times
    return {}




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
            raise RunRefused(f"another batch run (pid {f.read().strip() or '?'}) is writing {out_dir}; "
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
    parser.add_argument("--lanes", type=int, default=1,
                        help="notebooks run at once, each kernel with cores/lanes threads (default 1)")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip measuring the shipped UNets' per-row times (the ledger's floor)")
    args = parser.parse_args(argv)
    overrides = {name: parse_value(value) for name, value in args.parameter}
    signal.signal(signal.SIGTERM, _terminate)  # so that `kill` ends the run through its finally blocks
    try:
        record = run_batch(args.profile, notebooks_dir=args.notebooks_dir, only=args.only, kernel=args.kernel,
                           overrides=overrides, lanes=args.lanes, floor=False if args.no_floor else None)
    except RunRefused as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print(f"{record['status']}: {paths.reports_dir(args.profile) / 'README.md'}", file=sys.stderr)
    return 0


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
