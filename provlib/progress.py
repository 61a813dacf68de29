"""Progress bars for the long steps (sampling, features, training), and where they go.

Interactively, a bar goes where tqdm puts it (the notebook's stderr, or the
terminal).  Under the batch driver, a notebook's stderr ends up in the executed
notebook, which is committed: there the driver sets ``PROVLIB_PROGRESS_FILE``
to a file it tails, and every bar is written to that file instead, so the
terminal running ``make reproduce`` shows each step with its rate and ETA while
the notebooks' outputs stay free of progress bars.  Both ends live here: the
kernels' side (:func:`progress_bar`, :func:`relay_file`) and the driver's
(:class:`ProgressRelay`, which copies the file to its terminal).
"""
from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path
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
        fd, self.path = tempfile.mkstemp(prefix="provlib-progress-", suffix=".log")
        os.close(fd)
        self._saved = {k: os.environ.get(k) for k in (ENV, INTERVAL_ENV)}
        os.environ[ENV] = self.path
        os.environ[INTERVAL_ENV] = str(2.0 if self._tty else 30.0)
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
