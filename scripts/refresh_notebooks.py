"""Re-execute the committed notebooks in place with their default (tiny) parameters.

    python scripts/refresh_notebooks.py            # every notebooks/<digit>*.ipynb
    python scripts/refresh_notebooks.py 02         # those whose name starts with 02

The committed notebooks carry the outputs of the tiny profile; nbval (in `make
test`) re-runs them and compares the cells marked ``# NBVAL_CHECK_OUTPUT``.
Run this after changing a notebook.  It executes as nbval does (one thread,
Agg backend, cache and outputs in a temporary folder), and relays the progress
bars to this terminal, so that none ends up in the committed outputs.
"""
from __future__ import annotations

import os
import sys
import tempfile

import nbformat
from nbclient import NotebookClient

from provlib import paths
from provlib.batch import ProgressRelay, kernel_environment, list_notebooks, select_notebooks


def main(prefixes: list[str]) -> None:
    notebooks = select_notebooks(list_notebooks(paths.NOTEBOOKS_DIR), prefixes or None)
    tmp = tempfile.mkdtemp(prefix="provlib-refresh-")
    os.environ.update({"PROVLIB_CACHE_DIR": os.path.join(tmp, "cache"), "PROVLIB_OUTPUT_DIR": tmp,
                       "OMP_NUM_THREADS": "1"})
    with kernel_environment(), ProgressRelay(sys.stderr):
        for path in notebooks:
            print(f"executing {path.name}", file=sys.stderr, flush=True)
            nb = nbformat.read(path, as_version=4)
            NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                           timeout=1800).execute()
            nbformat.write(nb, path)


if __name__ == "__main__":
    main(sys.argv[1:])
