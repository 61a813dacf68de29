"""Running notebooks: one (:func:`execute_notebook`), or several at once in lanes.

:func:`run_in_lanes` is the batch driver's scheduler for ``--lanes N``
(:mod:`provlib.batch`): it starts a notebook only after the notebooks it needs
(:mod:`provlib.study.order`) ended well, the longest chain of expected time
first (each notebook's wall time in the profile's last ``run.json``).  Each
worker runs papermill; the kernel it starts inherits the lane's environment
(threads, the pass ledger's folder).  The first failure stops new launches;
the notebooks already running finish.  An interrupted driver (Ctrl-C,
SIGTERM) terminates its workers, and each shuts its kernel down.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import nbformat
import papermill

from . import paths
from .study import order as order_module


def execute_notebook(notebook: Path, output: Path, parameters: dict, kernel: str | None,
                     cell_progress: bool = True, env: dict | None = None) -> None:
    """Run one notebook with papermill; the executed copy appears at ``output`` only on success.

    ``env`` is added to the environment the kernel starts with (this process's, restored after).
    A failing run leaves its executed copy (error cell included) at ``<stem>.failed.ipynb``.
    """
    with environment(env or {}):
        _execute(notebook, output, parameters, kernel, cell_progress)


@contextmanager
def environment(values: dict) -> Iterator[None]:
    """Add ``values`` to this process's environment for the block (restored after)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _execute(notebook: Path, output: Path, parameters: dict, kernel: str | None, cell_progress: bool) -> None:
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
    _name_paths_portably(partial, notebook, output)
    os.replace(partial, output)
    failed.unlink(missing_ok=True)


def _name_paths_portably(executed: Path, notebook: Path, output: Path) -> None:
    """papermill records the absolute input and output paths (the latter the partial file's); keep them
    relative to the repository (:func:`provlib.paths.portable`), so that runs on two machines agree."""
    nb = nbformat.read(executed, as_version=nbformat.NO_CONVERT)
    nb.metadata.setdefault("papermill", {}).update(input_path=paths.portable(notebook),
                                                   output_path=paths.portable(output))
    nbformat.write(nb, executed)


def describe_error(err: BaseException) -> str:
    """One line for the index: the notebook's exception if papermill reports one."""
    if hasattr(err, "ename"):
        return f"{err.ename}: {err.evalue}"  # PapermillExecutionError
    return f"{type(err).__name__}: {err}"[:500]


def lane_worker() -> None:
    """A lane's process: SIGTERM ends the notebook through papermill's cleanup (its kernel is shut down)."""
    signal.signal(signal.SIGTERM, _terminate)


def lane_job(notebook: str, output: str, parameters: dict, kernel: str | None, env: dict) -> tuple:
    """One notebook in a lane (a worker process): ``(status, error, wall seconds)``; never raises."""
    start = time.perf_counter()
    try:
        execute_notebook(Path(notebook), Path(output), parameters, kernel, False, env)
        status, error = "ok", None
    except BaseException as err:  # the driver records it and stops the run
        status, error = ("interrupted" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "failed",
                         describe_error(err))
    return status, error, round(time.perf_counter() - start, 2)


def run_in_lanes(todo: list, lanes: int, expected: dict, launch, finished) -> None:
    """Run the notebooks ``todo`` (:class:`provlib.report.index.NotebookRun`) in ``lanes`` worker processes,
    each after the notebooks it needs, the longest chain of ``expected`` seconds first.

    ``launch(run)`` gives the arguments of :func:`lane_job` after ``notebook`` (output, parameters, kernel,
    env) and records that the run started; ``finished(run)`` is called once its status, error and wall
    seconds are set.  Raises :class:`NotebookFailed` (or KeyboardInterrupt) after the lanes drained.
    """
    order = order_module.lane_order([r.stem for r in todo], expected)
    by_stem = {r.stem: r for r in todo}
    needs = {stem: order_module.needs_of(stem, order) for stem in order}
    waiting, running, failure = list(order), {}, None
    ctx = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=lanes, mp_context=ctx, initializer=lane_worker)
    try:
        while waiting or running:
            while failure is None and len(running) < lanes:
                ready = next((s for s in waiting if all(by_stem[n].status == "ok" for n in needs[s])), None)
                if ready is None:
                    break
                waiting.remove(ready)
                run = by_stem[ready]
                running[pool.submit(lane_job, str(run.path), *launch(run))] = run
            if not running:
                break  # a failure stopped the launches, or nothing left can run
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                run = running.pop(future)
                run.status, run.error, run.wall_seconds = future.result()
                finished(run)
                if run.status != "ok" and failure is None:
                    failure = run
    except BaseException as err:   # interrupted: stop the lanes (each worker shuts its kernel down)
        for run in running.values():
            run.status, run.error = "interrupted", describe_error(err)
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    if failure is not None:
        if failure.status == "interrupted":
            raise KeyboardInterrupt(failure.error)
        raise NotebookFailed(f"{failure.stem}: {failure.error}")


class NotebookFailed(RuntimeError):
    """A notebook run in a lane failed (its executed copy is ``<stem>.failed.ipynb``)."""


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)
